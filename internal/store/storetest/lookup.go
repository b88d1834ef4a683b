package storetest

import (
	"errors"
	"math"
	"testing"

	"github.com/unibus/unibus/internal/store"
)

var lookupTests = []test{
	{"EpochLookup", testEpochLookup},
	{"SealedKeyLookup", testSealedKeyLookup},
	{"LookupAfterRefusedWrites", testLookupAfterRefusedWrites},
	{"ManyRotations", testManyRotations},
}

// wantNotFound fails the test unless err is ErrNotFound.
func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("%s: %v, want ErrNotFound", what, err)
	}
}

// Epoch returns each epoch's record, the same as Epochs, and ErrNotFound
// for epoch 0, an epoch above the room's and an unknown room.
func testEpochLookup(f *fixture) {
	us := f.users("alice", "bob")
	alice, bob := us[0], us[1]
	id := f.createRoom("ops", alice, bob)
	f.rotate(id, alice, alice, bob) // 2
	if err := f.s.RemoveMember(f.ctx, id, bob, &store.Rotation{Room: id, Epoch: 3, By: alice, Reason: store.EpochRemove,
		Keys: keysFor(id, 3, alice, alice), At: at(3)}); err != nil {
		f.t.Fatalf("RemoveMember: %v", err)
	}
	want := []store.Epoch{
		{Room: id, Epoch: 1, CreatedBy: alice, Reason: store.EpochCreate, CreatedAt: at(1)},
		{Room: id, Epoch: 2, CreatedBy: alice, Reason: store.EpochRotate, CreatedAt: at(2)},
		{Room: id, Epoch: 3, CreatedBy: alice, Reason: store.EpochRemove, CreatedAt: at(3)},
	}
	all, err := f.s.Epochs(f.ctx, id)
	if err != nil || len(all) != len(want) {
		f.t.Fatalf("Epochs: %d records, %v; want %d", len(all), err, len(want))
	}
	for _, s := range []store.Store{f.s, f.reopen()} {
		for i, w := range want {
			got, err := s.Epoch(f.ctx, id, w.Epoch)
			if err != nil {
				f.t.Fatalf("Epoch(%d): %v", w.Epoch, err)
			}
			checkEpoch(f.t, got, w)
			if got != all[i] {
				f.t.Errorf("Epoch(%d) = %+v, Epochs has %+v", w.Epoch, got, all[i])
			}
		}
	}
	for _, tc := range []struct {
		name  string
		room  string
		epoch uint64
	}{
		{"epoch 0", id, 0},
		{"the next epoch", id, 4},
		{"far above", id, math.MaxUint64},
		{"unknown room", roomID("nowhere"), 1},
	} {
		_, err := f.s.Epoch(f.ctx, tc.room, tc.epoch)
		wantNotFound(f.t, "Epoch("+tc.name+")", err)
	}
}

