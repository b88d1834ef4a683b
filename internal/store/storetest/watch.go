package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/store"
)

var watchTests = []test{
	{"WatchReportsOwnWrites", testWatchReportsOwnWrites},
	{"WatchReportsOtherHandlesWrites", testWatchReportsOtherHandlesWrites},
	{"WatchEndsWithContext", testWatchEndsWithContext},
}

// watchWait bounds how long the suite waits for a change to be reported:
// generous, since kv reports from its watch and SQLite finds another
// process's commits by polling.
const watchWait = 20 * time.Second

// recorder collects what a Watch callback receives.
type recorder struct {
	mu      sync.Mutex
	changes []store.Change
	calls   int // concurrent calls in progress, to catch overlaps
	overlap bool
}

func (r *recorder) fn(c store.Change) {
	r.mu.Lock()
	r.calls++
	if r.calls > 1 {
		r.overlap = true
	}
	r.mu.Unlock()
	time.Sleep(time.Millisecond) // widen any overlap
	r.mu.Lock()
	r.changes = append(r.changes, c)
	r.calls--
	r.mu.Unlock()
}

func (r *recorder) snapshot() []store.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.changes)
}

// watch registers a recorder on s until the end of the test.
func (f *fixture) watch(s store.Store) *recorder {
	f.t.Helper()
	r := &recorder{}
	if err := s.Watch(f.ctx, r.fn); err != nil {
		f.t.Fatalf("Watch: %v", err)
	}
	return r
}

// await waits until a change after index from matches, and returns the
// index after it; it fails the test after watchWait.
func (f *fixture) await(r *recorder, from int, what string, match func(store.Change) bool) int {
	f.t.Helper()
	next := 0
	harness.EventuallyNoError(f.t, watchWait, func() error {
		got := r.snapshot()
		for i := from; i < len(got); i++ {
			if match(got[i]) {
				next = i + 1
				return nil
			}
		}
		return fmt.Errorf("reported: %s", describeAll(got[min(from, len(got)):]))
	}, "%s reported", what)
	return next
}

func describeAll(cs []store.Change) string {
	out := ""
	for _, c := range cs {
		out += fmt.Sprintf("\n\t%+v", c)
	}
	if out == "" {
		return "nothing"
	}
	return out
}

func userChange(pub string, added, status, kem bool) func(store.Change) bool {
	return func(c store.Change) bool {
		return c.Kind == store.ChangeUser && c.User == pub && c.UserAdded == added && c.StatusChanged == status && c.KEMKeyChanged == kem
	}
}

func roomChange(room string, joined, left []string) func(store.Change) bool {
	return func(c store.Change) bool {
		return c.Kind == store.ChangeRoom && c.Room == room && slices.Equal(c.Joined, joined) && slices.Equal(c.Left, left)
	}
}

