package blobcrypt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"golang.org/x/crypto/chacha20poly1305"
)

// attack is a ciphertext that must fail with want after releasing exactly
// released bytes of the true plaintext.
type attack struct {
	name     string
	ct       []byte
	key      Key
	want     error
	released int
}

// check decrypts a.ct with each source wrapper and asserts the error, that
// the error is sticky, and that what was released is the start of pt.
func (a attack) check(t *testing.T, pt []byte) {
	t.Helper()
	for _, sw := range srcWrappers {
		var src io.Reader = bytes.NewReader(a.ct)
		if sw.wrap != nil {
			src = sw.wrap(src)
		}
		r, err := NewReader(src, a.key)
		var got []byte
		if err == nil {
			got, err = io.ReadAll(r)
			if err != nil {
				// Sticky: every later Read returns the same error.
				for range 2 {
					if n, err2 := r.Read(make([]byte, 10)); n != 0 || err2 != err {
						t.Errorf("%s (src %s): Read after %v = %d, %v", a.name, sw.name, err, n, err2)
					}
				}
			}
		}
		if !errors.Is(err, a.want) {
			t.Errorf("%s (src %s): got %v, want %v", a.name, sw.name, err, a.want)
		}
		if len(got) != a.released || !bytes.Equal(got, pt[:min(len(got), len(pt))]) {
			t.Errorf("%s (src %s): released %d bytes, want the first %d of the blob", a.name, sw.name, len(got), a.released)
		}
	}
}

func clone(b []byte) []byte { return bytes.Clone(b) }

func flipBit(ct []byte, off int) []byte {
	c := clone(ct)
	c[off] ^= 0x04
	return c
}