// SealedKey returns exactly what SealedKeys returns for that epoch, and
// ErrNotFound for an epoch without a key for that member, above the
// room's, for a non-member and for an unknown room. A removed member keeps
// its keys for the epochs it held.
func testSealedKeyLookup(f *fixture) {
	us := f.users("alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	id := f.createRoom("ops", alice, bob)
	f.rotate(id, alice, alice, bob) // 2
	// dave joins at epoch 2 with its key only.
	f.addMember(id, dave, alice)
	if err := f.s.RemoveMember(f.ctx, id, bob, &store.Rotation{Room: id, Epoch: 3, By: alice, Reason: store.EpochRemove,
		Keys: keysFor(id, 3, alice, alice, dave), At: at(3)}); err != nil {
		f.t.Fatalf("RemoveMember: %v", err)
	}
	has := map[string][]uint64{alice: {1, 2, 3}, bob: {1, 2}, dave: {2, 3}}
	for _, s := range []store.Store{f.s, f.reopen()} {
		for member, epochs := range has {
			all, err := s.SealedKeys(f.ctx, id, member)
			if err != nil || len(all) != len(epochs) {
				f.t.Fatalf("SealedKeys(%s): %d keys, %v; want %d", member[:8], len(all), err, len(epochs))
			}
			for i, e := range epochs {
				got, err := s.SealedKey(f.ctx, id, member, e)
				if err != nil {
					f.t.Fatalf("SealedKey(%s, %d): %v", member[:8], e, err)
				}
				checkKeys(f.t, []store.SealedKey{got}, all[i:i+1])
			}
		}
	}
	for _, tc := range []struct {
		name   string
		room   string
		member string
		epoch  uint64
	}{
		{"epoch 0", id, alice, 0},
		{"epoch above the room's", id, alice, 4},
		{"far above", id, alice, math.MaxUint64},
		{"removed member, epoch after removal", id, bob, 3},
		{"member that joined later, earlier epoch", id, dave, 1},
		{"registered non-member", id, carol, 1},
		{"unknown user", id, signPub("nobody"), 1},
		{"unknown room", roomID("nowhere"), alice, 1},
	} {
		_, err := f.s.SealedKey(f.ctx, tc.room, tc.member, tc.epoch)
		wantNotFound(f.t, "SealedKey("+tc.name+")", err)
	}
}

// Writes the store refused leave no epoch and no key to look up.
func testLookupAfterRefusedWrites(f *fixture) {
	us := f.users("alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	id := f.createRoom("ops", alice, bob)

	// A rotation that also seals to a non-member.
	bad := store.Rotation{Room: id, Epoch: 2, By: alice, Reason: store.EpochRotate, Keys: keysFor(id, 2, alice, alice, bob, carol), At: at(5)}
	wantErr(f.t, "Rotate with a non-member's key", f.s.Rotate(f.ctx, bad), store.ErrIncompleteRotation)
	// An addition without a key for the current epoch.
	m := store.Member{Room: id, SignPub: carol, Role: store.RoomMember, AddedBy: alice, AddedAt: at(6)}
	wantErr(f.t, "AddMember without the current key", f.s.AddMember(f.ctx, m, nil), store.ErrIncompleteRotation)
	// A rotation that skips an epoch.
	skip := store.Rotation{Room: id, Epoch: 3, By: alice, Reason: store.EpochRotate, Keys: keysFor(id, 3, alice, alice, bob), At: at(7)}
	wantErr(f.t, "Rotate skipping an epoch", f.s.Rotate(f.ctx, skip), store.ErrStaleEpoch)

	_, err := f.s.Epoch(f.ctx, id, 2)
	wantNotFound(f.t, "Epoch(refused epoch 2)", err)
	_, err = f.s.Epoch(f.ctx, id, 3)
	wantNotFound(f.t, "Epoch(refused epoch 3)", err)
	for _, who := range []string{alice, bob, carol} {
		for _, e := range []uint64{2, 3} {
			_, err := f.s.SealedKey(f.ctx, id, who, e)
			wantNotFound(f.t, "SealedKey of a refused rotation", err)
		}
	}
	_, err = f.s.SealedKey(f.ctx, id, carol, 1)
	wantNotFound(f.t, "SealedKey of a refused addition", err)

	// The room moves on to epoch 2 as if nothing had been tried.
	f.rotate(id, alice, alice, bob)
	got, err := f.s.SealedKey(f.ctx, id, bob, 2)
	if err != nil {
		f.t.Fatalf("SealedKey(bob, 2): %v", err)
	}
	checkKeys(f.t, []store.SealedKey{got}, keysFor(id, 2, alice, bob))
	_, err = f.s.SealedKey(f.ctx, id, carol, 2)
	wantNotFound(f.t, "SealedKey(carol, 2) after the real rotation", err)
}

// manyRotations is how many times ManyRotations rotates one room: enough
// to show that nothing accumulates per rotation, few enough for a test.
const manyRotations = 60

// A room rotated many times, with members joining and leaving along the
// way, still works: every epoch and key can be looked up, the history is
// complete, and the room takes further writes.
func testManyRotations(f *fixture) {
	us := f.users("alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	id := f.createRoom("ops", alice, bob)
	members := []string{alice, bob}
	held := map[string][]uint64{alice: {1}, bob: {1}}
	for range manyRotations {
		switch r := f.room(id); {
		case r.Epoch == manyRotations/3:
			f.addMember(id, carol, alice)
			members = append(members, carol)
			held[carol] = append(held[carol], r.Epoch)
		case r.Epoch == 2*manyRotations/3:
			next := r.Epoch + 1
			if err := f.s.RemoveMember(f.ctx, id, bob, &store.Rotation{Room: id, Epoch: next, By: alice, Reason: store.EpochRemove,
				Keys: keysFor(id, next, alice, alice, carol), At: at(int(next))}); err != nil {
				f.t.Fatalf("RemoveMember at epoch %d: %v", next, err)
			}
			members = []string{alice, carol}
			for _, m := range members {
				held[m] = append(held[m], next)
			}
			continue
		}
		e := f.rotate(id, alice, members...)
		for _, m := range members {
			held[m] = append(held[m], e)
		}
	}
	last := f.room(id).Epoch
	if last != manyRotations+1 {
		f.t.Fatalf("room at epoch %d after %d rotations, want %d", last, manyRotations, manyRotations+1)
	}
	eps, err := f.s.Epochs(f.ctx, id)
	if err != nil || uint64(len(eps)) != last {
		f.t.Fatalf("Epochs: %d records, %v; want %d", len(eps), err, last)
	}
	for i, e := range eps {
		if e.Epoch != uint64(i+1) {
			f.t.Fatalf("Epochs[%d] is epoch %d", i, e.Epoch)
		}
		got, err := f.s.Epoch(f.ctx, id, e.Epoch)
		if err != nil || got != e {
			f.t.Fatalf("Epoch(%d) = %+v, %v; Epochs has %+v", e.Epoch, got, err, e)
		}
	}
	for m, epochs := range held {
		if got := f.keyEpochs(id, m); len(got) != len(epochs) {
			f.t.Fatalf("SealedKeys(%s): %d keys, want %d", m[:8], len(got), len(epochs))
		}
		for _, e := range epochs {
			k, err := f.s.SealedKey(f.ctx, id, m, e)
			if err != nil {
				f.t.Fatalf("SealedKey(%s, %d): %v", m[:8], e, err)
			}
			if k.Epoch != e || k.Member != m {
				f.t.Fatalf("SealedKey(%s, %d) returned epoch %d of %s", m[:8], e, k.Epoch, k.Member[:8])
			}
		}
	}
	// Still writable.
	f.addMember(id, bob, alice)
	f.rotate(id, carol, alice, bob, carol)
	if r := f.room(id); r.Epoch != last+1 {
		f.t.Errorf("room at epoch %d, want %d", r.Epoch, last+1)
	}
}
