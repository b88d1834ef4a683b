package kvstore_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/internal/testnode"
)

// bucket binds a bucket of node n directly, to read or plant records.
func bucket(t *testing.T, n *testnode.Node, name string) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(n.Control(t))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// record reads a record as generic JSON; nil when absent.
func record(t *testing.T, kv jetstream.KeyValue, key string) map[string]any {
	t.Helper()
	e, err := kv.Get(t.Context(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		t.Fatalf("%s/%s: %v", kv.Bucket(), key, err)
	}
	return m
}

// plant puts v as JSON at key.
func plant(t *testing.T, kv jetstream.KeyValue, key string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), key, b); err != nil {
		t.Fatal(err)
	}
}

// updateState applies fn to the room's state record as generic JSON.
func updateState(t *testing.T, members jetstream.KeyValue, fn func(map[string]any)) {
	t.Helper()
	e, err := members.Get(t.Context(), room)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		t.Fatal(err)
	}
	fn(st)
	b, _ := json.Marshal(st)
	if _, err := members.Update(t.Context(), room, b, e.Revision()); err != nil {
		t.Fatal(err)
	}
}

func epochKey(epoch int) string { return fmt.Sprintf("%s.e.%d", room, epoch) }

func keyName(member string, epoch int) string { return fmt.Sprintf("%s.%s.%d", room, member, epoch) }

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("%s: %v, want ErrNotFound", what, err)
	}
}