// Every write of users and rooms made through the store is reported as
// what it changed — the user added, its KEM key, its revocation; the room
// created with its owner, a member joining, a rotation, a member leaving —
// and a change reported as the store's own (Own) is reported before the
// write returns. Nonces and audit entries are not changes. Callbacks never
// overlap, and ChangeVersion is non-zero.
func testWatchReportsOwnWrites(f *fixture) {
	r := f.watch(f.s)
	if v, err := f.s.ChangeVersion(f.ctx); err != nil || v == 0 {
		f.t.Fatalf("ChangeVersion while watched: %d, %v", v, err)
	}
	next := 0
	step := func(what string, write func() error, match func(store.Change) bool) {
		f.t.Helper()
		if err := write(); err != nil {
			f.t.Fatalf("%s: %v", what, err)
		}
		before := r.snapshot()
		next = f.await(r, next, what, match)
		if c := r.snapshot()[next-1]; c.Own && next > len(before) {
			f.t.Fatalf("%s: reported as the store's own (%+v), but after the write returned", what, c)
		}
	}
	alice, bob := signPub("alice"), signPub("bob")
	step("AddUser", func() error {
		return f.s.AddUser(f.ctx, store.User{SignPub: alice, Handle: "alice", Role: store.RoleMember, Status: store.StatusActive, CreatedAt: at(0), UpdatedAt: at(0)})
	}, userChange(alice, true, false, false))
	step("AddUser bob", func() error {
		return f.s.AddUser(f.ctx, store.User{SignPub: bob, Handle: "bob", Role: store.RoleMember, Status: store.StatusActive, CreatedAt: at(0), UpdatedAt: at(0)})
	}, userChange(bob, true, false, false))
	step("SetKEMKey", func() error {
		return f.s.SetKEMKey(f.ctx, alice, filler(kemPubSize, "kem alice"), filler(sigSize, "kem sig alice"), at(1))
	}, userChange(alice, false, false, true))
	// Nonces and audit entries are not reported: the next change after
	// them is the room's.
	if err := f.s.UseNonce(f.ctx, alice, nonce("watch"), at(1), at(1).Add(window)); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.s.AppendAudit(f.ctx, audit.Record{Time: at(1), Actor: alice, Via: audit.ViaAPI, Action: audit.ActionRoomCreate, Room: roomID("watched")}); err != nil {
		f.t.Fatal(err)
	}
	room := roomID("watched")
	step("CreateRoom", func() error {
		r := newRoom("watched", alice)
		return f.s.CreateRoom(f.ctx, r, store.Member{Room: r.ID, SignPub: alice, Role: store.RoomOwner, AddedBy: alice, AddedAt: at(1)}, sealedKey(r.ID, 1, alice, alice, 0))
	}, roomChange(room, []string{alice}, nil))
	step("AddMember", func() error {
		return f.s.AddMember(f.ctx, store.Member{Room: room, SignPub: bob, Role: store.RoomMember, AddedBy: alice, AddedAt: at(2)}, []store.SealedKey{sealedKey(room, 1, bob, alice, 0)})
	}, roomChange(room, []string{bob}, nil))
	step("Rotate", func() error {
		return f.s.Rotate(f.ctx, store.Rotation{Room: room, Epoch: 2, By: alice, Reason: store.EpochRotate, Keys: keysFor(room, 2, alice, alice, bob), At: at(3)})
	}, roomChange(room, nil, nil))
	step("RemoveMember", func() error { return f.s.RemoveMember(f.ctx, room, bob, nil) }, roomChange(room, nil, []string{bob}))
	step("RevokeUser", func() error { _, err := f.s.RevokeUser(f.ctx, bob, at(4)); return err }, userChange(bob, false, true, false))
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.overlap {
		f.t.Error("Watch called its callback concurrently with itself")
	}
}

// A write through a second handle on the same data (another process on
// the same SQLite file, another node on the same buckets) is reported to a
// watcher of the first, as what it changed or as ChangeAll; and the
// first's ChangeVersion moves, or Watch reports it, so that a cache
// checked by either never serves what the other handle changed.
func testWatchReportsOtherHandlesWrites(f *fixture) {
	alice := f.addUser("alice", store.RoleMember).SignPub
	r := f.watch(f.s)
	v0, err := f.s.ChangeVersion(f.ctx)
	if err != nil || v0 == 0 {
		f.t.Fatalf("ChangeVersion while watched: %d, %v", v0, err)
	}
	other := f.reopen()
	if _, err := other.RevokeUser(f.ctx, alice, at(5)); err != nil {
		f.t.Fatalf("RevokeUser through the second handle: %v", err)
	}
	v1, err := f.s.ChangeVersion(f.ctx)
	if err != nil {
		f.t.Fatalf("ChangeVersion: %v", err)
	}
	f.await(r, 0, "a revocation through a second handle", func(c store.Change) bool {
		return c.Kind == store.ChangeAll || c.Kind == store.ChangeUser && c.User == alice && c.StatusChanged && !c.Own
	})
	if v1 == v0 {
		// The version did not move: the backend relies on its watch,
		// which must report every write whoever made it, specifically.
		for _, c := range r.snapshot() {
			if c.Kind == store.ChangeAll {
				f.t.Errorf("ChangeVersion stayed %d across another handle's write, which Watch reported only as ChangeAll", v0)
			}
		}
	}
	if u := f.getUser(alice); u.Status != store.StatusRevoked {
		f.t.Fatalf("the first handle reads status %s after the second revoked", u.Status)
	}
}

