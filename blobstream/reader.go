package blobstream

import (
	"bytes"
	"crypto/cipher"
	"errors"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// Reader decrypts from an underlying reader. It returns plaintext only of
// chunks that authenticated; its first error is sticky.
type Reader struct {
	src    io.Reader
	aead   cipher.AEAD
	header []byte
	in     []byte // ciphertext chunk plus one read-ahead byte
	plain  []byte // decrypted, not yet returned
	pbuf   []byte // backing array of plain
	n      uint64
	done   bool
	err    error
}

// NewReader reads the header and returns a Reader that decrypts src.
func NewReader(src io.Reader, key Key) (*Reader, error) {
	header := make([]byte, HeaderLen)
	if _, err := io.ReadFull(src, header); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errorf(ErrFormat, "shorter than its header")
		}
		return nil, err
	}
	if !bytes.Equal(header[:len(Magic)], []byte(Magic)) {
		return nil, errorf(ErrFormat, "bad magic")
	}
	pk, err := payloadKey(key, header[len(Magic):])
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.New(pk)
	if err != nil {
		return nil, err
	}
	return &Reader{src: src, aead: aead, header: header, in: make([]byte, 0, ChunkSize+tagSize+1), pbuf: make([]byte, 0, ChunkSize)}, nil
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.done {
			return 0, io.EOF
		}
		r.err = r.next()
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

// next reads and opens one chunk. A full-size chunk is the last one exactly
// when no byte follows it, so one byte is read ahead.
func (r *Reader) next() error {
	// r.in may hold the read-ahead byte of the previous call.
	want := ChunkSize + tagSize + 1
	n, err := io.ReadFull(r.src, r.in[len(r.in):want])
	r.in = r.in[:len(r.in)+n]
	last := false
	switch {
	case err == nil:
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		last = true
	default:
		return err
	}
	chunk := r.in
	var ahead []byte
	if !last {
		chunk, ahead = r.in[:want-1], r.in[want-1:]
	}
	if len(chunk) < tagSize {
		if r.n == 0 && len(chunk) == 0 {
			return errorf(ErrTruncated, "no chunk at all")
		}
		return errorf(ErrTruncated, "chunk %d is %d bytes", r.n, len(chunk))
	}
	var nc [12]byte
	nonce(&nc, r.n, last)
	pt, err := r.aead.Open(r.pbuf[:0], nc[:], chunk, r.header)
	if err != nil {
		if !last {
			// A chunk that is not the last by length may still be a final
			// chunk followed by appended data.
			nonce(&nc, r.n, true)
			if _, err2 := r.aead.Open(nil, nc[:], chunk, r.header); err2 == nil {
				return errorf(ErrTrailingData, "after chunk %d", r.n)
			}
		} else if len(chunk) == ChunkSize+tagSize {
			nonce(&nc, r.n, false)
			if _, err2 := r.aead.Open(nil, nc[:], chunk, r.header); err2 == nil {
				return errorf(ErrTruncated, "the stream ends after full chunk %d", r.n)
			}
		}
		return errorf(ErrAuth, "chunk %d", r.n)
	}
	if last && len(pt) == 0 && r.n > 0 {
		// An empty final chunk is only valid for an empty blob; a writer
		// never emits one after a full chunk.
		return errorf(ErrAuth, "empty final chunk %d", r.n)
	}
	r.plain = pt
	r.n++
	if last {
		r.done = true
		r.in = r.in[:0]
	} else {
		r.in = append(r.in[:0], ahead...)
	}
	return nil
}
