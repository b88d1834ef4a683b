// Package blobstream encrypts blobs (files) on the client, streaming, in
// 64 KiB chunks: the STREAM construction of Hoang, Reyhanitabar, Rogaway and
// Vizár, as age's payload uses it. Each chunk is sealed with
// ChaCha20-Poly1305 under a payload key; its nonce is an 11-byte big-endian
// chunk counter followed by a last-chunk flag, so truncation, extension,
// reordering and chunk swapping are all detected. Neither direction holds
// more than one chunk in memory.
//
// Format (version 1; docs/FORMATS.md):
//
//	header  = "unibus/blob/v1\n" (15 bytes) || salt (16 random bytes)
//	key     = HKDF-SHA256(ikm = blob key, salt = salt, info = "unibus/v1/blob", 32)
//	chunk i = ChaCha20-Poly1305(key, nonce = u88(i) || flag, plaintext_i, aad = header)
//	flag    = 0x01 on the final chunk, else 0x00
//
// Every chunk but the last carries exactly 64 KiB of plaintext; the last
// carries 0..64 KiB (an empty blob is one empty final chunk).
package blobstream

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Format constants.
const (
	ChunkSize = 64 << 10
	Magic     = "unibus/blob/v1\n"
	SaltSize  = 16
	HeaderLen = len(Magic) + SaltSize
	tagSize   = 16
	kdfInfo   = "unibus/v1/blob"
)

// Errors a caller branches on.
var (
	ErrTruncated    = errors.New("blob ciphertext is truncated: the final chunk is missing")
	ErrAuth         = errors.New("blob ciphertext failed authentication: altered, reordered, or wrong key")
	ErrFormat       = errors.New("not a unibus v1 blob ciphertext")
	ErrTrailingData = errors.New("blob ciphertext has data after its final chunk")
)

// Key is a blob's key; it travels only inside an encrypted room message.
type Key [32]byte

// NewKey returns a random key.
func NewKey() (Key, error) {
	var k Key
	_, err := rand.Read(k[:])
	return k, err
}

// String never prints the key.
func (Key) String() string { return "blobkey(redacted)" }

// GoString never prints the key.
func (k Key) GoString() string { return k.String() }

func payloadKey(k Key, salt []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, k[:], salt, kdfInfo, 32)
}

// nonce writes the nonce of chunk i into n.
func nonce(n *[12]byte, i uint64, last bool) {
	for j := 0; j < 8; j++ {
		n[10-j] = byte(i >> (8 * j))
	}
	n[0], n[1], n[2] = 0, 0, 0
	n[11] = 0
	if last {
		n[11] = 1
	}
}

// CiphertextSize is the exact size of the encryption of n plaintext bytes.
func CiphertextSize(n int64) int64 {
	chunks := n / ChunkSize
	if n%ChunkSize != 0 || n == 0 {
		chunks++
	}
	return int64(HeaderLen) + n + chunks*tagSize
}

// PlaintextSize inverts CiphertextSize.
func PlaintextSize(c int64) (int64, error) {
	body := c - int64(HeaderLen)
	if body < tagSize {
		return 0, ErrFormat
	}
	full := body / (ChunkSize + tagSize)
	rest := body % (ChunkSize + tagSize)
	if rest == 0 {
		return full * ChunkSize, nil
	}
	if rest < tagSize {
		return 0, ErrFormat
	}
	return full*ChunkSize + rest - tagSize, nil
}

func errorf(base error, format string, args ...any) error {
	return fmt.Errorf("%w (%s)", base, fmt.Sprintf(format, args...))
}
