package blobcrypt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Header layout: magic || salt.
const (
	magic      = "unibus/blob/v1\n"
	magicStem  = "unibus/blob/" // what every version's magic starts with
	saltSize   = 16
	headerSize = 31 // len(magic) + saltSize, untyped so that it mixes with int64 sizes
)

// newHeader returns a header with a salt read from rand.
func newHeader(rand io.Reader) ([]byte, error) {
	h := make([]byte, headerSize)
	copy(h, magic)
	if _, err := io.ReadFull(rand, h[len(magic):]); err != nil {
		return nil, fmt.Errorf("blob header salt: %w", err)
	}
	return h, nil
}

// readHeader reads and checks the header at the start of src.
func readHeader(src io.Reader) ([]byte, error) {
	h := make([]byte, headerSize)
	n, err := io.ReadFull(src, h)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("read blob header: %w", err)
	}
	got := h[:n]
	m := min(len(got), len(magic))
	if !bytes.Equal(got[:m], []byte(magic[:m])) {
		if len(got) >= len(magicStem) && bytes.Equal(got[:len(magicStem)], []byte(magicStem)) {
			return nil, errorf(ErrFormat, "unsupported version %q; this reader knows %q", firstLine(got), magic[:len(magic)-1])
		}
		return nil, errorf(ErrFormat, "it does not start with %q", magic[:len(magic)-1])
	}
	if n < headerSize {
		return nil, errorf(ErrTruncated, "it ends inside its header, after %d of %d bytes", n, headerSize)
	}
	return h, nil
}

// firstLine returns b up to its first newline, at most 32 bytes, for an
// error message.
func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return b[:min(len(b), 32)]
}
