package blobstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

// vector: key, salt and a deterministic plaintext (byte i = i mod 251) of
// Size bytes; the ciphertext in full when small, else its SHA-256.
type vector struct {
	Key             string `json:"key"`
	Salt            string `json:"salt"`
	Size            int    `json:"plaintext_size"`
	PlaintextSHA256 string `json:"plaintext_sha256"`
	Ciphertext      string `json:"ciphertext,omitempty"`
	CiphertextSHA   string `json:"ciphertext_sha256"`
	CiphertextSize  int    `json:"ciphertext_size"`
}

type negative struct {
	Name       string `json:"name"`
	Key        string `json:"key"`
	Ciphertext string `json:"ciphertext"`
	Error      string `json:"error"` // "truncated", "auth", "format"
}

type vectorFile struct {
	Comment   string     `json:"comment"`
	Vectors   []vector   `json:"vectors"`
	Negatives []negative `json:"negatives"`
}

func plaintextOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func vectorKey() Key {
	var k Key
	for i := range k {
		k[i] = byte(0x40 + i)
	}
	return k
}

func generate(t *testing.T) vectorFile {
	key := vectorKey()
	salt := bytes.Repeat([]byte{0x5a}, SaltSize)
	vf := vectorFile{Comment: "unibus blob v1 vectors; see docs/FORMATS.md. Regenerate: go test ./blobstream -run TestVectors -update"}
	for _, n := range []int{0, 5, ChunkSize, ChunkSize + 1} {
		var buf bytes.Buffer
		w, err := NewWriterRand(&buf, key, bytes.NewReader(salt))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(plaintextOf(n))
		w.Close()
		ps, cs := sha256.Sum256(plaintextOf(n)), sha256.Sum256(buf.Bytes())
		v := vector{Key: hex.EncodeToString(key[:]), Salt: hex.EncodeToString(salt), Size: n,
			PlaintextSHA256: hex.EncodeToString(ps[:]), CiphertextSHA: hex.EncodeToString(cs[:]), CiphertextSize: buf.Len()}
		if n < 100 {
			v.Ciphertext = hex.EncodeToString(buf.Bytes())
		}
		vf.Vectors = append(vf.Vectors, v)
		if n == 5 {
			c := buf.Bytes()
			vf.Negatives = append(vf.Negatives,
				negative{"last byte flipped", v.Key, hex.EncodeToString(append(bytes.Clone(c[:len(c)-1]), c[len(c)-1]^1)), "auth"},
				negative{"final chunk missing", v.Key, hex.EncodeToString(c[:HeaderLen]), "truncated"},
				negative{"bad magic", v.Key, hex.EncodeToString(append([]byte("unibus/blob/v2\n"), c[len(Magic):]...)), "format"})
		}
	}
	return vf
}

func TestVectors(t *testing.T) {
	path := filepath.Join("testdata", "vectors.json")
	got, _ := json.MarshalIndent(generate(t), "", "  ")
	got = append(got, '\n')
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the blob v1 format changed: regenerated vectors differ")
	}
	// Decrypt the stored vectors as another implementation would.
	var vf vectorFile
	json.Unmarshal(want, &vf)
	for _, v := range vf.Vectors {
		if v.Ciphertext == "" {
			continue
		}
		kb, _ := hex.DecodeString(v.Key)
		ct, _ := hex.DecodeString(v.Ciphertext)
		var k Key
		copy(k[:], kb)
		pt, err := decrypt(k, ct, func(r io.Reader) io.Reader { return r })
		if err != nil || !bytes.Equal(pt, plaintextOf(v.Size)) {
			t.Errorf("vector size %d: %v", v.Size, err)
		}
	}
	errs := map[string]error{"auth": ErrAuth, "truncated": ErrTruncated, "format": ErrFormat}
	for _, n := range vf.Negatives {
		kb, _ := hex.DecodeString(n.Key)
		ct, _ := hex.DecodeString(n.Ciphertext)
		var k Key
		copy(k[:], kb)
		if _, err := decrypt(k, ct, func(r io.Reader) io.Reader { return r }); !errors.Is(err, errs[n.Error]) {
			t.Errorf("negative %q: got %v, want %s", n.Name, err, n.Error)
		}
	}
}
