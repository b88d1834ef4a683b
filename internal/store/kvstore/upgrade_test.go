package kvstore_test

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/internal/testnode"
)

// plantLegacyRoom writes a room as a store of the legacy format left it:
// metadata without "shared"; a state record at epoch 3 with the epoch
// history and the committed write ids in it; sealed keys tagged with
// those writes and never settled (alice's for epochs 1 to 3; bob's, who
// joined at 2 with the history, for 1 to 3); and the leftovers of an
// interrupted write (keys for carol at epoch 3 and for alice at epoch 4).
func plantLegacyRoom(t *testing.T, n *testnode.Node) {
	t.Helper()
	rooms, members, keys, index := bucket(t, n, kvstore.BucketRooms), bucket(t, n, kvstore.BucketMembers),
		bucket(t, n, kvstore.BucketRoomKeys), bucket(t, n, kvstore.BucketRoomsByMember)
	plant(t, rooms, room, map[string]any{"id": room, "name": "ops", "created_by": alice, "created_at": t0,
		"max_age": time.Hour, "max_bytes": 1 << 30})
	plant(t, members, room, map[string]any{
		"epoch": 3,
		"epochs": []any{
			map[string]any{"epoch": 1, "by": alice, "reason": "create", "at": t0},
			map[string]any{"epoch": 2, "by": alice, "reason": "rotate", "at": t0.Add(time.Minute)},
			map[string]any{"epoch": 3, "by": bob, "reason": "rotate", "at": t0.Add(2 * time.Minute)},
		},
		"members": map[string]any{
			alice: map[string]any{"role": "owner", "added_by": alice, "added_at": t0},
			bob:   map[string]any{"role": "member", "added_by": alice, "added_at": t0.Add(90 * time.Second)},
		},
		"writes": []string{"0000000000000001", "0000000000000002", "0000000000000003", "0000000000000004"},
	})
	legacyKey := func(member string, epoch int, write string) {
		plant(t, keys, keyName(member, epoch), map[string]any{"sealer": alice, "sealed": []byte(key(uint64(epoch), member, alice, member[:1]).Sealed),
			"sig": []byte("sig"), "write": write})
	}
	legacyKey(alice, 1, "0000000000000001")
	legacyKey(alice, 2, "0000000000000002")
	legacyKey(bob, 1, "0000000000000003") // bob's addition, with the history
	legacyKey(bob, 2, "0000000000000003")
	legacyKey(alice, 3, "0000000000000004")
	legacyKey(bob, 3, "0000000000000004")
	legacyKey(carol, 3, "00000000000000ff") // never committed
	legacyKey(alice, 4, "00000000000000ff")
	for _, m := range []string{alice, bob} {
		plant(t, index, m, map[string]any{"rooms": []string{room}})
	}
}

// legacyView is everything a reader sees of the planted room.
type legacyView struct {
	room    store.Room
	epochs  []store.Epoch
	keys    map[string][]store.SealedKey
	members []store.Member
}

