// Package fileblobs is the blob store on a local directory (sqlite mode):
// <dir>/<room>/<id>. Uploads stream into <dir>/.tmp, are fsynced and
// renamed into place only when complete and verified, so a reader never
// sees a partial blob.
package fileblobs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/unibus/unibus/internal/blobstore"
)

// Store is a directory of blobs.
type Store struct{ dir string }

var _ blobstore.Store = (*Store)(nil)

// Open opens (creating, mode 0700) the blob directory and removes temporary
// files that an earlier crash left behind.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, ".tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("create blob directory: %w", err)
	}
	tmps, err := os.ReadDir(filepath.Join(dir, ".tmp"))
	if err != nil {
		return nil, fmt.Errorf("read blob temp directory: %w", err)
	}
	for _, t := range tmps {
		os.Remove(filepath.Join(dir, ".tmp", t.Name()))
	}
	return &Store{dir: dir}, nil
}

func (s *Store) path(room, id string) (string, error) {
	if !blobstore.ValidID(id) {
		return "", blobstore.ErrBadID
	}
	if !blobstore.ValidRoomID(room) {
		return "", blobstore.ErrBadRoomID
	}
	return filepath.Join(s.dir, room, id), nil
}

// Put implements blobstore.Store.
func (s *Store) Put(ctx context.Context, room, id string, r io.Reader, max int64) (blobstore.Info, error) {
	final, err := s.path(room, id)
	if err != nil {
		return blobstore.Info{}, err
	}
	var rnd [12]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(s.dir, ".tmp", id[:16]+"-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return blobstore.Info{}, fmt.Errorf("create blob temp file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), &limited{r: r, left: max, ctx: ctx})
	if err != nil {
		return blobstore.Info{}, err
	}
	want, _ := hex.DecodeString(id)
	if subtle.ConstantTimeCompare(h.Sum(nil), want) != 1 {
		return blobstore.Info{}, blobstore.ErrDigestMismatch
	}
	if err := f.Sync(); err != nil {
		return blobstore.Info{}, fmt.Errorf("sync blob: %w", err)
	}
	if err := f.Close(); err != nil {
		return blobstore.Info{}, fmt.Errorf("close blob: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return blobstore.Info{}, fmt.Errorf("create room blob directory: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return blobstore.Info{}, fmt.Errorf("publish blob: %w", err)
	}
	ok = true
	if d, err := os.Open(filepath.Dir(final)); err == nil {
		d.Sync()
		d.Close()
	}
	return s.Stat(ctx, room, id)
}

// limited reads at most left bytes and fails with ErrTooLarge past them; it
// also stops when ctx is done.
type limited struct {
	r    io.Reader
	left int64
	ctx  context.Context
}

func (l *limited) Read(p []byte) (int, error) {
	if err := l.ctx.Err(); err != nil {
		return 0, err
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return 0, blobstore.ErrTooLarge
	}
	return n, err
}

// Open implements blobstore.Store.
func (s *Store) Open(ctx context.Context, room, id string) (io.ReadCloser, blobstore.Info, error) {
	p, err := s.path(room, id)
	if err != nil {
		return nil, blobstore.Info{}, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, blobstore.Info{}, blobstore.ErrNotFound
	}
	if err != nil {
		return nil, blobstore.Info{}, fmt.Errorf("open blob: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, blobstore.Info{}, fmt.Errorf("stat blob: %w", err)
	}
	return f, blobstore.Info{Room: room, ID: id, Size: fi.Size(), Created: fi.ModTime().UTC()}, nil
}

// Stat implements blobstore.Store.
func (s *Store) Stat(ctx context.Context, room, id string) (blobstore.Info, error) {
	p, err := s.path(room, id)
	if err != nil {
		return blobstore.Info{}, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return blobstore.Info{}, blobstore.ErrNotFound
	}
	if err != nil {
		return blobstore.Info{}, fmt.Errorf("stat blob: %w", err)
	}
	return blobstore.Info{Room: room, ID: id, Size: fi.Size(), Created: fi.ModTime().UTC()}, nil
}

// Close releases nothing: the store holds no open file between calls.
func (s *Store) Close() error { return nil }
