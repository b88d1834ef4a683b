package blobcrypt

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the current implementation")

const vectorsPath = "testdata/vectors.json"

// vectorFile is testdata/vectors.json.
type vectorFile struct {
	Comment   []string         `json:"comment"`
	Vectors   []vector         `json:"vectors"`
	Negatives []negativeVector `json:"negatives"`
}

// vector is an encryption of pattern(PlaintextSize) (byte i is i mod 251)
// under Key with the header salt Salt.
type vector struct {
	Key              string   `json:"key"`
	Salt             string   `json:"salt"`
	PayloadKey       string   `json:"payload_key"`
	PlaintextSize    int      `json:"plaintext_size"`
	PlaintextSHA256  string   `json:"plaintext_sha256"`
	CiphertextSize   int      `json:"ciphertext_size"`
	CiphertextSHA256 string   `json:"ciphertext_sha256"`
	Ciphertext       string   `json:"ciphertext,omitempty"` // only when at most maxHexVector bytes
	ChunkTags        []string `json:"chunk_tags"`
}

// negativeVector is a ciphertext that must fail with Error. It is the
// ciphertext of the vector with plaintext size Base (or, without Base,
// empty), cut to its first Keep bytes, with XOR applied at XORAt, then
// Append appended — in that order — and read with Key.
type negativeVector struct {
	Name             string `json:"name"`
	Key              string `json:"key"`
	Base             *int   `json:"base,omitempty"`
	Keep             *int   `json:"keep,omitempty"`
	XORAt            *int   `json:"xor_at,omitempty"`
	XOR              string `json:"xor,omitempty"`
	Append           string `json:"append,omitempty"`
	CiphertextSize   int    `json:"ciphertext_size"`
	CiphertextSHA256 string `json:"ciphertext_sha256"`
	Ciphertext       string `json:"ciphertext,omitempty"`
	Error            string `json:"error"` // truncated, auth, format, trailing_data
}

const maxHexVector = 1024

var vectorSizes = []int{0, 5, ChunkSize, ChunkSize + 1}

var vectorErrors = map[string]error{"truncated": ErrTruncated, "auth": ErrAuth, "format": ErrFormat, "trailing_data": ErrTrailingData}

// vectorSalt is the fixed salt of every vector: 16 bytes of 0x5a.
func vectorSalt() []byte { return bytes.Repeat([]byte{0x5a}, saltSize) }

