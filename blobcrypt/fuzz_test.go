package blobcrypt

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"testing/iotest"
)

const corpusDir = "testdata/fuzz/FuzzReader"

// fuzzSeed is a named seed input of FuzzReader.
type fuzzSeed struct {
	name string
	ct   []byte
}

// fuzzSalt returns the salt of valid seed i. Every valid seed has its own,
// so that no splice of two seeds is a valid ciphertext.
func fuzzSalt(i byte) []byte { return bytes.Repeat([]byte{i}, saltSize) }

// fuzzValid returns the valid ciphertexts among the seeds, under testKey.
func fuzzValid(t testing.TB) map[string][]byte {
	k := testKey()
	return map[string][]byte{
		"valid-empty": sealSalt(t, k, fuzzSalt(1), nil),
		"valid-5":     sealSalt(t, k, fuzzSalt(2), pattern(5)),
		"valid-100":   sealSalt(t, k, fuzzSalt(3), pattern(100)),
		"valid-1000":  sealSalt(t, k, fuzzSalt(4), pattern(1000)),
	}
}

// fuzzSeeds returns the seed corpus of FuzzReader, committed in
// testdata/fuzz/FuzzReader. It holds no multi-chunk ciphertext: the fuzzing
// engine minimizes every new input it finds, which takes minutes for one
// of 64 KiB, so multi-chunk inputs are fuzzed by FuzzReaderEdits instead.
func fuzzSeeds(t testing.TB) []fuzzSeed {
	v := fuzzValid(t)
	var seeds []fuzzSeed
	for _, name := range []string{"valid-empty", "valid-5", "valid-100", "valid-1000"} {
		seeds = append(seeds, fuzzSeed{name, v[name]})
	}
	v5 := v["valid-5"]
	return append(seeds,
		fuzzSeed{"empty", nil},
		fuzzSeed{"magic", []byte(magic)},
		fuzzSeed{"header-only", v5[:headerSize]},
		fuzzSeed{"v2-magic", append([]byte("unibus/blob/v2\n"), v5[len(magic):]...)},
		fuzzSeed{"flipped-tag", flipBit(v5, len(v5)-1)},
		fuzzSeed{"trailing-byte", join(v5, []byte{0})},
		fuzzSeed{"cut-in-tag", v5[:len(v5)-tagSize+1]},
	)
}

// corpusFile encodes b in the "go test fuzz v1" corpus format.
func corpusFile(b []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
}

// TestFuzzCorpus checks that the committed seed files are the small seeds
// (and writes them with -update).
func TestFuzzCorpus(t *testing.T) {
	names := map[string]bool{}
	for _, s := range fuzzSeeds(t) {
		names["seed-"+s.name] = true
		path := filepath.Join(filepath.FromSlash(corpusDir), "seed-"+s.name)
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, corpusFile(s.ct), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, corpusFile(s.ct)) {
			t.Errorf("%s differs from the seed (run with -update): %v", path, err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(filepath.FromSlash(corpusDir), "seed-*"))
	for _, f := range files {
		if !names[filepath.Base(f)] {
			t.Errorf("%s is no longer a seed: remove it", f)
		}
	}
}

// FuzzReader decrypts arbitrary input under a fixed key. It must never
// panic; it may succeed only on a valid seed (nobody can forge a chunk),
// and then re-encrypting the plaintext with the input's salt gives the
// input back; on failure it must fail with one of the package's errors and
// have released only whole chunks that re-encrypt to the input's start.
// Reading the input one byte at a time must give the same result.
func FuzzReader(f *testing.F) {
	valid := fuzzValid(f)
	key := testKey()
	f.Fuzz(func(t *testing.T, ct []byte) {
		got, err := open(key, ct, nil)
		got1, err1 := open(key, ct, iotest.OneByteReader)
		if !bytes.Equal(got, got1) || fmt.Sprint(err) != fmt.Sprint(err1) {
			t.Fatalf("one byte at a time: %d bytes, %v; at once: %d bytes, %v", len(got1), err1, len(got), err)
		}
		if err == nil {
			known := false
			for _, v := range valid {
				known = known || bytes.Equal(v, ct)
			}
			if !known {
				t.Fatalf("an input that is no seed decrypted (%d bytes of plaintext)", len(got))
			}
			if re := sealSalt(t, key, ct[len(magic):headerSize], got); !bytes.Equal(re, ct) {
				t.Fatal("the plaintext does not re-encrypt to the input")
			}
			return
		}
		if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrAuth) && !errors.Is(err, ErrFormat) && !errors.Is(err, ErrTrailingData) {
			t.Fatalf("error of no kind: %v", err)
		}
		if len(got) == 0 {
			return
		}
		if len(got)%ChunkSize != 0 {
			t.Fatalf("released %d bytes, not whole chunks", len(got))
		}
		// Whole chunks sealed as not final: encrypt one more byte and
		// compare the ciphertext up to the end of those chunks.
		prefix := headerSize + len(got)/ChunkSize*encChunk
		re := sealSalt(t, key, ct[len(magic):headerSize], append(got, 0))
		if len(ct) < prefix || !bytes.Equal(re[:prefix], ct[:prefix]) {
			t.Fatalf("released %d bytes that are not the input's chunks", len(got))
		}
	})
}

