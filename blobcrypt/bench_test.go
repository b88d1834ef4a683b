package blobcrypt

import (
	"bytes"
	"io"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

const benchSize = 16 << 20

// BenchmarkEncrypt16MiB encrypts 16 MiB, written 1 MiB at a time.
func BenchmarkEncrypt16MiB(b *testing.B) {
	key := testKey()
	block := make([]byte, 1<<20)
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		w, err := NewWriter(io.Discard, key)
		if err != nil {
			b.Fatal(err)
		}
		for range benchSize / len(block) {
			w.Write(block)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecrypt16MiB decrypts 16 MiB, read 1 MiB at a time.
func BenchmarkDecrypt16MiB(b *testing.B) {
	key := testKey()
	ct := seal(b, key, make([]byte, benchSize))
	buf := make([]byte, 1<<20)
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(ct), key)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			m, err := r.Read(buf)
			n += m
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if n != benchSize {
			b.Fatal("short")
		}
	}
}

// BenchmarkRawAEAD16MiB seals 16 MiB in 64 KiB chunks with
// ChaCha20-Poly1305 alone: the engine, for the ratio.
func BenchmarkRawAEAD16MiB(b *testing.B) {
	aead, _ := chacha20poly1305.New(make([]byte, 32))
	buf := make([]byte, ChunkSize, encChunk)
	nonce := make([]byte, chacha20poly1305.NonceSize)
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		for range benchSize / ChunkSize {
			aead.Seal(buf[:0], nonce, buf[:ChunkSize], nil)
		}
	}
}