// readLegacy reads the planted room and checks it against what was
// planted; it returns what it read for comparisons.
func readLegacy(t *testing.T, s store.Store, wantEpoch uint64, wantCarol int) legacyView {
	t.Helper()
	ctx := t.Context()
	var v legacyView
	var err error
	if v.room, err = s.GetRoom(ctx, room); err != nil {
		t.Fatalf("GetRoom: %v", err)
	}
	if v.room.Shared || v.room.Epoch != wantEpoch || v.room.Name != "ops" || v.room.MaxAge != time.Hour || v.room.MaxBytes != 1<<30 || !v.room.CreatedAt.Equal(t0) {
		t.Errorf("GetRoom: %+v", v.room)
	}
	if rs, err := s.ListRooms(ctx, bob); err != nil || len(rs) != 1 || rs[0] != v.room {
		t.Errorf("ListRooms(bob): %+v, %v", rs, err)
	}
	if v.epochs, err = s.Epochs(ctx, room); err != nil || uint64(len(v.epochs)) != wantEpoch {
		t.Fatalf("Epochs: %d records, %v; want %d", len(v.epochs), err, wantEpoch)
	}
	for i, e := range v.epochs {
		got, err := s.Epoch(ctx, room, uint64(i+1))
		if err != nil || got != e || e.Epoch != uint64(i+1) {
			t.Errorf("Epoch(%d) = %+v, %v; Epochs has %+v", i+1, got, err, e)
		}
	}
	if v.epochs[2].CreatedBy != bob || v.epochs[1].Reason != store.EpochRotate || !v.epochs[1].CreatedAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("legacy epochs: %+v", v.epochs)
	}
	v.keys = map[string][]store.SealedKey{}
	for _, m := range []string{alice, bob, carol} {
		if v.keys[m], err = s.SealedKeys(ctx, room, m); err != nil {
			t.Fatalf("SealedKeys: %v", err)
		}
		for _, k := range v.keys[m] {
			got, err := s.SealedKey(ctx, room, m, k.Epoch)
			if err != nil || !reflect.DeepEqual(got, k) {
				t.Errorf("SealedKey(%s, %d) = %+v, %v; SealedKeys has %+v", m[:1], k.Epoch, got, err, k)
			}
		}
	}
	if len(v.keys[alice]) != int(wantEpoch) || len(v.keys[bob]) != int(wantEpoch) || len(v.keys[carol]) != wantCarol {
		t.Errorf("keys: alice %d, bob %d, carol %d; want %d, %d, %d", len(v.keys[alice]), len(v.keys[bob]), len(v.keys[carol]), wantEpoch, wantEpoch, wantCarol)
	}
	if _, err := s.SealedKey(ctx, room, carol, 3); err == nil {
		t.Error("SealedKey(carol, 3): the key of a write never committed is shown")
	}
	if v.members, err = s.ListMembers(ctx, room); err != nil || len(v.members) != 2 {
		t.Errorf("ListMembers: %+v, %v", v.members, err)
	}
	if ids, err := s.RoomIDs(ctx, alice); err != nil || !slices.Equal(ids, []string{room}) {
		t.Errorf("RoomIDs(alice): %v, %v", ids, err)
	}
	return v
}

