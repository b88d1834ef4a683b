package e2e

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// RoomIDSize is the size of a room id: 128 random bits.
const RoomIDSize = 16

// RoomID is a room's id. Its text form, 32 lowercase hex characters, is a
// valid NATS subject token and stream-name suffix.
type RoomID [RoomIDSize]byte

// NewRoomID returns a random room id.
func NewRoomID() (RoomID, error) {
	var r RoomID
	if _, err := rand.Read(r[:]); err != nil {
		return r, fmt.Errorf("generate room id: %w", err)
	}
	return r, nil
}

// ParseRoomID parses the 32-lowercase-hex form.
func ParseRoomID(s string) (RoomID, error) {
	var r RoomID
	if len(s) != 2*RoomIDSize {
		return r, ErrBadRoomID
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return r, ErrBadRoomID
		}
	}
	if _, err := hex.Decode(r[:], []byte(s)); err != nil {
		return r, ErrBadRoomID
	}
	return r, nil
}

// String is the 32-lowercase-hex form.
func (r RoomID) String() string { return hex.EncodeToString(r[:]) }

// RoomKeySize is the size of a room key.
const RoomKeySize = chacha20poly1305.KeySize

// RoomKey is the symmetric key of one epoch of a room. It never prints.
type RoomKey struct {
	k    [RoomKeySize]byte
	aead cipher.AEAD
}

// NewRoomKey returns a random room key read from r (crypto/rand if nil).
func NewRoomKey(r io.Reader) (*RoomKey, error) {
	if r == nil {
		r = rand.Reader
	}
	var k [RoomKeySize]byte
	if _, err := io.ReadFull(r, k[:]); err != nil {
		return nil, fmt.Errorf("generate room key: %w", err)
	}
	return RoomKeyFromBytes(k[:])
}

// RoomKeyFromBytes wraps 32 key bytes.
func RoomKeyFromBytes(b []byte) (*RoomKey, error) {
	if len(b) != RoomKeySize {
		return nil, fmt.Errorf("room key must be %d bytes, got %d", RoomKeySize, len(b))
	}
	rk := &RoomKey{}
	copy(rk.k[:], b)
	a, err := chacha20poly1305.NewX(rk.k[:])
	if err != nil {
		return nil, err
	}
	rk.aead = a
	return rk, nil
}

// Bytes returns a copy of the key bytes. They are secret.
func (k *RoomKey) Bytes() []byte { return append([]byte(nil), k.k[:]...) }

// String never prints the key.
func (k *RoomKey) String() string { return "roomkey(redacted)" }

// GoString never prints the key.
func (k *RoomKey) GoString() string { return k.String() }
