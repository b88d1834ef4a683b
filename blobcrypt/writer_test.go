package blobcrypt

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

var roundTripSizes = []int{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 3 * ChunkSize, 3*ChunkSize + 17}

// writePattern cuts a plaintext into the sizes of successive Write calls.
type writePattern struct {
	name string
	next func(r *rand.Rand, left int) int
}

var writePatterns = []writePattern{
	{"one write", func(_ *rand.Rand, left int) int { return left }},
	{"small writes", func(r *rand.Rand, left int) int { return 1 + r.IntN(min(left, 1000)) }},
	{"random writes", func(r *rand.Rand, left int) int { return 1 + r.IntN(min(left, 3*ChunkSize)) }},
	{"chunk-size writes", func(_ *rand.Rand, left int) int { return min(left, ChunkSize) }},
}

var srcWrappers = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"plain", nil},
	{"OneByteReader", iotest.OneByteReader},
	{"HalfReader", iotest.HalfReader},
	{"DataErrReader", iotest.DataErrReader},
}

func TestRoundTrip(t *testing.T) {
	key := testKey()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range roundTripSizes {
		pt := randomBytes(uint64(size), size)
		for _, wp := range writePatterns {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, key)
			if err != nil {
				t.Fatal(err)
			}
			for p := pt; len(p) > 0; {
				n := wp.next(rng, len(p))
				if m, err := w.Write(p[:n]); err != nil || m != n {
					t.Fatalf("size %d, %s: Write = %d, %v", size, wp.name, m, err)
				}
				p = p[n:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			ct := buf.Bytes()
			if got := CiphertextSize(int64(size)); got != int64(len(ct)) {
				t.Fatalf("size %d: ciphertext is %d bytes, CiphertextSize says %d", size, len(ct), got)
			}
			if got, err := PlaintextSize(int64(len(ct))); err != nil || got != int64(size) {
				t.Fatalf("size %d: PlaintextSize(%d) = %d, %v", size, len(ct), got, err)
			}
			for _, sw := range srcWrappers {
				got, err := open(key, ct, sw.wrap)
				if err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("size %d, %s, src %s: %d bytes, %v", size, wp.name, sw.name, len(got), err)
				}
			}
		}
	}
}

// TestReadSizes reads the plaintext in reads of every kind of size, and
// with iotest.TestReader, which checks the io.Reader contract.
func TestReadSizes(t *testing.T) {
	key := testKey()
	for _, size := range roundTripSizes {
		pt := randomBytes(uint64(size), size)
		ct := seal(t, key, pt)
		r, err := NewReader(bytes.NewReader(ct), key)
		if err != nil {
			t.Fatal(err)
		}
		if err := iotest.TestReader(r, pt); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		for name, wrap := range map[string]func(io.Reader) io.Reader{"OneByteReader": iotest.OneByteReader, "HalfReader": iotest.HalfReader, "DataErrReader": iotest.DataErrReader} {
			r, err := NewReader(bytes.NewReader(ct), key)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(wrap(r))
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("size %d, plaintext read through %s: %v", size, name, err)
			}
		}
		// Random read sizes, including empty reads.
		rng := rand.New(rand.NewPCG(uint64(size), 7))
		r, _ = NewReader(bytes.NewReader(ct), key)
		var got []byte
		for {
			p := make([]byte, rng.IntN(2*ChunkSize))
			n, err := r.Read(p)
			got = append(got, p[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("size %d: random read sizes returned other bytes", size)
		}
	}
}

// TestChunking pins where the chunk boundaries are: every chunk but the
// last has ChunkSize bytes, whatever the Write sizes were.
func TestChunking(t *testing.T) {
	key := testKey()
	salt := make([]byte, saltSize)
	for _, size := range roundTripSizes {
		pt := pattern(size)
		want := sealSalt(t, key, salt, pt)
		for _, ws := range []int{1, 1000, ChunkSize - 1, ChunkSize + 1} {
			var buf bytes.Buffer
			w, _ := NewWriterRand(&buf, key, bytes.NewReader(salt))
			for p := pt; len(p) > 0; p = p[min(ws, len(p)):] {
				w.Write(p[:min(ws, len(p))])
			}
			w.Close()
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("size %d: writes of %d bytes give another ciphertext", size, ws)
			}
		}
	}
}

func TestWriterErrors(t *testing.T) {
	key := testKey()
	// Write after Close.
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, key)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if CiphertextSize(0) != int64(buf.Len()) {
		t.Fatal("second Close wrote again")
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, errClosed) {
		t.Fatalf("Write after Close: %v", err)
	}

	// A failing destination: the error is sticky and reaches Close.
	boom := errors.New("disk full")
	for _, failAt := range []int{0, 1, 2} { // header, chunk 0, final chunk
		fw := &failingWriter{after: failAt, err: boom}
		w, err := NewWriter(fw, key)
		if failAt == 0 {
			if !errors.Is(err, boom) {
				t.Fatalf("header write failure: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		_, werr := w.Write(make([]byte, ChunkSize+1))
		cerr := w.Close()
		if failAt == 1 && !errors.Is(werr, boom) || !errors.Is(cerr, boom) {
			t.Fatalf("fail at write %d: Write %v, Close %v", failAt, werr, cerr)
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Fatalf("fail at write %d: Write after failure succeeded", failAt)
		}
	}

	// A failing randomness source.
	if _, err := NewWriterRand(io.Discard, key, iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Fatalf("failing rand: %v", err)
	}
	if _, err := NewWriterRand(io.Discard, key, bytes.NewReader(make([]byte, saltSize-1))); err == nil {
		t.Fatal("short rand accepted")
	}
}

// failingWriter fails its Write number after (0-based) and every one after.
type failingWriter struct {
	after, n int
	err      error
}

func (f *failingWriter) Write(p []byte) (int, error) {
	defer func() { f.n++ }()
	if f.n >= f.after {
		return 0, f.err
	}
	return len(p), nil
}

// TestWriterDoesNotRetain checks that Write copies its input: changing the
// buffer after Write does not change the ciphertext.
func TestWriterDoesNotRetain(t *testing.T) {
	key := testKey()
	salt := make([]byte, saltSize)
	want := sealSalt(t, key, salt, pattern(100))
	var buf bytes.Buffer
	w, _ := NewWriterRand(&buf, key, bytes.NewReader(salt))
	p := pattern(100)
	w.Write(p)
	clear(p)
	w.Close()
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatal("Writer kept a reference to a Write's buffer")
	}
}

func TestFreshSalt(t *testing.T) {
	key := testKey()
	a, b := seal(t, key, nil), seal(t, key, nil)
	if bytes.Equal(a[len(magic):headerSize], b[len(magic):headerSize]) {
		t.Fatal("two blobs share a salt")
	}
}
