package blobcrypt

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
)

// Key is a blob's key: 32 random bytes, fresh for every blob. It travels
// only inside an end-to-end encrypted room message. It never prints: String,
// GoString, every fmt verb and slog show "blobkey(redacted)".
type Key [32]byte

// kdfInfo is the HKDF info of the payload key.
const kdfInfo = "unibus/v1/blob"

const redacted = "blobkey(redacted)"

// NewKey returns a random key from crypto/rand.
func NewKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("new blob key: %w", err)
	}
	return k, nil
}

// String returns "blobkey(redacted)", never the key.
func (Key) String() string { return redacted }

// GoString returns "blobkey(redacted)", never the key.
func (Key) GoString() string { return redacted }

// Format prints "blobkey(redacted)" for every verb, so that %x or %d do not
// print the key either.
func (Key) Format(f fmt.State, _ rune) { fmt.Fprint(f, redacted) }

// LogValue keeps the key out of structured logs.
func (Key) LogValue() slog.Value { return slog.StringValue(redacted) }

// Equal reports whether k and o are the same key, in constant time.
func (k Key) Equal(o Key) bool { return subtle.ConstantTimeCompare(k[:], o[:]) == 1 }

// payloadKey derives the ChaCha20-Poly1305 key of a blob from its key and
// the salt of its header.
func payloadKey(k *Key, salt []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, k[:], salt, kdfInfo, 32)
}