// A watcher whose context ended is not called again, and other watchers
// keep theirs.
func testWatchEndsWithContext(f *fixture) {
	ctx, cancel := context.WithCancel(f.ctx)
	var mu sync.Mutex
	ended := 0
	if err := f.s.Watch(ctx, func(store.Change) { mu.Lock(); ended++; mu.Unlock() }); err != nil {
		f.t.Fatalf("Watch: %v", err)
	}
	kept := f.watch(f.s)
	cancel()
	alice := f.addUser("alice", store.RoleMember).SignPub
	f.await(kept, 0, "a user added", userChange(alice, true, false, false))
	mu.Lock()
	defer mu.Unlock()
	if ended != 0 {
		f.t.Errorf("a watcher whose context ended was called %d times", ended)
	}
}

// A store that is not open yet answers every method but Watch and Close
// with ErrUnavailable (callers deny), accepts a Watch, and closes
// promptly: Close stops the open rather than wait out its budget.
func testNotOpenYet(t *testing.T, s store.Store) {
	ctx := t.Context()
	alice, room := signPub("alice"), roomID("r")
	u := store.User{SignPub: alice, Handle: "alice", Role: store.RoleAdmin, Status: store.StatusActive}
	m := store.Member{Room: room, SignPub: alice, Role: store.RoomOwner}
	rot := store.Rotation{Room: room, Epoch: 2, By: alice}
	calls := map[string]func() error{
		"AddUser":           func() error { return s.AddUser(ctx, u) },
		"GetUser":           func() error { _, err := s.GetUser(ctx, alice); return err },
		"GetUserByHandle":   func() error { _, err := s.GetUserByHandle(ctx, "alice"); return err },
		"ListUsers":         func() error { _, err := s.ListUsers(ctx); return err },
		"RevokeUser":        func() error { _, err := s.RevokeUser(ctx, alice, at(0)); return err },
		"SetKEMKey":         func() error { return s.SetKEMKey(ctx, alice, []byte("k"), []byte("s"), at(0)) },
		"CountActiveAdmins": func() error { _, err := s.CountActiveAdmins(ctx); return err },
		"CreateRoom":        func() error { return s.CreateRoom(ctx, newRoom("r", alice), m, sealedKey(room, 1, alice, alice, 0)) },
		"GetRoom":           func() error { _, err := s.GetRoom(ctx, room); return err },
		"ListRooms":         func() error { _, err := s.ListRooms(ctx, alice); return err },
		"RoomIDs":           func() error { _, err := s.RoomIDs(ctx, alice); return err },
		"ListMembers":       func() error { _, err := s.ListMembers(ctx, room); return err },
		"GetMember":         func() error { _, err := s.GetMember(ctx, room, alice); return err },
		"AddMember":         func() error { return s.AddMember(ctx, m, nil) },
		"RemoveMember":      func() error { return s.RemoveMember(ctx, room, alice, nil) },
		"Rotate":            func() error { return s.Rotate(ctx, rot) },
		"SealedKeys":        func() error { _, err := s.SealedKeys(ctx, room, alice); return err },
		"Epochs":            func() error { _, err := s.Epochs(ctx, room); return err },
		"UseNonce":          func() error { return s.UseNonce(ctx, alice, "n", at(0), at(1)) },
		"AppendAudit": func() error {
			_, err := s.AppendAudit(ctx, audit.Record{Time: at(0), Actor: alice, Via: audit.ViaAPI, Action: audit.ActionUserAdd})
			return err
		},
		"AuditEntries":  func() error { _, err := s.AuditEntries(ctx, 0, 10); return err },
		"ChangeVersion": func() error { _, err := s.ChangeVersion(ctx); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s on a store not open yet: %v, want ErrUnavailable", name, err)
		}
	}
	if err := s.Watch(ctx, func(store.Change) {}); err != nil {
		t.Errorf("Watch on a store not open yet: %v", err)
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Close of a store still opening took %v: it waited for the open instead of stopping it", d)
	}
}
