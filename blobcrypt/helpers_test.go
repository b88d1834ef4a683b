package blobcrypt

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

// testKey returns a fixed key: 0x40, 0x41, … 0x5f.
func testKey() Key {
	var k Key
	for i := range k {
		k[i] = byte(0x40 + i)
	}
	return k
}

// pattern returns n deterministic plaintext bytes: byte i is i mod 251.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// randomBytes returns n bytes from a seeded generator.
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

// seal encrypts pt in one Write, with a random salt.
func seal(t testing.TB, key Key, pt []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(pt); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sealSalt encrypts pt with a fixed salt.
func sealSalt(t testing.TB, key Key, salt, pt []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriterRand(&buf, key, bytes.NewReader(salt))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(pt); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// open decrypts ct and returns what the reader released and the error that
// ended it (nil at a clean io.EOF).
func open(key Key, ct []byte, wrap func(io.Reader) io.Reader) ([]byte, error) {
	var src io.Reader = bytes.NewReader(ct)
	if wrap != nil {
		src = wrap(src)
	}
	r, err := NewReader(src, key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// chunkAt returns chunk i of ct (the last may be short).
func chunkAt(ct []byte, i int) []byte {
	start := headerSize + i*encChunk
	return ct[start:min(start+encChunk, len(ct))]
}

// join concatenates into a new slice.
func join(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
