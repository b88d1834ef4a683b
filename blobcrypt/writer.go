package blobcrypt

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// writer encrypts to dst. It holds one chunk: buf collects up to ChunkSize
// bytes of plaintext and is sealed in place (its capacity leaves room for
// the tag).
type writer struct {
	dst    io.Writer
	aead   cipher.AEAD
	header []byte
	buf    []byte
	nonce  [chacha20poly1305.NonceSize]byte
	n      uint64 // index of the chunk in buf
	err    error  // sticky
	closed bool
}

// NewWriter returns a WriteCloser that encrypts to dst with key: it writes
// the header at once and a chunk whenever one is complete and more data
// follows it. Close writes the final chunk and must be called; it does not
// close dst. It never holds more than one chunk in memory.
func NewWriter(dst io.Writer, key Key) (io.WriteCloser, error) {
	return NewWriterRand(dst, key, rand.Reader)
}

// NewWriterRand is NewWriter with an explicit source of randomness for the
// header's salt. Only test vectors need it; a fixed salt with a reused key
// repeats the payload key.
func NewWriterRand(dst io.Writer, key Key, rand io.Reader) (io.WriteCloser, error) {
	header, err := newHeader(rand)
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(&key, header)
	if err != nil {
		return nil, err
	}
	if _, err := dst.Write(header); err != nil {
		return nil, fmt.Errorf("write blob header: %w", err)
	}
	return &writer{dst: dst, aead: aead, header: header, buf: make([]byte, 0, encChunk)}, nil
}

// newAEAD returns the payload cipher of a blob with this header.
func newAEAD(key *Key, header []byte) (cipher.AEAD, error) {
	pk, err := payloadKey(key, header[len(magic):])
	if err != nil {
		return nil, fmt.Errorf("derive blob payload key: %w", err)
	}
	return chacha20poly1305.New(pk)
}

// Write encrypts p. A full chunk is sealed only when more data follows it,
// since until then it may be the final one.
func (w *writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, errClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	total := 0
	for len(p) > 0 {
		if len(w.buf) == ChunkSize {
			if w.err = w.flush(flagMore); w.err != nil {
				return total, w.err
			}
		}
		n := copy(w.buf[len(w.buf):ChunkSize], p)
		w.buf = w.buf[:len(w.buf)+n]
		p = p[n:]
		total += n
	}
	return total, nil
}

// flush seals the chunk in buf in place and writes it.
func (w *writer) flush(flag byte) error {
	if w.n == maxChunks {
		return errors.New("blobcrypt: blob has too many chunks")
	}
	setNonce(&w.nonce, w.n, flag)
	ct := w.aead.Seal(w.buf[:0], w.nonce[:], w.buf, w.header)
	w.n++
	w.buf = w.buf[:0]
	if _, err := w.dst.Write(ct); err != nil {
		return fmt.Errorf("write blob chunk: %w", err)
	}
	return nil
}

// Close writes the final chunk. Calling it again returns the first result.
func (w *writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err == nil {
		w.err = w.flush(flagLast)
	}
	return w.err
}
