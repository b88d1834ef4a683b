package blobstream

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

func encrypt(t testing.TB, key Key, pt []byte, writeSize int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, key)
	if err != nil {
		t.Fatal(err)
	}
	for p := pt; len(p) > 0; {
		n := min(writeSize, len(p))
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func decrypt(key Key, ct []byte, wrap func(io.Reader) io.Reader) ([]byte, error) {
	r, err := NewReader(wrap(bytes.NewReader(ct)), key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func id(r io.Reader) io.Reader { return r }

func TestRoundTrip(t *testing.T) {
	key, _ := NewKey()
	for _, size := range []int{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 3 * ChunkSize, 3*ChunkSize + 17} {
		pt := make([]byte, size)
		rand.Read(pt)
		for _, ws := range []int{1 << 30, 7, ChunkSize} {
			if size > 200000 && ws == 7 {
				continue
			}
			ct := encrypt(t, key, pt, ws)
			if int64(len(ct)) != CiphertextSize(int64(size)) {
				t.Fatalf("size %d: ciphertext %d bytes, CiphertextSize says %d", size, len(ct), CiphertextSize(int64(size)))
			}
			if n, err := PlaintextSize(int64(len(ct))); err != nil || n != int64(size) {
				t.Fatalf("PlaintextSize(%d) = %d %v", len(ct), n, err)
			}
			for name, wrap := range map[string]func(io.Reader) io.Reader{"plain": id, "onebyte": iotest.OneByteReader, "half": iotest.HalfReader, "dataerr": iotest.DataErrReader} {
				got, err := decrypt(key, ct, wrap)
				if err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("size %d write %d read %s: %v", size, ws, name, err)
				}
			}
		}
	}
}

func TestAttacks(t *testing.T) {
	key, _ := NewKey()
	other, _ := NewKey()
	pt := make([]byte, 3*ChunkSize+100)
	rand.Read(pt)
	ct := encrypt(t, key, pt, 1<<30)
	ct2 := encrypt(t, key, pt, 1<<30) // same key, another salt
	full := ChunkSize + tagSize
	chunk := func(c []byte, i int) []byte { return c[HeaderLen+i*full : min(HeaderLen+(i+1)*full, len(c))] }
	splice := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	flip := func(off int) []byte { c := bytes.Clone(ct); c[off] ^= 1; return c }
	cases := map[string]struct {
		ct   []byte
		key  Key
		want error
	}{
		"final chunk removed at a boundary": {ct[:HeaderLen+3*full], key, ErrTruncated},
		"two final chunks removed":          {ct[:HeaderLen+2*full], key, ErrTruncated},
		"cut mid-chunk":                     {ct[:HeaderLen+full+100], key, ErrAuth},
		"cut mid final chunk":               {ct[:len(ct)-1], key, ErrAuth},
		"header only":                       {ct[:HeaderLen], key, ErrTruncated},
		"cut mid-header":                    {ct[:10], key, ErrFormat},
		"empty input":                       {nil, key, ErrFormat},
		"chunks swapped":                    {splice(ct[:HeaderLen], chunk(ct, 1), chunk(ct, 0), chunk(ct, 2), chunk(ct, 3)), key, ErrAuth},
		"chunk from another blob":           {splice(ct[:HeaderLen], chunk(ct, 0), chunk(ct2, 1), chunk(ct, 2), chunk(ct, 3)), key, ErrAuth},
		"bit flip in header salt":           {flip(len(Magic) + 1), key, ErrAuth},
		"bit flip in magic":                 {flip(0), key, ErrFormat},
		"bit flip in chunk 0":               {flip(HeaderLen + 5), key, ErrAuth},
		"bit flip in chunk 2":               {flip(HeaderLen + 2*full + 5), key, ErrAuth},
		"bit flip in final tag":             {flip(len(ct) - 1), key, ErrAuth},
		"trailing garbage":                  {splice(ct, []byte("garbage")), key, ErrAuth},
		"wrong key":                         {ct, other, ErrAuth},
	}
	for name, tc := range cases {
		got, err := decrypt(tc.key, tc.ct, id)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
		// Whatever was released before the error is a prefix of the truth.
		if !bytes.HasPrefix(pt, got) {
			t.Errorf("%s: released plaintext that is not the blob's", name)
		}
	}
	// A whole valid final chunk followed by more data.
	small := encrypt(t, key, []byte("hi"), 1<<30)
	if _, err := decrypt(key, splice(small, chunk(ct, 0)), id); err == nil {
		t.Error("data after the final chunk accepted")
	}
}

// TestMemoryBounded streams 64 MiB through encrypt and decrypt with io.Pipe
// and checks the heap stays small: neither side holds the blob.
func TestMemoryBounded(t *testing.T) {
	key, _ := NewKey()
	const size = 64 << 20
	pr, pw := io.Pipe()
	go func() {
		w, _ := NewWriter(pw, key)
		io.CopyN(w, zeroReader{}, size)
		w.Close()
		pw.Close()
	}()
	r, err := NewReader(pr, key)
	if err != nil {
		t.Fatal(err)
	}
	var peak uint64
	var ms runtime.MemStats
	buf := make([]byte, 32<<10)
	total := 0
	for i := 0; ; i++ {
		n, err := r.Read(buf)
		total += n
		if i%256 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if total != size {
		t.Fatalf("decrypted %d bytes", total)
	}
	if peak > 16<<20 {
		t.Fatalf("heap in use reached %d MiB while streaming 64 MiB", peak>>20)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestKeyNeverPrints(t *testing.T) {
	k, _ := NewKey()
	if k.String() != "blobkey(redacted)" || k.GoString() != "blobkey(redacted)" {
		t.Fatal("key prints")
	}
}

func FuzzReader(f *testing.F) {
	var key Key
	for i := range key {
		key[i] = byte(i)
	}
	// Deterministic (fixed salt): the fuzzing workers rebuild it.
	var vb bytes.Buffer
	w, _ := NewWriterRand(&vb, key, bytes.NewReader(make([]byte, SaltSize)))
	w.Write([]byte("fuzz seed plaintext"))
	w.Close()
	valid := vb.Bytes()
	f.Add(valid)
	f.Add(valid[:HeaderLen])
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, ct []byte) {
		r, err := NewReader(bytes.NewReader(ct), key)
		if err != nil {
			return
		}
		got, err := io.ReadAll(r)
		if err == nil && !bytes.Equal(ct, valid) {
			// Only a genuine encryption under key can decrypt; the fuzzer
			// cannot forge one, so success must be the seed.
			t.Fatalf("forged ciphertext decrypted to %q", got)
		}
	})
}

func BenchmarkEncrypt16MiB(b *testing.B) {
	key, _ := NewKey()
	b.SetBytes(16 << 20)
	b.ReportAllocs()
	for b.Loop() {
		w, _ := NewWriter(io.Discard, key)
		io.CopyN(w, zeroReader{}, 16<<20)
		w.Close()
	}
}

func BenchmarkDecrypt16MiB(b *testing.B) {
	key, _ := NewKey()
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, key)
	io.CopyN(w, zeroReader{}, 16<<20)
	w.Close()
	ct := buf.Bytes()
	b.SetBytes(16 << 20)
	b.ReportAllocs()
	for b.Loop() {
		r, _ := NewReader(bytes.NewReader(ct), key)
		io.Copy(io.Discard, r)
	}
}
