package blobcrypt

import (
	"errors"
	"math"
	"testing"
)

func TestSizes(t *testing.T) {
	for _, tc := range []struct{ p, c int64 }{
		{0, 47},
		{1, 48},
		{ChunkSize - 1, 31 + ChunkSize - 1 + 16},
		{ChunkSize, 31 + ChunkSize + 16},
		{ChunkSize + 1, 31 + ChunkSize + 1 + 32},
		{3 * ChunkSize, 31 + 3*ChunkSize + 48},
		{1 << 30, 31 + 1<<30 + 16*(1<<14)},
	} {
		if got := CiphertextSize(tc.p); got != tc.c {
			t.Errorf("CiphertextSize(%d) = %d, want %d", tc.p, got, tc.c)
		}
		if got, err := PlaintextSize(tc.c); err != nil || got != tc.p {
			t.Errorf("PlaintextSize(%d) = %d, %v, want %d", tc.c, got, err, tc.p)
		}
	}
}

// TestSizesInverse checks every ciphertext size up to four chunks: it is
// either the size of exactly one plaintext size, or rejected.
func TestSizesInverse(t *testing.T) {
	valid := 0
	for c := int64(-1); c <= headerSize+4*encChunk+40; c++ {
		p, err := PlaintextSize(c)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("PlaintextSize(%d): %v", c, err)
			}
			continue
		}
		valid++
		if CiphertextSize(p) != c {
			t.Fatalf("PlaintextSize(%d) = %d, but CiphertextSize(%d) = %d", c, p, p, CiphertextSize(p))
		}
	}
	// Every plaintext size from 0 to 4 chunks and 40-16 bytes maps to one.
	if want := 4*ChunkSize + 40 - tagSize + 1; valid != want {
		t.Fatalf("%d valid ciphertext sizes, want %d", valid, want)
	}
	for _, c := range []int64{headerSize + tagSize - 1, headerSize + encChunk + 1, headerSize + encChunk + tagSize, headerSize + encChunk + tagSize - 1} {
		if _, err := PlaintextSize(c); !errors.Is(err, ErrFormat) {
			t.Errorf("PlaintextSize(%d) accepted", c)
		}
	}
}

func TestSizeLimits(t *testing.T) {
	if CiphertextSize(-1) != -1 || CiphertextSize(math.MinInt64) != -1 || CiphertextSize(math.MaxInt64) != -1 {
		t.Fatal("CiphertextSize of an impossible size is not -1")
	}
	// The largest plaintext whose ciphertext size fits an int64.
	lo, hi := int64(0), int64(math.MaxInt64)
	for lo < hi {
		mid := lo + (hi-lo)/2 + (hi-lo)%2 // upper middle, without overflow
		if CiphertextSize(mid) >= 0 {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	c := CiphertextSize(lo)
	if c < 0 || CiphertextSize(lo+1) != -1 {
		t.Fatalf("CiphertextSize is not monotone at the limit %d", lo)
	}
	if p, err := PlaintextSize(c); err != nil || p != lo {
		t.Fatalf("PlaintextSize(%d) = %d, %v, want %d", c, p, err, lo)
	}
	if p, err := PlaintextSize(math.MaxInt64); err == nil && CiphertextSize(p) != math.MaxInt64 {
		t.Fatalf("PlaintextSize(MaxInt64) = %d, which does not map back", p)
	}
}
