package blobcrypt

import (
	"bytes"
	"crypto/sha256"
	"io"
	"runtime"
	"sync"
	"testing"
)

// TestMemoryBounded streams 64 MiB through a Writer, an io.Pipe and a
// Reader and checks, from runtime.MemStats, that neither side holds the
// blob: the heap in use never grows by more than 4 MiB, and less than
// 4 MiB is allocated in all (no per-chunk allocations).
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 64 MiB")
	}
	const size = 64 << 20
	const limit = 4 << 20
	key := testKey()
	// The plaintext is a repeating pattern; its hash is the expected one.
	block := pattern(251 * 4096)
	want := sha256.New()
	for n := 0; n < size; n += len(block) {
		want.Write(block[:min(len(block), size-n)])
	}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseInuse, baseAlloc := ms.HeapInuse, ms.TotalAlloc

	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() {
		w, err := NewWriter(pw, key)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		for n := 0; n < size; n += len(block) {
			if _, err := w.Write(block[:min(len(block), size-n)]); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(w.Close())
	})
	t.Cleanup(wg.Wait)
	defer pr.Close()

	r, err := NewReader(pr, key)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	buf := make([]byte, 32<<10)
	var peak uint64
	total := 0
	for i := 0; ; i++ {
		n, err := r.Read(buf)
		got.Write(buf[:n])
		total += n
		if i%64 == 0 {
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
	runtime.ReadMemStats(&ms)
	peak = max(peak, ms.HeapInuse)
	allocated := ms.TotalAlloc - baseAlloc
	if total != size || string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatalf("decrypted %d bytes, not the plaintext", total)
	}
	grew := int64(peak) - int64(baseInuse)
	t.Logf("64 MiB streamed: heap in use grew by at most %d KiB, %d KiB allocated in all", grew>>10, allocated>>10)
	if grew > limit {
		t.Errorf("heap in use grew by %d KiB while streaming 64 MiB (limit %d KiB)", grew>>10, limit>>10)
	}
	if allocated > limit {
		t.Errorf("%d KiB allocated while streaming 64 MiB (limit %d KiB): something allocates per chunk", allocated>>10, limit>>10)
	}
}

// TestNoAllocsPerChunk checks that encrypting or decrypting one more chunk
// allocates nothing: the memory a blob costs does not grow with its size.
func TestNoAllocsPerChunk(t *testing.T) {
	if testing.Short() {
		t.Skip("encrypts and decrypts about 25 MiB")
	}
	key := testKey()
	block := make([]byte, ChunkSize)
	w, err := NewWriter(io.Discard, key)
	if err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(100, func() { w.Write(block) }); a != 0 {
		t.Errorf("Write of a chunk: %v allocations", a)
	}
	w.Close()

	ct := seal(t, key, make([]byte, 200*ChunkSize))
	r, err := NewReader(bytes.NewReader(ct), key)
	if err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(100, func() {
		if _, err := io.ReadFull(r, block); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("Read of a chunk: %v allocations", a)
	}
}
