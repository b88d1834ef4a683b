package blobcrypt

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// reader decrypts from src. It holds one chunk: in has room for a full
// chunk's ciphertext and the byte after it, out for its plaintext. The two
// are apart because a failed Open leaves its destination undefined, and the
// ciphertext is still needed to tell a truncation or an extension from an
// altered chunk.
type reader struct {
	src    io.Reader
	aead   cipher.AEAD
	header []byte
	in     []byte // ciphertext buffer, len encChunk+1
	ahead  int    // bytes at the start of in read ahead by the last chunk (0 or 1)
	out    []byte // plaintext buffer, cap ChunkSize
	plain  []byte // authenticated plaintext not yet returned, a suffix of out
	nonce  [chacha20poly1305.NonceSize]byte
	n      uint64 // index of the next chunk
	done   bool   // the final chunk authenticated
	err    error  // sticky
}

// NewReader reads the header of a blob ciphertext from src and returns a
// Reader of its plaintext. Read returns plaintext only of chunks that
// authenticated; it returns io.EOF only after the final chunk authenticated
// and the input ended there. Any other error (ErrTruncated, ErrAuth,
// ErrFormat, ErrTrailingData, or an error of src) is returned as soon as it
// is found, and every later Read returns it again. The plaintext released
// before an error is the true start of the blob, but the blob is incomplete
// or damaged: callers that need all or nothing must discard it. It holds at
// most one chunk in memory.
func NewReader(src io.Reader, key Key) (io.Reader, error) {
	header, err := readHeader(src)
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(&key, header)
	if err != nil {
		return nil, err
	}
	return &reader{src: src, aead: aead, header: header, in: make([]byte, encChunk+1), out: make([]byte, 0, ChunkSize)}, nil
}

// Read implements io.Reader.
func (r *reader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.done {
			return 0, io.EOF
		}
		if r.err = r.next(); r.err != nil {
			r.plain = nil
			return 0, r.err
		}
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

// next reads chunk r.n and the byte after it, and opens it. A chunk is the
// final one exactly when the input ends within encChunk+1 bytes of its
// start; otherwise it is full-size and more data follows.
func (r *reader) next() error {
	n, err := io.ReadFull(r.src, r.in[r.ahead:])
	n += r.ahead
	r.ahead = 0
	last := false
	switch {
	case err == nil:
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		last = true
	default:
		return fmt.Errorf("read blob chunk %d: %w", r.n, err)
	}
	if r.n == maxChunks {
		return errorf(ErrFormat, "more chunks than the counter allows")
	}
	chunk := r.in[:n]
	if !last {
		chunk = r.in[:encChunk]
	}
	// Chunk r.n must exist and hold at least a tag: the header, or chunk
	// r.n-1 that authenticated as not final, promised it. (After chunk
	// r.n-1, the byte read ahead is in chunk, so only chunk 0 can be empty.)
	if len(chunk) == 0 {
		return errorf(ErrTruncated, "it ends after its header, with no chunk")
	}
	if len(chunk) < tagSize {
		return errorf(ErrTruncated, "it ends %d bytes into chunk %d, inside its tag", len(chunk), r.n)
	}
	flag := byte(flagMore)
	if last {
		flag = flagLast
	}
	pt, err := r.open(chunk, flag)
	if err != nil {
		return r.diagnose(chunk, last)
	}
	if last && len(pt) == 0 && r.n > 0 {
		return errorf(ErrFormat, "chunk %d is an empty final chunk after a full one, which no v1 writer makes", r.n)
	}
	r.plain = pt
	r.n++
	if last {
		r.done = true
	} else {
		r.in[0] = r.in[encChunk]
		r.ahead = 1
	}
	return nil
}

// open opens chunk r.n with flag into r.out.
func (r *reader) open(chunk []byte, flag byte) ([]byte, error) {
	setNonce(&r.nonce, r.n, flag)
	return r.aead.Open(r.out[:0], r.nonce[:], chunk, r.header)
}

// diagnose names the failure of chunk r.n. Only a full-size chunk can be
// either final or not; if it authenticates with the other flag, the input
// was cut right after it (flag 0) or extended after it (flag 1).
func (r *reader) diagnose(chunk []byte, last bool) error {
	if len(chunk) == encChunk {
		if last {
			if _, err := r.open(chunk, flagMore); err == nil {
				return errorf(ErrTruncated, "it ends after chunk %d, which is not the final one", r.n)
			}
		} else if _, err := r.open(chunk, flagLast); err == nil {
			return errorf(ErrTrailingData, "chunk %d is the final one, and more data follows it", r.n)
		}
	}
	return errorf(ErrAuth, "chunk %d", r.n)
}
