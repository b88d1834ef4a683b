// Package blobstore stores encrypted blobs for rooms. A blob is client-side
// ciphertext addressed by the lowercase hex SHA-256 of its bytes; the
// server never sees its key. Implementations (files on disk here, the
// JetStream object store in a cluster) stream in both directions and make a
// blob visible only once all its bytes have arrived and hash to its id, so
// an interrupted or corrupted upload leaves nothing behind.
package blobstore

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"time"

	"github.com/unibus/unibus/internal/store"
)

// Errors callers branch on.
var (
	ErrNotFound       = errors.New("blob not found")
	ErrDigestMismatch = errors.New("blob bytes do not hash to its id")
	ErrTooLarge       = errors.New("blob is larger than the size limit")
	ErrBadID          = errors.New("blob id must be 64 lowercase hex characters (sha-256 of the ciphertext)")
	ErrBadRoomID      = errors.New("room id must be 32 lowercase hex characters")
	// ErrUnavailable is store.ErrUnavailable: a blob store that cannot
	// answer (not open yet, no quorum) is unavailable in the same sense as
	// the control-plane store, and callers deny on either alike.
	ErrUnavailable = store.ErrUnavailable
)

// Info describes a stored blob.
type Info struct {
	Room    string
	ID      string
	Size    int64
	Created time.Time
}

// Store holds blobs.
type Store interface {
	// Put reads r to its end and stores it as blob id of room, if the
	// bytes hash to id and number at most max. Otherwise — and on any read
	// error, such as a connection cut halfway — nothing is stored.
	// Putting a blob that exists already succeeds without rewriting it.
	Put(ctx context.Context, room, id string, r io.Reader, max int64) (Info, error)
	// Open returns the blob's bytes; the caller closes the reader.
	Open(ctx context.Context, room, id string) (io.ReadCloser, Info, error)
	// Stat returns the blob's info.
	Stat(ctx context.Context, room, id string) (Info, error)
	// Close releases the store and stops what it runs in the background.
	Close() error
}

// ValidID reports whether id is 64 lowercase hex characters.
func ValidID(id string) bool { return lowerHex(id, 64) }

// ValidRoomID reports whether room is a room id: 32 lowercase hex
// characters. Both stores check it before a room id names a file or an
// object.
func ValidRoomID(room string) bool { return lowerHex(room, 32) }

// lowerHex reports whether s is n lowercase hex characters.
func lowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	_, err := hex.DecodeString(s)
	return err == nil
}
