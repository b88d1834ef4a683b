package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/storetest"
)

func openTest(t *testing.T, path string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(t.Context(), path, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	var mu sync.Mutex
	paths := map[store.Store]string{}
	storetest.Run(t, storetest.Backend{
		Open: func(t *testing.T) store.Store {
			path := filepath.Join(t.TempDir(), "unibus.db")
			s := openTest(t, path, WithWatchPoll(10*time.Millisecond))
			mu.Lock()
			paths[s] = path
			mu.Unlock()
			return s
		},
		// Another process's handle: a second Open of the same file.
		Reopen: func(t *testing.T, s store.Store) store.Store {
			mu.Lock()
			path := paths[s]
			mu.Unlock()
			return openTest(t, path)
		},
		// Open returns only an open store: there is no "not open yet".
	})
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "local_files", "state")
	path := filepath.Join(dir, "unibus.db")
	s := openTest(t, path)
	if err := s.AddUser(t.Context(), store.User{SignPub: strings.Repeat("a", 64), Handle: "a", Role: store.RoleAdmin, Status: store.StatusActive}); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("created directory mode %v, want 0700", m)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if m := mode(t, p); m != 0o600 {
			t.Errorf("%s: mode %v, want 0600", filepath.Base(p), m)
		}
	}
}

func TestFileModeTightened(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unibus.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A stale WAL left by a crash, and a file someone made readable.
	files := []string{path, path + "-wal"}
	if err := os.WriteFile(path+"-wal", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range files {
		if err := os.Chmod(p, 0o644); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	openTest(t, path)
	for _, p := range files {
		if m := mode(t, p); m != 0o600 {
			t.Errorf("%s: mode %v after Open, want 0600", filepath.Base(p), m)
		}
	}
}

func TestPragmas(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "unibus.db"))
	ctx := t.Context()
	for _, db := range []struct {
		name string
		db   *sql.DB
	}{{"write", s.w}, {"read", s.r}} {
		var journal string
		var sync, fk int
		if err := db.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&journal); err != nil {
			t.Fatal(err)
		}
		if err := db.db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if err := db.db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if journal != "wal" || sync != 2 || fk != 1 {
			t.Errorf("%s connection: journal_mode=%s synchronous=%d foreign_keys=%d; want wal, 2 (FULL), 1", db.name, journal, sync, fk)
		}
	}
	if _, err := s.r.ExecContext(ctx, `DELETE FROM users`); err == nil {
		t.Error("the read pool accepted a write")
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unibus.db")
	ctx := t.Context()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	alice := strings.Repeat("ab", 32)
	room := strings.Repeat("cd", 16)
	now := time.Now()
	if err := s.AddUser(ctx, store.User{SignPub: alice, Handle: "alice", Role: store.RoleAdmin, Status: store.StatusActive, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	key := store.SealedKey{Room: room, Epoch: 1, Member: alice, Sealer: alice, Sealed: []byte{0, 1, 2, 0}, Sig: []byte{9}}
	if err := s.CreateRoom(ctx, store.Room{ID: room, Name: "ops", CreatedBy: alice, CreatedAt: now},
		store.Member{Room: room, SignPub: alice, Role: store.RoomOwner, AddedBy: alice, AddedAt: now}, key); err != nil {
		t.Fatal(err)
	}
	if err := s.UseNonce(ctx, alice, "n1", now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, path)
	if u, err := s.GetUser(ctx, alice); err != nil || u.Handle != "alice" || u.Role != store.RoleAdmin {
		t.Errorf("user after reopen: %+v, %v", u, err)
	}
	if ks, err := s.SealedKeys(ctx, room, alice); err != nil || len(ks) != 1 || string(ks[0].Sealed) != string(key.Sealed) {
		t.Errorf("sealed keys after reopen: %+v, %v", ks, err)
	}
	if err := s.UseNonce(ctx, alice, "n1", now, now.Add(time.Hour)); !errors.Is(err, store.ErrReplay) {
		t.Errorf("nonce after reopen: %v, want ErrReplay", err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unibus.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(t.Context(), fmt.Sprintf("PRAGMA user_version = %d", len(migrations)+1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(t.Context(), path)
	if err == nil {
		s.Close()
		t.Fatal("Open accepted a database with a newer schema")
	}
	if !strings.Contains(err.Error(), "newer than this unibus supports") {
		t.Errorf("error does not say why: %v", err)
	}
}

func TestSchemaVersion(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "unibus.db"))
	var v int
	if err := s.r.QueryRowContext(t.Context(), "PRAGMA user_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != len(migrations) {
		t.Errorf("user_version %d, want %d", v, len(migrations))
	}
}

// The path goes to SQLite as an escaped URI: '?' and '#' are file name
// characters, not parameters.
func TestPathWithURICharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?mode=ro#x%41")
	path := filepath.Join(dir, "uni bus.db")
	s := openTest(t, path)
	if err := s.UseNonce(t.Context(), "k", "n", time.Now(), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at the given path: %v", err)
	}
}

func countNonces(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.r.QueryRowContext(t.Context(), `SELECT count(*) FROM nonces`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSweep(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "unibus.db"))
	s.sweepEvery = 1 << 62 // no opportunistic sweep in this test
	ctx := t.Context()
	now := time.Now()
	for i := range 10 {
		if err := s.UseNonce(ctx, "k", fmt.Sprint(i), now, now.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.Sweep(ctx, now.Add(4*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 || countNonces(t, s) != 5 { // expiries 0..4 minutes are gone
		t.Errorf("Sweep deleted %d, %d left; want 5 and 5", n, countNonces(t, s))
	}
	if err := s.UseNonce(ctx, "k", "9", now, now.Add(time.Hour)); !errors.Is(err, store.ErrReplay) {
		t.Errorf("a live nonce was swept: %v", err)
	}
}

func TestUseNonceSweepsPeriodically(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "unibus.db"))
	s.sweepEvery = 8
	ctx := t.Context()
	start := time.Now()
	for i := range 100 {
		now := start.Add(time.Duration(i) * time.Second)
		if err := s.UseNonce(ctx, "k", fmt.Sprint(i), now, now.Add(5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	// At most the last sweep's survivors (expiring after it) plus the uses since.
	if n := countNonces(t, s); n > 8+5 {
		t.Errorf("%d nonces left after 100 uses with a 5 s lifetime; the table is not swept", n)
	}
}

// Two stores on one file stand for membershipd and an admin CLI: the write
// lock (BEGIN IMMEDIATE, busy_timeout) serializes them too.
func TestTwoProcessesShareTheRules(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unibus.db")
	a, b := openTest(t, path), openTest(t, path)
	now := time.Now()
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() { errs[i] = s.UseNonce(t.Context(), "k", "same", now, now.Add(time.Minute)) })
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrReplay):
			t.Errorf("use %d: %v", i, err)
		}
	}
	if ok != 1 {
		t.Errorf("%d uses accepted across two stores, want 1", ok)
	}
}

func TestClosedIsUnavailable(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "unibus.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.GetUser(ctx, strings.Repeat("a", 64)); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("GetUser after Close: %v, want ErrUnavailable", err)
	}
	if err := s.UseNonce(ctx, "k", "n", time.Now(), time.Now().Add(time.Minute)); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("UseNonce after Close: %v, want ErrUnavailable (fail closed)", err)
	}
}

// TestCorruptFileRefused: a database file whose pages were damaged (a bit
// flip, a bad sector) or that is not a database at all is refused at open
// with ErrCorrupt, rather than served with some users and rooms missing.
func TestCorruptFileRefused(t *testing.T) {
	for _, c := range []struct {
		name   string
		offset func(size int64) int64 // where the damage starts
	}{
		{"damaged b-tree pages", func(size int64) int64 { return size / 2 }},
		{"damaged header", func(int64) int64 { return 0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "unibus.db")
			ctx := t.Context()
			s, err := Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			for i := range 300 {
				u := store.User{SignPub: fmt.Sprintf("%064x", i+1), Handle: fmt.Sprintf("user-%d", i), Role: store.RoleMember,
					Status: store.StatusActive, CreatedAt: now, UpdatedAt: now}
				if err := s.AddUser(ctx, u); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			fi, err := f.Stat()
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() < 16<<10 {
				t.Fatalf("the database is %d bytes: the checkpoint did not reach the file", fi.Size())
			}
			junk := make([]byte, 8<<10)
			for i := range junk {
				junk[i] = byte(i*7 + 3)
			}
			if _, err := f.WriteAt(junk, c.offset(fi.Size())); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			s, err = Open(ctx, path)
			if err == nil {
				s.Close()
				t.Fatal("Open accepted a corrupt database")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "backup") {
				t.Fatalf("Open: %v; want ErrCorrupt saying to restore a backup", err)
			}
			if testing.Verbose() {
				t.Log(err)
			}
		})
	}
}