func TestAttacks(t *testing.T) {
	key := testKey()
	other := key
	other[31] ^= 1

	for _, size := range []int{0, 100, ChunkSize, 3 * ChunkSize, 3*ChunkSize + 100} {
		pt := randomBytes(uint64(size), size)
		ct := seal(t, key, pt)
		ct2 := seal(t, key, randomBytes(uint64(size)+1, size)) // same key, another salt
		chunks := (len(ct) - headerSize + encChunk - 1) / encChunk
		lastLen := len(chunkAt(ct, chunks-1))
		fullLast := lastLen == encChunk
		var as []attack
		add := func(name string, c []byte, k Key, want error, released int) {
			as = append(as, attack{fmt.Sprintf("size %d: %s", size, name), c, k, want, released})
		}

		// Empty input and every cut inside the header.
		for n := 0; n < headerSize; n++ {
			add(fmt.Sprintf("cut in header at %d", n), ct[:n], key, ErrTruncated, 0)
		}
		// Every chunk boundary before the final chunk: the final chunk
		// (and any after the cut) removed.
		for i := 0; i < chunks; i++ {
			add(fmt.Sprintf("cut at boundary before chunk %d", i), ct[:headerSize+i*encChunk], key, ErrTruncated, max(0, i-1)*ChunkSize)
		}
		// Cuts inside every chunk. Less than a tag left of a chunk is
		// certainly a cut; more cannot be told from a damaged final chunk.
		for i := 0; i < chunks; i++ {
			clen := len(chunkAt(ct, i))
			for _, in := range []int{1, tagSize - 1, tagSize, tagSize + 1, clen / 2, clen - 1} {
				if in <= 0 || in >= clen {
					continue
				}
				want := ErrAuth
				if in < tagSize {
					want = ErrTruncated
				}
				add(fmt.Sprintf("cut %d bytes into chunk %d", in, i), ct[:headerSize+i*encChunk+in], key, want, i*ChunkSize)
			}
		}
		// A bit flipped in every header byte: the magic is checked first,
		// the salt changes the payload key.
		for off := 0; off < headerSize; off++ {
			want := ErrAuth
			if off < len(magic) {
				want = ErrFormat
			}
			add(fmt.Sprintf("bit flipped in header byte %d", off), flipBit(ct, off), key, want, 0)
		}
		// A bit flipped at the start, middle and tag of every chunk.
		for i := 0; i < chunks; i++ {
			start, clen := headerSize+i*encChunk, len(chunkAt(ct, i))
			for _, in := range []int{0, clen / 2, clen - 1} {
				add(fmt.Sprintf("bit flipped at byte %d of chunk %d", in, i), flipBit(ct, start+in), key, ErrAuth, i*ChunkSize)
			}
		}
		add("wrong key", ct, other, ErrAuth, 0)
		add("chunk of another blob, same key, same position", join(ct[:headerSize], chunkAt(ct2, 0), ct[headerSize+len(chunkAt(ct, 0)):]), key, ErrAuth, 0)
		add("header of another blob, same key", join(ct2[:headerSize], ct[headerSize:]), key, ErrAuth, 0)
		add("final chunk of another blob", join(ct[:headerSize+(chunks-1)*encChunk], chunkAt(ct2, chunks-1)), key, ErrAuth, (chunks-1)*ChunkSize)
		if fullLast {
			add("one byte appended after a full final chunk", join(ct, []byte{0}), key, ErrTrailingData, (chunks-1)*ChunkSize)
			add("a chunk appended after a full final chunk", join(ct, chunkAt(ct, 0)), key, ErrTrailingData, (chunks-1)*ChunkSize)
		} else {
			// After a short final chunk, appended bytes make it another
			// length: it fails as a damaged chunk.
			add("one byte appended after a short final chunk", join(ct, []byte{0}), key, ErrAuth, (chunks-1)*ChunkSize)
			add("a chunk appended after a short final chunk", join(ct, chunkAt(ct2, 0)), key, ErrAuth, (chunks-1)*ChunkSize)
		}
		add("a whole blob appended", join(ct, ct), key, map[bool]error{true: ErrTrailingData, false: ErrAuth}[fullLast], (chunks-1)*ChunkSize)
		if chunks >= 2 {
			add("chunks 0 and 1 swapped", join(ct[:headerSize], chunkAt(ct, 1), chunkAt(ct, 0), ct[headerSize+2*encChunk:]), key, ErrAuth, 0)
			add("final chunk and the one before swapped", join(ct[:headerSize+(chunks-2)*encChunk], chunkAt(ct, chunks-1), chunkAt(ct, chunks-2)), key, ErrAuth, (chunks-2)*ChunkSize)
			add("chunk 0 repeated", join(ct[:headerSize+encChunk], ct[headerSize:]), key, ErrAuth, ChunkSize)
			add("chunk 0 dropped", join(ct[:headerSize], ct[headerSize+encChunk:]), key, ErrAuth, 0)
			add("chunk 1 of another blob", join(ct[:headerSize+encChunk], chunkAt(ct2, 1), ct[headerSize+2*encChunk:]), key, ErrAuth, ChunkSize)
		}
		if chunks >= 3 {
			add("chunk 1 dropped", join(ct[:headerSize+encChunk], ct[headerSize+2*encChunk:]), key, ErrAuth, ChunkSize)
		}

		for _, a := range as {
			a.check(t, pt)
		}
	}
}

// TestEmptyFinalChunk checks that an empty final chunk after a full one —
// a valid STREAM encryption, but not one a v1 writer makes — is refused,
// so that every plaintext size has one ciphertext size.
func TestEmptyFinalChunk(t *testing.T) {
	key := testKey()
	pt := pattern(ChunkSize)
	header := append([]byte(magic), make([]byte, saltSize)...)
	aead, err := newAEAD(&key, header)
	if err != nil {
		t.Fatal(err)
	}
	n0, n1 := chunkNonce(0, flagMore), chunkNonce(1, flagLast)
	ct := join(header, aead.Seal(nil, n0[:], pt, header), aead.Seal(nil, n1[:], nil, header))
	attack{"empty final chunk after a full chunk", ct, key, ErrFormat, ChunkSize}.check(t, pt)
	if _, err := PlaintextSize(int64(len(ct))); !errors.Is(err, ErrFormat) {
		t.Fatalf("PlaintextSize of that length: %v", err)
	}

	// A short chunk that is not final (also not from a v1 writer) reads as
	// part of a longer final chunk, which fails.
	n0 = chunkNonce(0, flagMore)
	ct = join(header, aead.Seal(nil, n0[:], pt[:10], header), aead.Seal(nil, n1[:], pt[10:20], header))
	attack{"short non-final chunk", ct, key, ErrAuth, 0}.check(t, pt)
}