// A room in the legacy format is read as it was written, takes writes
// without its legacy fields growing (the record is bounded from its first
// write by this version), and Upgrade then moves the fields out with
// nothing a reader sees changing.
func TestLegacyRoom(t *testing.T) {
	n := testnode.Start(t, "")
	s, err := kvstore.Open(t.Context(), n.Control(t), kvstore.Options{NoUpgrade: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	addUsers(t, s, alice, bob, carol)
	plantLegacyRoom(t, n)
	members, keys, rooms := bucket(t, n, kvstore.BucketMembers), bucket(t, n, kvstore.BucketRoomKeys), bucket(t, n, kvstore.BucketRooms)

	readLegacy(t, s, 3, 0)
	planted := record(t, members, room)

	// Writes go through; the legacy fields stay as they were.
	for e := uint64(4); e <= 13; e++ {
		rot := store.Rotation{Room: room, Epoch: e, By: alice, Reason: store.EpochRotate, Keys: []store.SealedKey{key(e, alice, alice, "a"), key(e, bob, alice, "b")}, At: t0}
		if err := s.Rotate(ctx, rot); err != nil {
			t.Fatalf("Rotate(%d): %v", e, err)
		}
	}
	if err := s.AddMember(ctx, store.Member{Room: room, SignPub: carol, Role: store.RoomMember, AddedBy: alice, AddedAt: t0}, []store.SealedKey{key(13, carol, alice, "c")}); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveMember(ctx, room, carol, nil); err != nil {
		t.Fatal(err)
	}
	st := record(t, members, room)
	if !reflect.DeepEqual(st["epochs"], planted["epochs"]) || !reflect.DeepEqual(st["writes"], planted["writes"]) {
		t.Fatalf("the legacy fields changed:\n epochs %v\n writes %v", st["epochs"], st["writes"])
	}
	if k, err := s.SealedKey(ctx, room, alice, 4); err != nil || string(k.Sealed) != "sealed a" {
		t.Fatalf("SealedKey(alice, 4), written over an interrupted write's key: %+v, %v", k, err)
	}
	if r, err := s.GetRoom(ctx, room); err != nil || !r.RotationPending || r.Epoch != 13 {
		t.Fatalf("GetRoom after the writes: %+v, %v", r, err)
	}
	if err := s.Rotate(ctx, store.Rotation{Room: room, Epoch: 14, By: bob, Reason: store.EpochPending, Keys: []store.SealedKey{key(14, alice, bob, "a"), key(14, bob, bob, "b")}, At: t0}); err != nil {
		t.Fatal(err)
	}
	before := readLegacy(t, s, 14, 1)

	// Upgrade moves the legacy fields out, once.
	if converted, err := s.Upgrade(ctx); err != nil || converted != 1 {
		t.Fatalf("Upgrade: converted %d, %v; want 1", converted, err)
	}
	st = record(t, members, room)
	for _, field := range []string{"epochs", "writes", "lease", "unsettled"} {
		if v, ok := st[field]; ok {
			t.Errorf("state record after Upgrade has %q: %v", field, v)
		}
	}
	for e := 1; e <= 3; e++ {
		if r := record(t, rooms, epochKey(e)); r["settled"] != true {
			t.Errorf("epoch record %d after Upgrade: %v", e, r)
		}
		for _, m := range []string{alice, bob} {
			if r := record(t, keys, keyName(m, e)); r["settled"] != true {
				t.Errorf("legacy key %s after Upgrade: %v", keyName(m, e), r)
			}
		}
	}
	if r := record(t, keys, keyName(carol, 3)); r["settled"] == true {
		t.Errorf("Upgrade settled the key of a write never committed: %v", r)
	}
	after := readLegacy(t, s, 14, 1)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("Upgrade changed what readers see:\nbefore %+v\n after %+v", before, after)
	}
	if converted, err := s.Upgrade(ctx); err != nil || converted != 0 {
		t.Fatalf("second Upgrade: converted %d, %v; want 0", converted, err)
	}
	if err := s.Rotate(ctx, store.Rotation{Room: room, Epoch: 15, By: alice, Reason: store.EpochRotate, Keys: []store.SealedKey{key(15, alice, alice, "a"), key(15, bob, alice, "b")}, At: t0}); err != nil {
		t.Fatalf("Rotate after Upgrade: %v", err)
	}
}

// A store converts legacy rooms by itself once it is open.
func TestLegacyRoomUpgradedAtOpen(t *testing.T) {
	n := testnode.Start(t, "")
	s, err := kvstore.Open(t.Context(), n.Control(t), kvstore.Options{NoUpgrade: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addUsers(t, s, alice, bob, carol)
	plantLegacyRoom(t, n)
	before := readLegacy(t, s, 3, 0)

	opened := openOn(t, n)
	members := bucket(t, n, kvstore.BucketMembers)
	harness.Eventually(t, 10*time.Second, func() bool {
		_, legacy := record(t, members, room)["writes"]
		return !legacy
	}, "the legacy room converted by a store that opened")
	if after := readLegacy(t, opened, 3, 0); !reflect.DeepEqual(before, after) {
		t.Errorf("the conversion changed what readers see:\nbefore %+v\n after %+v", before, after)
	}
}

// A room's state record with epoch 0 or no legacy fields is left alone,
// and Upgrade over many rooms converts each legacy one.
func TestUpgradeLeavesNewRoomsAlone(t *testing.T) {
	n := testnode.Start(t, "")
	s, err := kvstore.Open(t.Context(), n.Control(t), kvstore.Options{NoUpgrade: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	addUsers(t, s, alice, bob, carol)
	other := "0000000000000000000000000000000f"
	if err := s.CreateRoom(ctx, store.Room{ID: other, Name: "new", CreatedBy: alice, CreatedAt: t0, Shared: true},
		store.Member{SignPub: alice, AddedBy: alice, AddedAt: t0}, store.SealedKey{Room: other, Epoch: 1, Member: alice, Sealer: alice, Sealed: []byte("s"), Sig: []byte("g")}); err != nil {
		t.Fatal(err)
	}
	members := bucket(t, n, kvstore.BucketMembers)
	was := record(t, members, other)
	plantLegacyRoom(t, n)
	if converted, err := s.Upgrade(ctx); err != nil || converted != 1 {
		t.Fatalf("Upgrade: converted %d, %v; want 1", converted, err)
	}
	if now := record(t, members, other); !reflect.DeepEqual(now, was) {
		t.Errorf("Upgrade rewrote a room in the current format:\n was %v\n now %v", was, now)
	}
	if r, err := s.GetRoom(ctx, other); err != nil || !r.Shared {
		t.Errorf("GetRoom(new room): %+v, %v", r, err)
	}
}