// A rotation and an addition interrupted before their commit leave
// records that Epoch and SealedKey never show: tagged with a write the
// state record does not list, or for an epoch above the room's (even
// marked settled). After the lease expires the rotation goes through, and
// a record the interrupted writer stores late is still never shown.
func TestInterruptedWritesInvisibleToLookups(t *testing.T) {
	_, n := openStore(t)
	clk := &clock{now: t0}
	s, err := kvstore.Open(t.Context(), n.Control(t), kvstore.Options{Now: clk.Now, LeaseTTL: time.Minute, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	addUsers(t, s, alice, bob, carol)
	if err := s.CreateRoom(ctx, store.Room{ID: room, Name: "ops", CreatedBy: alice, CreatedAt: t0}, store.Member{SignPub: alice, AddedBy: alice, AddedAt: t0}, key(1, alice, alice, "a1")); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMember(ctx, store.Member{Room: room, SignPub: bob, Role: store.RoomMember, AddedBy: alice, AddedAt: t0}, []store.SealedKey{key(1, bob, alice, "b1")}); err != nil {
		t.Fatal(err)
	}
	members, keys, rooms := bucket(t, n, kvstore.BucketMembers), bucket(t, n, kvstore.BucketRoomKeys), bucket(t, n, kvstore.BucketRooms)

	const crashed = "deadbeefdeadbeef"
	updateState(t, members, func(st map[string]any) {
		st["lease"] = map[string]any{"write": crashed, "until": t0.Add(time.Minute)}
	})
	crashedKey := map[string]any{"sealer": alice, "sealed": []byte("crashed"), "sig": []byte("x"), "write": crashed}
	crashedEpoch := map[string]any{"epoch": 2, "by": carol, "reason": "rotate", "at": t0, "write": crashed}
	for _, m := range []string{alice, bob, carol} {
		plant(t, keys, keyName(m, 2), crashedKey)
	}
	plant(t, keys, keyName(carol, 1), crashedKey) // an addition of carol, interrupted
	plant(t, rooms, epochKey(2), crashedEpoch)
	// Records for an epoch above the room's are never shown, settled or not.
	plant(t, rooms, epochKey(3), map[string]any{"epoch": 3, "by": carol, "reason": "rotate", "at": t0, "settled": true})
	plant(t, keys, keyName(alice, 3), map[string]any{"sealer": carol, "sealed": []byte("stray"), "sig": []byte("x"), "settled": true})

	// lookups checks what no reader may see while the room is at epoch cur.
	lookups := func(when string, cur uint64) {
		t.Helper()
		for e := cur + 1; e <= 3; e++ {
			_, err := s.Epoch(ctx, room, e)
			wantNotFound(t, fmt.Sprintf("%s: Epoch(%d)", when, e), err)
			for _, m := range []string{alice, bob, carol} {
				_, err := s.SealedKey(ctx, room, m, e)
				wantNotFound(t, fmt.Sprintf("%s: SealedKey(%s, %d)", when, m[:1], e), err)
			}
		}
		_, err := s.SealedKey(ctx, room, carol, 1)
		wantNotFound(t, when+": SealedKey(carol, 1)", err)
		_, err = s.SealedKey(ctx, room, carol, 2)
		wantNotFound(t, when+": SealedKey(carol, 2)", err)
		if eps, err := s.Epochs(ctx, room); err != nil || uint64(len(eps)) != cur {
			t.Errorf("%s: Epochs: %d records, %v; want %d", when, len(eps), err, cur)
		}
		if ks, err := s.SealedKeys(ctx, room, alice); err != nil || uint64(len(ks)) != cur {
			t.Errorf("%s: SealedKeys(alice): %d keys, %v; want %d", when, len(ks), err, cur)
		}
	}
	lookups("during the lease", 1)

	clk.add(2 * time.Minute)
	rot := store.Rotation{Room: room, Epoch: 2, By: bob, Reason: store.EpochRotate, Keys: []store.SealedKey{key(2, alice, bob, "a2"), key(2, bob, bob, "b2")}, At: t0}
	if err := s.Rotate(ctx, rot); err != nil {
		t.Fatalf("rotate after the lease expired: %v", err)
	}
	// Epoch 3's leftovers are still above the room's epoch; epoch 2 is the real one.
	lookups("after the rotation", 2)
	e2, err := s.Epoch(ctx, room, 2)
	if err != nil || e2.CreatedBy != bob {
		t.Fatalf("Epoch(2) after the rotation: %+v, %v; want bob's", e2, err)
	}
	for _, m := range []string{alice, bob} {
		k, err := s.SealedKey(ctx, room, m, 2)
		if err != nil || k.Sealer != bob {
			t.Fatalf("SealedKey(%s, 2): %+v, %v; want bob's seal", m[:1], k, err)
		}
	}

	// The interrupted writer wakes up and stores its records late: they
	// replace the committed ones but are never shown.
	plant(t, rooms, epochKey(2), crashedEpoch)
	plant(t, keys, keyName(alice, 2), crashedKey)
	if e, err := s.Epoch(ctx, room, 2); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Epoch(2) after a late record of a lost write: %+v, %v; want ErrNotFound, never the lost write's", e, err)
	}
	if k, err := s.SealedKey(ctx, room, alice, 2); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SealedKey(alice, 2) after a late key of a lost write: %+v, %v; want ErrNotFound", k, err)
	}
}

