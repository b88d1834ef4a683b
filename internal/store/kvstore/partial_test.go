package kvstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/kvstore"
)

// clock is a settable clock for leases and handle claims.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

var (
	alice = strings.Repeat("a", 64)
	bob   = strings.Repeat("b", 64)
	carol = strings.Repeat("c", 64)
	room  = strings.Repeat("0", 31) + "1"
	t0    = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
)

func key(epoch uint64, member, sealer, tag string) store.SealedKey {
	return store.SealedKey{Room: room, Epoch: epoch, Member: member, Sealer: sealer, Sealed: []byte("sealed " + tag), Sig: []byte("sig " + tag)}
}

func addUsers(t *testing.T, s store.Store, pubs ...string) {
	t.Helper()
	for i, p := range pubs {
		u := store.User{SignPub: p, Handle: "user" + string(rune('a'+i)), Role: store.RoleMember, Status: store.StatusActive, CreatedAt: t0, UpdatedAt: t0}
		if err := s.AddUser(t.Context(), u); err != nil {
			t.Fatal(err)
		}
	}
}

// A writer that crashed holding a room's lease, after storing sealed keys:
// its keys are invisible, the room waits for the lease, and the next write
// after expiry goes through and sees only its own keys.
func TestCrashedWriterLeavesNothingVisible(t *testing.T) {
	s, n := openStore(t)
	clk := &clock{now: t0}
	s2, err := kvstore.Open(t.Context(), n.Control(t), kvstore.Options{Now: clk.Now, LeaseTTL: time.Minute, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	addUsers(t, s2, alice, bob, carol)
	ctx := t.Context()
	if err := s2.CreateRoom(ctx, store.Room{ID: room, Name: "ops", CreatedBy: alice, CreatedAt: t0}, store.Member{SignPub: alice, AddedBy: alice, AddedAt: t0}, key(1, alice, alice, "a1")); err != nil {
		t.Fatal(err)
	}
	if err := s2.AddMember(ctx, store.Member{Room: room, SignPub: bob, Role: store.RoomMember, AddedBy: alice, AddedAt: t0}, []store.SealedKey{key(1, bob, alice, "b1")}); err != nil {
		t.Fatal(err)
	}

	// Simulate the crash: take the lease as a writer would, store a key for
	// epoch 2 sealed to carol (not a member), and stop.
	js, _ := jetstream.New(n.Control(t))
	members, err := js.KeyValue(ctx, kvstore.BucketMembers)
	if err != nil {
		t.Fatal(err)
	}
	e, err := members.Get(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	json.Unmarshal(e.Value(), &st)
	st["lease"] = map[string]any{"write": "deadbeefdeadbeef", "until": t0.Add(time.Minute)}
	b, _ := json.Marshal(st)
	if _, err := members.Update(ctx, room, b, e.Revision()); err != nil {
		t.Fatal(err)
	}
	keys, _ := js.KeyValue(ctx, kvstore.BucketRoomKeys)
	crashed, _ := json.Marshal(map[string]any{"sealer": alice, "sealed": []byte("crashed"), "sig": []byte("x"), "write": "deadbeefdeadbeef"})
	for _, m := range []string{alice, carol} {
		if _, err := keys.Put(ctx, room+"."+m+".2", crashed); err != nil {
			t.Fatal(err)
		}
	}

	// Readers: the room is still at epoch 1; nobody sees the crashed keys.
	if r, err := s2.GetRoom(ctx, room); err != nil || r.Epoch != 1 {
		t.Fatalf("GetRoom: %+v, %v", r, err)
	}
	ks, err := s2.SealedKeys(ctx, room, alice)
	if err != nil || len(ks) != 1 {
		t.Fatalf("alice's keys during the lease: %d, %v; want only epoch 1", len(ks), err)
	}
	// A writer waits for the live lease, then gives up as unavailable.
	rot := store.Rotation{Room: room, Epoch: 2, By: alice, Keys: []store.SealedKey{key(2, alice, alice, "a2"), key(2, bob, alice, "b2")}, At: t0}
	if err := s2.Rotate(ctx, rot); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("rotate under a live lease: %v, want ErrUnavailable", err)
	}
	// Once the lease has expired the next write takes over.
	clk.add(2 * time.Minute)
	if err := s2.Rotate(ctx, rot); err != nil {
		t.Fatalf("rotate after the lease expired: %v", err)
	}
	ks, _ = s2.SealedKeys(ctx, room, alice)
	if len(ks) != 2 || string(ks[1].Sealed) != "sealed a2" {
		t.Fatalf("alice's keys: %+v", ks)
	}
	// carol is added later; the crashed epoch-2 key sealed to her stays invisible.
	if err := s.AddMember(ctx, store.Member{Room: room, SignPub: carol, Role: store.RoomMember, AddedBy: alice, AddedAt: t0}, []store.SealedKey{key(2, carol, alice, "c2")}); err != nil {
		t.Fatal(err)
	}
	if err := keys.Delete(ctx, room+"."+carol+".2"); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Put(ctx, room+"."+carol+".2", crashed); err != nil { // as if the crashed write landed last
		t.Fatal(err)
	}
	if ks, _ := s.SealedKeys(ctx, room, carol); len(ks) != 0 {
		t.Fatalf("carol sees a key of an uncommitted write: %+v", ks)
	}
}

// The rooms_by_member index can only narrow access: a stale entry (a crash
// after the state record dropped the member) grants nothing, and a missing
// one is repaired by Repair or by the next write.
func TestIndexNeverWidensAccess(t *testing.T) {
	s, n := openStore(t)
	ctx := t.Context()
	addUsers(t, s, alice, bob)
	if err := s.CreateRoom(ctx, store.Room{ID: room, Name: "ops", CreatedBy: alice, CreatedAt: t0}, store.Member{SignPub: alice, AddedBy: alice, AddedAt: t0}, key(1, alice, alice, "a1")); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(n.Control(t))
	idx, _ := js.KeyValue(ctx, kvstore.BucketRoomsByMember)
	// bob's index claims the room, but bob is not in its state record.
	if _, err := idx.Put(ctx, bob, []byte(`{"rooms":["`+room+`"]}`)); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.RoomIDs(ctx, bob); err != nil || len(ids) != 0 {
		t.Fatalf("RoomIDs(bob) with a stale index entry: %v, %v; want none", ids, err)
	}
	// alice's entry is lost: she has no data-plane rooms until repaired.
	if err := idx.Delete(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if ids, _ := s.RoomIDs(ctx, alice); len(ids) != 0 {
		t.Fatalf("RoomIDs(alice) without an index entry: %v", ids)
	}
	fixed, err := s.Repair(ctx)
	if err != nil || fixed != 1 {
		t.Fatalf("Repair: fixed %d, %v; want 1", fixed, err)
	}
	if ids, _ := s.RoomIDs(ctx, alice); !slices.Equal(ids, []string{room}) {
		t.Fatalf("RoomIDs(alice) after Repair: %v", ids)
	}
}

// A handle claim left by a failed registration blocks the handle only for
// the lease time; a claim of a registered user blocks it for good.
func TestDanglingHandleClaim(t *testing.T) {
	_, n := openStore(t)
	clk := &clock{now: t0}
	s, err := kvstore.Open(t.Context(), n.Control(t), kvstore.Options{Now: clk.Now, LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	js, _ := jetstream.New(n.Control(t))
	users, _ := js.KeyValue(ctx, kvstore.BucketUsers)
	claim, _ := json.Marshal(map[string]any{"sign_pub": carol, "at": t0})
	if _, err := users.Create(ctx, "h.616c696365", claim); err != nil { // hex("alice")
		t.Fatal(err)
	}
	u := store.User{SignPub: alice, Handle: "alice", Role: store.RoleMember, Status: store.StatusActive, CreatedAt: t0, UpdatedAt: t0}
	if err := s.AddUser(ctx, u); !errors.Is(err, store.ErrHandleTaken) {
		t.Fatalf("AddUser during a fresh dangling claim: %v, want ErrHandleTaken", err)
	}
	if _, err := s.GetUserByHandle(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUserByHandle through a dangling claim: %v, want ErrNotFound", err)
	}
	clk.add(2 * time.Minute)
	if err := s.AddUser(ctx, u); err != nil {
		t.Fatalf("AddUser after the claim expired: %v", err)
	}
	if got, err := s.GetUserByHandle(ctx, "alice"); err != nil || got.SignPub != alice {
		t.Fatalf("GetUserByHandle: %+v, %v", got, err)
	}
	clk.add(time.Hour)
	u2 := u
	u2.SignPub = bob
	if err := s.AddUser(ctx, u2); !errors.Is(err, store.ErrHandleTaken) {
		t.Fatalf("AddUser with a registered user's handle: %v, want ErrHandleTaken", err)
	}
}

// Every bucket answers gets from its leader: direct gets are off.
func TestDirectGetsOff(t *testing.T) {
	s, _ := openStore(t)
	for _, b := range kvstore.Buckets {
		info, err := s.StreamFor(b).Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.AllowDirect {
			t.Errorf("%s: direct gets are on", b)
		}
		if b == kvstore.BucketNonces && info.Config.Storage != jetstream.MemoryStorage {
			t.Errorf("nonces bucket storage %v, want memory", info.Config.Storage)
		}
	}
}

// A replay through a second store handle (another node's view of the same
// buckets) is refused: the check is the bucket's, not a process's.
func TestReplayAcrossHandles(t *testing.T) {
	s1, n := openStore(t)
	s2, err := kvstore.Open(t.Context(), n.Control(t), kvstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := s1.UseNonce(t.Context(), alice, "n1", now, now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s2.UseNonce(t.Context(), alice, "n1", now, now.Add(2*time.Minute)); !errors.Is(err, store.ErrReplay) {
		t.Fatalf("replay through another handle: %v, want ErrReplay", err)
	}
}

// With JetStream gone, every operation fails as unavailable (callers deny),
// and a nonce is never accepted.
func TestFailClosedWhenJetStreamIsGone(t *testing.T) {
	s, n := openStore(t)
	addUsers(t, s, alice)
	n.Shutdown()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	now := time.Now()
	if err := s.UseNonce(ctx, alice, "n1", now, now.Add(time.Minute)); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("UseNonce with JetStream down: %v, want ErrUnavailable", err)
	}
	if _, err := s.GetUser(ctx, alice); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("GetUser with JetStream down: %v, want ErrUnavailable", err)
	}
	if _, err := s.RoomIDs(ctx, alice); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("RoomIDs with JetStream down: %v, want ErrUnavailable", err)
	}
}

// Open retries bucket creation for the bootstrap budget, then fails with a
// message that says what to check.
func TestOpenBootstrapBudget(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true}) // no JetStream
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	_, err = kvstore.Open(t.Context(), nc, kvstore.Options{Bootstrap: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "bootstrap budget") || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open without JetStream: %v", err)
	}
	if time.Since(start) < 2*time.Second {
		t.Errorf("Open gave up after %v, before its budget", time.Since(start))
	}
}