// editBases are the ciphertexts FuzzReaderEdits edits: three chunks ending
// in a short one, and two chunks ending in a full one.
func editBases(t testing.TB) (pts, cts [2][]byte) {
	pts = [2][]byte{pattern(2*ChunkSize + 100), pattern(2 * ChunkSize)}
	for i, pt := range pts {
		cts[i] = sealSalt(t, testKey(), fuzzSalt(byte(0x10+i)), pt)
	}
	return pts, cts
}

// applyEdits applies ops to a copy of ct: five bytes per edit, a kind, a
// 24-bit position (taken modulo the length) and an argument.
func applyEdits(ct, ops []byte) []byte {
	ct = clone(ct)
	for ; len(ops) >= 5; ops = ops[5:] {
		pos := (int(ops[1])<<16 | int(ops[2])<<8 | int(ops[3])) % (len(ct) + 1)
		arg := ops[4]
		chunks := max(1, (len(ct)-headerSize+encChunk-1)/encChunk)
		ci, cj := headerSize+int(arg)%chunks*encChunk, headerSize+pos%chunks*encChunk
		switch ops[0] % 8 {
		case 0: // flip a bit
			if pos < len(ct) {
				ct[pos] ^= 1 << (arg % 8)
			}
		case 1: // cut
			ct = ct[:pos]
		case 2: // delete up to arg+1 bytes
			ct = append(ct[:pos], ct[min(len(ct), pos+int(arg)+1):]...)
		case 3: // insert a byte
			ct = append(ct[:pos], append([]byte{arg}, ct[pos:]...)...)
		case 4: // append a byte
			ct = append(ct, arg)
		case 5: // delete a whole chunk
			if ci < len(ct) {
				ct = append(ct[:ci], ct[min(len(ct), ci+encChunk):]...)
			}
		case 6: // repeat a chunk after itself
			if ci < len(ct) {
				c := clone(ct[ci:min(len(ct), ci+encChunk)])
				ct = append(ct[:ci], append(c, ct[ci:]...)...)
			}
		case 7: // swap two chunks of full size
			if ci+encChunk <= len(ct) && cj+encChunk <= len(ct) {
				a, b := clone(ct[ci:ci+encChunk]), clone(ct[cj:cj+encChunk])
				copy(ct[ci:], b)
				copy(ct[cj:], a)
			}
		}
	}
	return ct
}

// FuzzReaderEdits fuzzes multi-chunk ciphertexts: the input is a short list
// of edits (flips, cuts, insertions, chunks deleted, repeated or swapped) to
// a valid ciphertext of three or two chunks. Whatever the edits, the reader
// must not panic, must succeed only if the ciphertext is unchanged, and must
// release only whole chunks of the true plaintext before an error.
func FuzzReaderEdits(f *testing.F) {
	// ops[0] picks the base (even: three chunks, odd: two full chunks);
	// then kind, 24-bit position, argument.
	f.Add([]byte{0})                            // no edit
	f.Add([]byte{0, 1, 0x01, 0x00, 0x00, 0})    // cut inside chunk 0
	f.Add([]byte{0, 0, 0x00, 0x80, 0x00, 3})    // flip a bit
	f.Add([]byte{0, 5, 0, 0, 0, 0})             // delete chunk 0
	f.Add([]byte{0, 7, 0, 0, 1, 0})             // swap chunks 0 and 1
	f.Add([]byte{1, 4, 0, 0, 0, 0x2a})          // append a byte after a full final chunk
	f.Add([]byte{1, 1, 0x01, 0x00, 0x2f, 0})    // cut at the boundary after chunk 0
	f.Add([]byte{0, 6, 0, 0, 0, 1, 2, 0, 0, 0}) // repeat chunk 1, delete bytes
	pts, cts := editBases(f)
	key := testKey()
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) == 0 || len(ops) > 1+5*8 {
			return
		}
		base := int(ops[0] % 2)
		pt, ct := pts[base], applyEdits(cts[base], ops[1:])
		got, err := open(key, ct, nil)
		got1, err1 := open(key, ct, iotest.HalfReader)
		if !bytes.Equal(got, got1) || fmt.Sprint(err) != fmt.Sprint(err1) {
			t.Fatalf("read in halves: %d bytes, %v; at once: %d bytes, %v", len(got1), err1, len(got), err)
		}
		if err == nil {
			if !bytes.Equal(ct, cts[base]) || !bytes.Equal(got, pt) {
				t.Fatalf("an edited ciphertext decrypted (%d bytes)", len(got))
			}
			return
		}
		if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrAuth) && !errors.Is(err, ErrFormat) && !errors.Is(err, ErrTrailingData) {
			t.Fatalf("error of no kind: %v", err)
		}
		if len(got)%ChunkSize != 0 || !bytes.HasPrefix(pt, got) {
			t.Fatalf("released %d bytes that are not whole chunks of the plaintext", len(got))
		}
		if len(got) > 0 && !bytes.Equal(ct[:headerSize+len(got)/ChunkSize*encChunk], cts[base][:headerSize+len(got)/ChunkSize*encChunk]) {
			t.Fatalf("released chunks that were edited")
		}
	})
}
