package blobcrypt

import (
	"errors"
	"fmt"
)

// Errors a Reader returns; callers branch on them with errors.Is. The
// returned errors wrap them with where the problem was found.
var (
	// ErrTruncated means the ciphertext ends before its final chunk: an
	// upload or download was cut short. Fetch the blob again.
	ErrTruncated = errors.New("blob ciphertext is truncated: final chunk missing")
	// ErrAuth means a chunk failed authentication: the ciphertext was
	// altered, reordered, cut inside a chunk or extended after a short
	// final chunk, or the key is not this blob's. Check that the key comes
	// from this blob's announcement; the bytes cannot be repaired.
	ErrAuth = errors.New("blob ciphertext failed authentication: altered, or not this key's blob")
	// ErrFormat means the input is not a unibus v1 blob ciphertext.
	ErrFormat = errors.New("not a unibus v1 blob ciphertext")
	// ErrTrailingData means data follows a full-size final chunk: the
	// ciphertext was extended.
	ErrTrailingData = errors.New("blob ciphertext has data after its final chunk")
)

// errClosed is returned by Write after Close.
var errClosed = errors.New("blobcrypt: write after Close")

// errorf wraps base with where it was found: "<base> (<details>)".
func errorf(base error, format string, args ...any) error {
	return fmt.Errorf("%w (%s)", base, fmt.Sprintf(format, args...))
}
