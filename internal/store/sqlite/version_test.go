package sqlite

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/store"
)

// ChangeVersion stays put while nothing is committed and moves on every
// commit: the store's own (a user added, a nonce used) and another
// process's (a second Open of the file, as 'membershipd user revoke --db'
// does); a failed read of it is an error, never a stale value.
func TestChangeVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unibus.db")
	ctx := t.Context()
	s := openTest(t, path)
	version := func() uint64 {
		t.Helper()
		v, err := s.ChangeVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	seen := map[uint64]string{}
	v0 := version()
	for range 3 {
		if _, err := s.GetUser(ctx, strings.Repeat("ab", 32)); err == nil || version() != v0 {
			t.Fatalf("a read moved the version (or found a user in an empty store)")
		}
	}
	seen[v0] = "start"
	expectNew := func(what string) uint64 {
		t.Helper()
		v := version()
		if prev, ok := seen[v]; ok {
			t.Fatalf("after %s the version is %d, as after %s", what, v, prev)
		}
		seen[v] = what
		if again := version(); again != v {
			t.Fatalf("after %s, with nothing committed, the version moved %d → %d", what, v, again)
		}
		return v
	}

	alice := strings.Repeat("ab", 32)
	now := time.Now()
	if err := s.AddUser(ctx, store.User{SignPub: alice, Handle: "alice", Role: store.RoleAdmin, Status: store.StatusActive, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	expectNew("this store's AddUser")
	if err := s.UseNonce(ctx, alice, "n1", now, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	expectNew("this store's UseNonce")

	other, err := Open(ctx, path) // another process's view of the file
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.RevokeUser(ctx, alice, now); err != nil {
		t.Fatal(err)
	}
	expectNew("another connection's RevokeUser")
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}

	// A broken connection is reported, and the one after it starts a
	// version never handed out before.
	s.cv.mu.Lock()
	s.cv.conn.Close()
	s.cv.mu.Unlock()
	if _, err := s.ChangeVersion(ctx); err == nil {
		t.Fatal("ChangeVersion on a closed connection: no error")
	}
	expectNew("a new connection")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.ChangeVersion(cctx); err == nil {
		t.Error("ChangeVersion with a cancelled context: no error")
	}
}