// A successful write leaves every record it stored settled, and a state
// record with no lease and nothing unsettled.
func TestWriteSettles(t *testing.T) {
	s, n := openStore(t)
	ctx := t.Context()
	addUsers(t, s, alice, bob)
	if err := s.CreateRoom(ctx, store.Room{ID: room, Name: "ops", CreatedBy: alice, CreatedAt: t0}, store.Member{SignPub: alice, AddedBy: alice, AddedAt: t0}, key(1, alice, alice, "a1")); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMember(ctx, store.Member{Room: room, SignPub: bob, Role: store.RoomMember, AddedBy: alice, AddedAt: t0}, []store.SealedKey{key(1, bob, alice, "b1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Rotate(ctx, store.Rotation{Room: room, Epoch: 2, By: alice, Keys: []store.SealedKey{key(2, alice, alice, "a2"), key(2, bob, alice, "b2")}, At: t0}); err != nil {
		t.Fatal(err)
	}
	members, keys, rooms := bucket(t, n, kvstore.BucketMembers), bucket(t, n, kvstore.BucketRoomKeys), bucket(t, n, kvstore.BucketRooms)
	st := record(t, members, room)
	for _, field := range []string{"lease", "unsettled", "writes", "epochs"} {
		if v, ok := st[field]; ok {
			t.Errorf("state record has %q: %v", field, v)
		}
	}
	for _, name := range []string{keyName(alice, 1), keyName(bob, 1), keyName(alice, 2), keyName(bob, 2)} {
		if r := record(t, keys, name); r["settled"] != true {
			t.Errorf("sealed key %s not settled: %v", name, r)
		}
	}
	for _, e := range []int{1, 2} {
		if r := record(t, rooms, epochKey(e)); r["settled"] != true {
			t.Errorf("epoch record %d not settled: %v", e, r)
		}
	}
}

// A writer that stopped after its commit, before settling, leaves its
// write listed in the state record with its lease: its records stay
// visible, and the writer that takes the lease over settles them and
// drops the write.
func TestCommittedWriteSettledByNextWriter(t *testing.T) {
	_, n := openStore(t)
	clk := &clock{now: t0}
	s, err := kvstore.Open(t.Context(), n.Control(t), kvstore.Options{Now: clk.Now, LeaseTTL: time.Minute, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	addUsers(t, s, alice, bob)
	if err := s.CreateRoom(ctx, store.Room{ID: room, Name: "ops", CreatedBy: alice, CreatedAt: t0}, store.Member{SignPub: alice, AddedBy: alice, AddedAt: t0}, key(1, alice, alice, "a1")); err != nil {
		t.Fatal(err)
	}
	members, keys, rooms := bucket(t, n, kvstore.BucketMembers), bucket(t, n, kvstore.BucketRoomKeys), bucket(t, n, kvstore.BucketRooms)

	// The stopped write: bob added with his key, rotated to epoch 2, committed, nothing settled.
	const w = "c0ffeec0ffeec0ff"
	for _, m := range []string{alice, bob} {
		plant(t, keys, keyName(m, 2), map[string]any{"sealer": alice, "sealed": []byte("sealed " + m[:1] + "2"), "sig": []byte("sig"), "write": w})
	}
	plant(t, keys, keyName(bob, 1), map[string]any{"sealer": alice, "sealed": []byte("sealed b1"), "sig": []byte("sig"), "write": w})
	plant(t, rooms, epochKey(2), map[string]any{"epoch": 2, "by": alice, "reason": "rotate", "at": t0, "write": w})
	updateState(t, members, func(st map[string]any) {
		st["epoch"] = 2
		st["members"].(map[string]any)[bob] = map[string]any{"role": "member", "added_by": alice, "added_at": t0}
		st["unsettled"] = []any{map[string]any{"id": w, "members": []string{alice, bob}, "keys_from": 1, "keys_to": 2, "epochs_from": 2, "epochs_to": 2}}
		st["lease"] = map[string]any{"write": w, "until": t0.Add(time.Minute)}
	})
	if e, err := s.Epoch(ctx, room, 2); err != nil || e.CreatedBy != alice {
		t.Fatalf("Epoch(2) of the committed write: %+v, %v", e, err)
	}
	for _, m := range []string{alice, bob} {
		if _, err := s.SealedKey(ctx, room, m, 2); err != nil {
			t.Fatalf("SealedKey(%s, 2) of the committed write: %v", m[:1], err)
		}
	}

	clk.add(2 * time.Minute)
	if err := s.Rotate(ctx, store.Rotation{Room: room, Epoch: 3, By: bob, Keys: []store.SealedKey{key(3, alice, bob, "a3"), key(3, bob, bob, "b3")}, At: t0}); err != nil {
		t.Fatalf("rotate after the lease expired: %v", err)
	}
	st := record(t, members, room)
	if _, ok := st["unsettled"]; ok {
		t.Errorf("the stopped write is still unsettled: %v", st["unsettled"])
	}
	for _, name := range []string{keyName(alice, 2), keyName(bob, 2), keyName(bob, 1)} {
		if r := record(t, keys, name); r["settled"] != true || r["write"] != w {
			t.Errorf("sealed key %s of the stopped write: %v, want it settled", name, r)
		}
	}
	if r := record(t, rooms, epochKey(2)); r["settled"] != true {
		t.Errorf("epoch record 2 of the stopped write: %v, want it settled", r)
	}
	for e := uint64(1); e <= 3; e++ {
		for _, m := range []string{alice, bob} {
			if _, err := s.SealedKey(ctx, room, m, e); err != nil {
				t.Errorf("SealedKey(%s, %d): %v", m[:1], e, err)
			}
		}
		if _, err := s.Epoch(ctx, room, e); err != nil {
			t.Errorf("Epoch(%d): %v", e, err)
		}
	}
}

// stateSize is the byte size of the room's state record.
func stateSize(t *testing.T, members jetstream.KeyValue) int {
	t.Helper()
	e, err := members.Get(t.Context(), room)
	if err != nil {
		t.Fatal(err)
	}
	return len(e.Value())
}

// The number of rotations never caps a room: the state record stays the
// same size through thousands of rotations, and members joining and
// leaving, far below the record limit.
func TestStateRecordBounded(t *testing.T) {
	rotations := uint64(2000)
	if testing.Short() {
		rotations = 200
	}
	s, n := openStore(t)
	ctx := t.Context()
	addUsers(t, s, alice, bob)
	if err := s.CreateRoom(ctx, store.Room{ID: room, Name: "ops", CreatedBy: alice, CreatedAt: t0}, store.Member{SignPub: alice, AddedBy: alice, AddedAt: t0}, key(1, alice, alice, "a1")); err != nil {
		t.Fatal(err)
	}
	members := bucket(t, n, kvstore.BucketMembers)
	first := stateSize(t, members)
	largest := first
	start := time.Now()
	for e := uint64(2); e <= rotations+1; e++ {
		var err error
		if e%100 == 0 { // bob joins, then leaves with a rotation
			if err = s.AddMember(ctx, store.Member{Room: room, SignPub: bob, Role: store.RoomMember, AddedBy: alice, AddedAt: t0},
				[]store.SealedKey{key(e-1, bob, alice, "b")}); err != nil {
				t.Fatalf("add bob at epoch %d: %v", e-1, err)
			}
			largest = max(largest, stateSize(t, members))
			err = s.RemoveMember(ctx, room, bob, &store.Rotation{Room: room, Epoch: e, By: alice, Reason: store.EpochRemove,
				Keys: []store.SealedKey{key(e, alice, alice, "a")}, At: t0})
		} else {
			err = s.Rotate(ctx, store.Rotation{Room: room, Epoch: e, By: alice, Reason: store.EpochRotate,
				Keys: []store.SealedKey{key(e, alice, alice, "a")}, At: t0})
		}
		if err != nil {
			t.Fatalf("epoch %d: %v", e, err)
		}
		if e%10 == 0 {
			largest = max(largest, stateSize(t, members))
		}
		if e%500 == 0 {
			t.Logf("epoch %d: state record %d bytes (largest so far %d)", e, stateSize(t, members), largest)
		}
	}
	last := stateSize(t, members)
	t.Logf("%d rotations in %v; state record %d bytes at epoch 1, %d at the last, %d at most",
		rotations, time.Since(start).Round(time.Millisecond), first, last, largest)
	// One member, and a second at times: a few hundred bytes, whatever the
	// epoch (only its digits grow).
	const bound = 1024
	if largest > bound || last > first+8 {
		t.Errorf("state record grew: %d bytes at first, %d at the end, %d at most; want at most %d and no growth beyond the epoch's digits",
			first, last, largest, bound)
	}
	if r, err := s.GetRoom(ctx, room); err != nil || r.Epoch != rotations+1 {
		t.Fatalf("GetRoom: %+v, %v", r, err)
	}
	if k, err := s.SealedKey(ctx, room, bob, 99); err != nil || !strings.HasPrefix(string(k.Sealed), "sealed") {
		t.Fatalf("SealedKey(bob, 99): %+v, %v", k, err)
	}
	if e, err := s.Epoch(ctx, room, 100); err != nil || e.Reason != store.EpochRemove {
		t.Fatalf("Epoch(100): %+v, %v; want the removal", e, err)
	}
}
