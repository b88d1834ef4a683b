package blobstream

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// Writer encrypts to an underlying writer.
type Writer struct {
	dst    io.Writer
	aead   cipher.AEAD
	header []byte
	buf    []byte // plaintext of the pending chunk (cap ChunkSize)
	out    []byte
	n      uint64
	err    error
	closed bool
}

// NewWriter returns a Writer that encrypts to dst with key. Close writes the
// final chunk and must be called.
func NewWriter(dst io.Writer, key Key) (*Writer, error) { return NewWriterRand(dst, key, rand.Reader) }

// NewWriterRand is NewWriter with an explicit source for the salt (test vectors).
func NewWriterRand(dst io.Writer, key Key, r io.Reader) (*Writer, error) {
	header := make([]byte, HeaderLen)
	copy(header, Magic)
	if _, err := io.ReadFull(r, header[len(Magic):]); err != nil {
		return nil, err
	}
	pk, err := payloadKey(key, header[len(Magic):])
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.New(pk)
	if err != nil {
		return nil, err
	}
	if _, err := dst.Write(header); err != nil {
		return nil, err
	}
	return &Writer{dst: dst, aead: aead, header: header, buf: make([]byte, 0, ChunkSize), out: make([]byte, 0, ChunkSize+tagSize)}, nil
}

// Write encrypts p. A full chunk is written only once more data follows, so
// that the final chunk can carry the last-chunk flag.
func (w *Writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, errors.New("blobstream: write after close")
	}
	total := 0
	for len(p) > 0 {
		if w.err != nil {
			return total, w.err
		}
		if len(w.buf) == ChunkSize {
			w.err = w.flush(false)
			continue
		}
		n := copy(w.buf[len(w.buf):ChunkSize], p)
		w.buf = w.buf[:len(w.buf)+n]
		p = p[n:]
		total += n
	}
	return total, w.err
}

func (w *Writer) flush(last bool) error {
	var nc [12]byte
	nonce(&nc, w.n, last)
	w.out = w.aead.Seal(w.out[:0], nc[:], w.buf, w.header)
	w.n++
	w.buf = w.buf[:0]
	_, err := w.dst.Write(w.out)
	return err
}

// Close writes the final chunk. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err != nil {
		return w.err
	}
	w.err = w.flush(true)
	return w.err
}
