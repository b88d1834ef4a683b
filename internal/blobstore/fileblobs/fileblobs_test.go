package fileblobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/unibus/unibus/internal/blobstore"
	"github.com/unibus/unibus/internal/blobstore/blobtest"
)

const room = "00112233445566778899aabbccddeeff"

func blob(n int) ([]byte, string) {
	b := make([]byte, n)
	rand.Read(b)
	s := sha256.Sum256(b)
	return b, hex.EncodeToString(s[:])
}

// entries lists every file under dir except the (empty) temp directory.
func entries(t *testing.T, dir string) []string {
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestPutOpenStat(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data, id := blob(300 << 10)
	info, err := s.Put(ctx, room, id, bytes.NewReader(data), 1<<20)
	if err != nil || info.Size != int64(len(data)) {
		t.Fatalf("put: %+v %v", info, err)
	}
	rc, info, err := s.Open(ctx, room, id)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) || info.Size != int64(len(data)) {
		t.Fatal("round trip differs")
	}
	fi, _ := os.Stat(filepath.Join(dir, room, id))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("blob file mode %o", fi.Mode().Perm())
	}
	if _, err := s.Put(ctx, room, id, bytes.NewReader(data), 1<<20); err != nil {
		t.Fatalf("re-put of the same blob: %v", err)
	}
	if _, err := s.Stat(ctx, room, "aa"+id[2:]); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("stat missing: %v", err)
	}
}

func TestOpenRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, ".tmp"), 0o700)
	os.WriteFile(filepath.Join(dir, ".tmp", "crashed"), []byte("partial"), 0o600)
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if left := entries(t, dir); len(left) != 0 {
		t.Fatalf("stale temp files kept: %v", left)
	}
}

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blobtest.Backend {
		dir := t.TempDir()
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		return blobtest.Backend{Store: s, Stored: func() int { return len(entries(t, dir)) }}
	}, nil) // Open returns only an open store: there is no "not open yet"
}
