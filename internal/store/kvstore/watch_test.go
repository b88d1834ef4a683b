package kvstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/jsretry/jsretrytest"
	"github.com/unibus/unibus/internal/store/kvstore"
)

// describe is a short form of a change for comparisons.
func describe(c store.Change) string {
	short := func(pubs []string) string {
		var out []string
		for _, p := range pubs {
			out = append(out, p[:1])
		}
		return strings.Join(out, ",")
	}
	switch c.Kind {
	case store.ChangeUser:
		return fmt.Sprintf("user %s added=%v status=%v kem=%v", c.User[:1], c.UserAdded, c.StatusChanged, c.KEMKeyChanged)
	case store.ChangeRoom:
		return fmt.Sprintf("room joined=%s left=%s", short(c.Joined), short(c.Left))
	}
	return fmt.Sprintf("kind %d", c.Kind)
}

// Watch reports, to a watcher on one store handle (one node), what
// changed through another handle (another node): a KEM key, a member
// added or removed, a rotation, a revocation, a new user. It does not
// report the state that existed when it started, nor a write that changes
// none of these (a lease, a nonce).
func TestWatchReportsOtherNodesWrites(t *testing.T) {
	writer, n := openStore(t)
	ctx := t.Context()
	addUsers(t, writer, alice, bob, carol)
	if err := writer.CreateRoom(ctx, store.Room{ID: room, Name: "ops", CreatedBy: alice, CreatedAt: t0}, store.Member{SignPub: alice, AddedBy: alice, AddedAt: t0}, key(1, alice, alice, "a1")); err != nil {
		t.Fatal(err)
	}
	watcher, err := kvstore.Open(ctx, n.Control(t), kvstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	if _, err := watcher.ChangeVersion(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("ChangeVersion without a watch: %v, want ErrUnavailable", err)
	}
	var mu sync.Mutex
	var got []string
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := watcher.Watch(wctx, func(c store.Change) {
		if c.Own {
			t.Errorf("the kv store reported %+v as its own", c)
		}
		mu.Lock()
		got = append(got, describe(c))
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	v1, err := watcher.ChangeVersion(ctx)
	if err != nil || v1 == 0 {
		t.Fatalf("ChangeVersion with a watch: %d %v", v1, err)
	}
	expect := func(step string, want ...string) {
		t.Helper()
		harness.EventuallyNoError(t, 5*time.Second, func() error {
			mu.Lock()
			g := slices.Clone(got)
			mu.Unlock()
			if !slices.Equal(g, want) {
				return fmt.Errorf("changes\n%q\nwant\n%q", g, want)
			}
			return nil
		}, "%s", step)
		mu.Lock()
		got = nil
		mu.Unlock()
	}
	if err := writer.SetKEMKey(ctx, carol, []byte("kem"), []byte("sig"), t0); err != nil {
		t.Fatal(err)
	}
	expect("a KEM key", "user c added=false status=false kem=true")
	if err := writer.UseNonce(ctx, alice, "n1", t0, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := writer.AddMember(ctx, store.Member{Room: room, SignPub: bob, Role: store.RoomMember, AddedBy: alice, AddedAt: t0}, []store.SealedKey{key(1, bob, alice, "b1")}); err != nil {
		t.Fatal(err)
	}
	// The addition takes and releases the room's lease: one change.
	expect("a nonce, then bob added", "room joined=b left=")
	if err := writer.Rotate(ctx, store.Rotation{Room: room, Epoch: 2, By: alice, Keys: []store.SealedKey{key(2, alice, alice, "a2"), key(2, bob, alice, "b2")}, At: t0}); err != nil {
		t.Fatal(err)
	}
	expect("a rotation", "room joined= left=")
	if err := writer.RemoveMember(ctx, room, bob, nil); err != nil {
		t.Fatal(err)
	}
	expect("bob removed, the rotation pending", "room joined= left=b")
	if _, err := writer.RevokeUser(ctx, carol, t0); err != nil {
		t.Fatal(err)
	}
	expect("carol revoked", "user c added=false status=true kem=false")
	dave := strings.Repeat("d", 64)
	if err := writer.AddUser(ctx, store.User{SignPub: dave, Handle: "dave", Role: store.RoleMember, Status: store.StatusActive, CreatedAt: t0, UpdatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	expect("dave added", "user d added=true status=false kem=false")
	if v2, err := watcher.ChangeVersion(ctx); err != nil || v2 != v1 {
		t.Fatalf("ChangeVersion moved with the watch running: %d → %d (%v)", v1, v2, err)
	}

	// After its context ends, a watcher hears nothing more.
	cancel()
	if _, err := writer.RevokeUser(ctx, dave, t0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // a window for a wrong call: nothing to wait for
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 0 {
		t.Fatalf("a watcher whose context ended was called: %q", got)
	}
}

// A watcher registered on a store that is not open yet is established by
// the open, before the store answers; Close stops an open in progress.
func TestWatchBeforeOpen(t *testing.T) {
	s := kvstore.New(jsretrytest.NoJetStream(t), kvstore.Options{Bootstrap: 10 * time.Minute})
	if err := s.Watch(t.Context(), func(store.Change) {}); err != nil {
		t.Fatalf("Watch on a store not open yet: %v", err)
	}
	if _, err := s.GetUser(t.Context(), alice); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "not open yet") {
		t.Fatalf("GetUser before the open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	_, n := openStore(t)
	late := kvstore.New(n.Control(t), kvstore.Options{})
	defer late.Close()
	changes := make(chan store.Change, 10)
	if err := late.Watch(t.Context(), func(c store.Change) { changes <- c }); err != nil {
		t.Fatal(err)
	}
	if err := late.WaitOpen(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := late.ChangeVersion(t.Context()); err != nil {
		t.Fatalf("the open did not establish the watch: %v", err)
	}
	addUsers(t, late, alice)
	select {
	case c := <-changes:
		if c.Kind != store.ChangeUser || c.User != alice || !c.UserAdded {
			t.Fatalf("change %+v", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch established by the open reported nothing")
	}
}