func hexSHA256(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func intp(i int) *int { return &i }

// generateVectors builds the vector file from the implementation.
func generateVectors(t *testing.T) vectorFile {
	key, salt := testKey(), vectorSalt()
	vf := vectorFile{Comment: []string{
		"unibus blob ciphertext v1 (docs/FORMATS.md, \"Blob ciphertext\").",
		"Plaintext of a vector: plaintext_size bytes, byte i = i mod 251. chunk_tags: the 16-byte tag ending each chunk.",
		"Negatives: take the ciphertext of the vector with plaintext_size = base (none: empty), keep its first keep bytes,",
		"xor the bytes of xor into it at xor_at, append append; reading it with key must fail with error.",
		"Regenerate: go test ./blobcrypt -run TestVectors -update",
	}}
	cts := map[int][]byte{}
	for _, n := range vectorSizes {
		ct := sealSalt(t, key, salt, pattern(n))
		cts[n] = ct
		pk, err := payloadKey(&key, salt)
		if err != nil {
			t.Fatal(err)
		}
		v := vector{
			Key: hex.EncodeToString(key[:]), Salt: hex.EncodeToString(salt), PayloadKey: hex.EncodeToString(pk),
			PlaintextSize: n, PlaintextSHA256: hexSHA256(pattern(n)),
			CiphertextSize: len(ct), CiphertextSHA256: hexSHA256(ct),
		}
		if len(ct) <= maxHexVector {
			v.Ciphertext = hex.EncodeToString(ct)
		}
		for i := 0; headerSize+i*encChunk < len(ct); i++ {
			c := chunkAt(ct, i)
			v.ChunkTags = append(v.ChunkTags, hex.EncodeToString(c[len(c)-tagSize:]))
		}
		vf.Vectors = append(vf.Vectors, v)
	}

	// The tag of an empty final chunk 1, for a non-canonical ciphertext.
	aead, err := newAEAD(&key, cts[0][:headerSize])
	if err != nil {
		t.Fatal(err)
	}
	n1 := chunkNonce(1, flagLast)
	emptyTag := aead.Seal(nil, n1[:], nil, cts[0][:headerSize])

	wrong := key
	wrong[0] ^= 0xff
	k, kw := hex.EncodeToString(key[:]), hex.EncodeToString(wrong[:])
	negs := []negativeVector{
		{Name: "empty input", Key: k, Error: "truncated"},
		{Name: "cut inside the header", Key: k, Base: intp(5), Keep: intp(20), Error: "truncated"},
		{Name: "header only, no chunk", Key: k, Base: intp(5), Keep: intp(headerSize), Error: "truncated"},
		{Name: "cut less than a tag into the final chunk", Key: k, Base: intp(5), Keep: intp(headerSize + 10), Error: "truncated"},
		{Name: "final chunk dropped at the chunk boundary", Key: k, Base: intp(ChunkSize + 1), Keep: intp(headerSize + encChunk), Error: "truncated"},
		{Name: "version 2 magic", Key: k, Base: intp(5), XORAt: intp(13), XOR: "03", Error: "format"},
		{Name: "not a blob", Key: k, Append: hex.EncodeToString([]byte("hello, world\n")), Error: "format"},
		{Name: "empty final chunk after a full chunk", Key: k, Base: intp(ChunkSize + 1), Keep: intp(headerSize + encChunk), Append: hex.EncodeToString(emptyTag), Error: "format"},
		{Name: "salt bit flipped", Key: k, Base: intp(5), XORAt: intp(20), XOR: "01", Error: "auth"},
		{Name: "ciphertext bit flipped", Key: k, Base: intp(5), XORAt: intp(headerSize), XOR: "80", Error: "auth"},
		{Name: "tag bit flipped", Key: k, Base: intp(5), XORAt: intp(headerSize + 5 + tagSize - 1), XOR: "01", Error: "auth"},
		{Name: "wrong key", Key: kw, Base: intp(5), Error: "auth"},
		{Name: "empty blob read with the wrong key", Key: kw, Base: intp(0), Error: "auth"},
		{Name: "final chunk moved to position 0", Key: k, Base: intp(ChunkSize + 1), Keep: intp(headerSize), Append: hex.EncodeToString(chunkAt(cts[ChunkSize+1], 1)), Error: "auth"},
		{Name: "byte appended after a short final chunk", Key: k, Base: intp(5), Append: "00", Error: "auth"},
		{Name: "byte appended after a full final chunk", Key: k, Base: intp(ChunkSize), Append: "00", Error: "trailing_data"},
	}
	for _, n := range negs {
		ct := applyNegative(t, n, cts)
		n.CiphertextSize, n.CiphertextSHA256 = len(ct), hexSHA256(ct)
		if len(ct) <= maxHexVector {
			n.Ciphertext = hex.EncodeToString(ct)
		}
		vf.Negatives = append(vf.Negatives, n)
	}
	return vf
}

// applyNegative builds a negative vector's ciphertext from its recipe.
func applyNegative(t *testing.T, n negativeVector, cts map[int][]byte) []byte {
	t.Helper()
	var ct []byte
	if n.Base != nil {
		base, ok := cts[*n.Base]
		if !ok {
			t.Fatalf("%s: no vector with plaintext size %d", n.Name, *n.Base)
		}
		ct = clone(base)
	}
	if n.Keep != nil {
		ct = ct[:*n.Keep]
	}
	if n.XORAt != nil {
		x := mustHex(t, n.XOR)
		for i, b := range x {
			ct[*n.XORAt+i] ^= b
		}
	}
	return append(ct, mustHex(t, n.Append)...)
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func mustKey(t *testing.T, s string) Key {
	t.Helper()
	var k Key
	if b := mustHex(t, s); len(b) != len(k) {
		t.Fatalf("key %q is not 32 bytes", s)
	} else {
		copy(k[:], b)
	}
	return k
}

// TestVectors regenerates the vectors and requires them to be identical,
// byte for byte, to testdata/vectors.json: a silent format change fails.
func TestVectors(t *testing.T) {
	got, err := json.MarshalIndent(generateVectors(t), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *update {
		if err := os.WriteFile(filepath.FromSlash(vectorsPath), got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", vectorsPath)
	}
	want, err := os.ReadFile(filepath.FromSlash(vectorsPath))
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the blob v1 encryption no longer produces %s; if the format change is intended, it needs a new version", vectorsPath)
	}
}

// TestVectorsDecrypt checks the stored vectors the way another
// implementation would: from the file, not from the generator.
func TestVectorsDecrypt(t *testing.T) {
	data, err := os.ReadFile(filepath.FromSlash(vectorsPath))
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&vf); err != nil {
		t.Fatal(err)
	}
	if len(vf.Vectors) == 0 || len(vf.Negatives) == 0 {
		t.Fatal("no vectors")
	}
	cts := map[int][]byte{}
	for _, v := range vf.Vectors {
		name := fmt.Sprintf("vector %d", v.PlaintextSize)
		key, salt := mustKey(t, v.Key), mustHex(t, v.Salt)
		pt := pattern(v.PlaintextSize)
		if hexSHA256(pt) != v.PlaintextSHA256 {
			t.Fatalf("%s: plaintext_sha256 does not match the pattern", name)
		}
		if pk, err := payloadKey(&key, salt); err != nil || hex.EncodeToString(pk) != v.PayloadKey {
			t.Errorf("%s: payload key differs", name)
		}
		ct := mustHex(t, v.Ciphertext)
		if v.Ciphertext == "" {
			// Too large to store: encrypt it and compare the hash.
			ct = sealSalt(t, key, salt, pt)
		}
		if len(ct) != v.CiphertextSize || hexSHA256(ct) != v.CiphertextSHA256 {
			t.Fatalf("%s: ciphertext differs", name)
		}
		if !bytes.Equal(ct[:len(magic)], []byte(magic)) || !bytes.Equal(ct[len(magic):headerSize], salt) {
			t.Errorf("%s: header is not magic || salt", name)
		}
		for i, tag := range v.ChunkTags {
			c := chunkAt(ct, i)
			if hex.EncodeToString(c[len(c)-tagSize:]) != tag {
				t.Errorf("%s: tag of chunk %d differs", name, i)
			}
		}
		got, err := open(key, ct, nil)
		if err != nil || !bytes.Equal(got, pt) {
			t.Errorf("%s: decrypt: %v", name, err)
		}
		if CiphertextSize(int64(v.PlaintextSize)) != int64(v.CiphertextSize) {
			t.Errorf("%s: CiphertextSize disagrees", name)
		}
		cts[v.PlaintextSize] = ct
	}
	for _, n := range vf.Negatives {
		ct := applyNegative(t, n, cts)
		if len(ct) != n.CiphertextSize || hexSHA256(ct) != n.CiphertextSHA256 || n.Ciphertext != "" && !bytes.Equal(ct, mustHex(t, n.Ciphertext)) {
			t.Errorf("negative %q: recipe does not give the stored ciphertext", n.Name)
		}
		want, ok := vectorErrors[n.Error]
		if !ok {
			t.Fatalf("negative %q: unknown error %q", n.Name, n.Error)
		}
		if _, err := open(mustKey(t, n.Key), ct, nil); !errors.Is(err, want) {
			t.Errorf("negative %q: got %v, want %s", n.Name, err, n.Error)
		}
	}
}