func TestFormatErrors(t *testing.T) {
	key := testKey()
	ct := seal(t, key, []byte("hello"))
	for _, tc := range []struct {
		name, in, msg string
	}{
		{"another version", "unibus/blob/v2\n" + string(ct[len(magic):]), `unsupported version "unibus/blob/v2"`},
		{"not a blob", "PK\x03\x04 a zip file, not a blob ciphertext", "does not start with"},
		{"plaintext", "hello", "does not start with"},
		{"short and wrong", "u", ""},
	} {
		_, err := NewReader(strings.NewReader(tc.in), key)
		if tc.name == "short and wrong" {
			// "u" is a prefix of the magic: a cut, not a foreign format.
			if !errors.Is(err, ErrTruncated) {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want ErrFormat saying %q", tc.name, err, tc.msg)
		}
	}
}

// TestSourceErrors checks that an error of the source is returned, wrapped,
// and is sticky, and that no plaintext of the chunk being read is released.
func TestSourceErrors(t *testing.T) {
	key := testKey()
	pt := randomBytes(3, 2*ChunkSize+5)
	ct := seal(t, key, pt)
	boom := errors.New("connection reset")
	for _, at := range []int{3, headerSize, headerSize + 1, headerSize + encChunk, headerSize + encChunk + 1, len(ct) - 1} {
		src := io.MultiReader(bytes.NewReader(ct[:at]), iotest.ErrReader(boom))
		r, err := NewReader(src, key)
		var got []byte
		if err == nil {
			got, err = io.ReadAll(r)
			if _, err2 := r.Read(make([]byte, 1)); err2 != err {
				t.Errorf("cut at %d: error not sticky: %v then %v", at, err, err2)
			}
		}
		if !errors.Is(err, boom) {
			t.Errorf("cut at %d: got %v, want the source's error", at, err)
		}
		// Released: every chunk whose ciphertext and following byte arrived.
		want := 0
		if at > headerSize {
			want = min((at-headerSize-1)/encChunk, 2) * ChunkSize
		}
		if len(got) != want || !bytes.Equal(got, pt[:len(got)]) {
			t.Errorf("cut at %d: released %d bytes, want %d", at, len(got), want)
		}
	}
}

// TestErrorMessages checks that messages say what happened and where.
func TestErrorMessages(t *testing.T) {
	key := testKey()
	ct := seal(t, key, pattern(3*ChunkSize))
	for _, tc := range []struct {
		ct   []byte
		want string
	}{
		{ct[:headerSize+2*encChunk], "blob ciphertext is truncated: final chunk missing"},
		{ct[:headerSize+2*encChunk], "(it ends after chunk 1, which is not the final one)"},
		{ct[:10], "ends inside its header, after 10 of 31 bytes"},
		{flipBit(ct, headerSize+encChunk+3), "failed authentication"},
		{flipBit(ct, headerSize+encChunk+3), "(chunk 1)"},
		{join(ct, []byte("x")), "data after its final chunk (chunk 2 is the final one, and more data follows it)"},
		{ct[:headerSize+encChunk+3], "(it ends 3 bytes into chunk 1, inside its tag)"},
	} {
		_, err := open(key, tc.ct, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want a message containing %q", err, tc.want)
		}
	}
}

func TestHeaderSize(t *testing.T) {
	if headerSize != len(magic)+saltSize || len(magic) != 15 {
		t.Fatal("headerSize is not len(magic) + saltSize")
	}
}

// TestNonce pins the nonce layout: 11-byte big-endian counter, then flag.
func TestNonce(t *testing.T) {
	for _, tc := range []struct {
		i    uint64
		flag byte
		want string
	}{
		{0, flagMore, "000000000000000000000000"},
		{0, flagLast, "000000000000000000000001"},
		{1, flagMore, "000000000000000000000100"},
		{0x0102030405060708, flagLast, "000000010203040506070801"},
	} {
		n := chunkNonce(tc.i, tc.flag)
		if got := fmt.Sprintf("%x", n[:]); got != tc.want || len(n) != chacha20poly1305.NonceSize {
			t.Errorf("nonce(%d, %d) = %s, want %s", tc.i, tc.flag, got, tc.want)
		}
	}
}
