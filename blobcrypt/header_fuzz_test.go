package blobcrypt

import (
	"bytes"
	"errors"
	"math"
	"testing"
	"testing/iotest"
)

// FuzzHeader reads the header of arbitrary input, whole and one byte at a
// time. It must give the same verdict both ways: the 31 header bytes when
// the input starts with the v1 magic and is long enough; ErrTruncated when
// it is a shorter start of a v1 header; ErrFormat otherwise. The error
// message stays short whatever the input (it quotes at most a line of it).
func FuzzHeader(f *testing.F) {
	f.Add([]byte(magic + "0123456789abcdef"))
	f.Add([]byte(magic + "0123456789abcdefchunk"))
	f.Add([]byte(magic[:7]))
	f.Add([]byte("unibus/blob/v2\n0123456789abcdef"))
	f.Add([]byte("unibus/blob/" + string(bytes.Repeat([]byte("v"), 100))))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := readHeader(bytes.NewReader(in))
		h1, err1 := readHeader(iotest.OneByteReader(bytes.NewReader(in)))
		if !bytes.Equal(h, h1) || errors.Is(err, ErrFormat) != errors.Is(err1, ErrFormat) || errors.Is(err, ErrTruncated) != errors.Is(err1, ErrTruncated) {
			t.Fatalf("whole: %x %v; byte by byte: %x %v", h, err, h1, err1)
		}
		m := min(len(in), len(magic))
		isV1 := bytes.Equal(in[:m], []byte(magic[:m]))
		switch {
		case isV1 && len(in) >= headerSize:
			if err != nil || !bytes.Equal(h, in[:headerSize]) {
				t.Fatalf("a v1 header: got %x, %v", h, err)
			}
		case isV1:
			if !errors.Is(err, ErrTruncated) || h != nil {
				t.Fatalf("a cut v1 header: got %x, %v", h, err)
			}
		default:
			if !errors.Is(err, ErrFormat) || h != nil {
				t.Fatalf("not a v1 header: got %x, %v", h, err)
			}
		}
		if err != nil && len(err.Error()) > 200 {
			t.Fatalf("a %d-byte error message: %q", len(err.Error()), err)
		}
	})
}

// FuzzPlaintextSize checks the size arithmetic a server applies to a
// declared blob size before reading a byte: PlaintextSize accepts exactly
// the sizes CiphertextSize produces, and the two are inverse; refusals are
// ErrFormat; nothing overflows.
func FuzzPlaintextSize(f *testing.F) {
	for _, n := range []int64{0, 1, 31, 46, 47, 48, ChunkSize, ChunkSize + 31 + 16, ChunkSize + 31 + 32, encChunk + 31,
		encChunk + 31 + 16, 2*encChunk + 31 + 17, -1, math.MaxInt64, math.MinInt64, math.MaxInt64 - 1<<20} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, n int64) {
		p, err := PlaintextSize(n)
		if err != nil {
			if !errors.Is(err, ErrFormat) || p != 0 {
				t.Fatalf("PlaintextSize(%d): %d, %v", n, p, err)
			}
		} else {
			if p < 0 || p > n {
				t.Fatalf("PlaintextSize(%d) = %d", n, p)
			}
			if c := CiphertextSize(p); c != n {
				t.Fatalf("PlaintextSize(%d) = %d, but CiphertextSize(%d) = %d", n, p, p, c)
			}
		}
		c := CiphertextSize(n)
		if c == -1 {
			if n >= 0 && n <= math.MaxInt64-headerSize-tagSize*(n/ChunkSize+1) {
				t.Fatalf("CiphertextSize(%d) refused a size that fits", n)
			}
			return
		}
		if n < 0 || c < n+headerSize+tagSize {
			t.Fatalf("CiphertextSize(%d) = %d", n, c)
		}
		if back, err := PlaintextSize(c); err != nil || back != n {
			t.Fatalf("CiphertextSize(%d) = %d, but PlaintextSize(%d) = %d, %v", n, c, c, back, err)
		}
	})
}
