package storetest

import (
	"errors"
	"slices"
	"testing"

	"github.com/unibus/unibus/internal/store"
)

var removeTests = []test{
	{"RemoveMemberWithRotation", testRemoveMemberWithRotation},
	{"RemoveMemberRotationRefused", testRemoveMemberRotationRefused},
	{"RemoveMemberWithoutRotation", testRemoveMemberWithoutRotation},
	{"RemoveMemberNotMember", testRemoveMemberNotMember},
}

func testRemoveMemberWithRotation(f *fixture) {
	us := f.users("alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	id := f.createRoom("ops", alice, bob, carol)
	carolKeys, err := f.s.SealedKeys(f.ctx, id, carol)
	if err != nil {
		f.t.Fatalf("SealedKeys: %v", err)
	}

	rot := &store.Rotation{Room: id, Epoch: 2, By: alice, Reason: store.EpochRemove, Keys: keysFor(id, 2, alice, bob, alice), At: at(8)}
	if err := f.s.RemoveMember(f.ctx, id, carol, rot); err != nil {
		f.t.Fatalf("RemoveMember: %v", err)
	}
	if _, err := f.s.GetMember(f.ctx, id, carol); !errors.Is(err, store.ErrNotMember) {
		f.t.Errorf("GetMember(removed): %v, want ErrNotMember", err)
	}
	if got, want := f.memberIDs(id), slices.Sorted(slices.Values([]string{alice, bob})); !slices.Equal(got, want) {
		f.t.Errorf("ListMembers = %v, want %v", got, want)
	}
	if ids, err := f.s.RoomIDs(f.ctx, carol); err != nil || len(ids) != 0 {
		f.t.Errorf("RoomIDs(removed) = %v, %v; want none", ids, err)
	}
	if r := f.room(id); r.Epoch != 2 || r.RotationPending {
		f.t.Errorf("room after removal: epoch %d, pending %v; want 2, false", r.Epoch, r.RotationPending)
	}
	for _, k := range rot.Keys {
		ks, err := f.s.SealedKeys(f.ctx, id, k.Member)
		if err != nil {
			f.t.Fatalf("SealedKeys: %v", err)
		}
		if len(ks) != 2 {
			f.t.Fatalf("remaining member %s has %d keys, want 2", k.Member[:8], len(ks))
		}
		checkKeys(f.t, ks[1:], []store.SealedKey{k})
	}
	// The removed member keeps the keys it had, and gets none for epoch 2.
	ks, err := f.s.SealedKeys(f.ctx, id, carol)
	if err != nil {
		f.t.Fatalf("SealedKeys(removed): %v", err)
	}
	checkKeys(f.t, ks, carolKeys)
	eps, err := f.s.Epochs(f.ctx, id)
	if err != nil || len(eps) != 2 {
		f.t.Fatalf("Epochs: %d records, %v; want 2", len(eps), err)
	}
	checkEpoch(f.t, eps[1], store.Epoch{Room: id, Epoch: 2, CreatedBy: alice, Reason: store.EpochRemove, CreatedAt: at(8)})
}

func testRemoveMemberRotationRefused(f *fixture) {
	us := f.users("alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	id := f.createRoom("ops", alice, bob, carol)

	cases := []struct {
		name  string
		epoch uint64
		keys  []store.SealedKey
		want  error
	}{
		{"includes the removed member", 2, keysFor(id, 2, alice, alice, bob, carol), store.ErrIncompleteRotation},
		{"removed member instead of a remaining one", 2, keysFor(id, 2, alice, alice, carol), store.ErrIncompleteRotation},
		{"missing a remaining member", 2, keysFor(id, 2, alice, alice), store.ErrIncompleteRotation},
		{"extra non-member", 2, keysFor(id, 2, alice, alice, bob, dave), store.ErrIncompleteRotation},
		{"duplicate", 2, append(keysFor(id, 2, alice, alice, bob), sealedKey(id, 2, bob, alice, 1)), store.ErrIncompleteRotation},
		{"current epoch", 1, keysFor(id, 1, alice, alice, bob), store.ErrStaleEpoch},
		{"skips an epoch", 3, keysFor(id, 3, alice, alice, bob), store.ErrStaleEpoch},
	}
	for _, tc := range cases {
		f.t.Run(tc.name, func(t *testing.T) {
			f := f.sub(t)
			before := f.snap(id, alice, bob, carol, dave)
			rot := &store.Rotation{Room: id, Epoch: tc.epoch, By: alice, Reason: store.EpochRemove, Keys: tc.keys, At: at(9)}
			wantErr(t, "RemoveMember", f.s.RemoveMember(f.ctx, id, carol, rot), tc.want)
			f.unchanged(before)
			if _, err := f.s.GetMember(f.ctx, id, carol); err != nil {
				t.Errorf("a refused removal removed the member: %v", err)
			}
		})
	}
}

func testRemoveMemberWithoutRotation(f *fixture) {
	us := f.users("alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	id := f.createRoom("ops", alice, bob, carol)
	before := f.snap(id, carol)
	if err := f.s.RemoveMember(f.ctx, id, carol, nil); err != nil {
		f.t.Fatalf("RemoveMember(nil): %v", err)
	}
	if _, err := f.s.GetMember(f.ctx, id, carol); !errors.Is(err, store.ErrNotMember) {
		f.t.Errorf("GetMember(removed): %v, want ErrNotMember", err)
	}
	if got, want := f.memberIDs(id), slices.Sorted(slices.Values([]string{alice, bob})); !slices.Equal(got, want) {
		f.t.Errorf("ListMembers = %v, want %v", got, want)
	}
	if ids, err := f.s.RoomIDs(f.ctx, carol); err != nil || len(ids) != 0 {
		f.t.Errorf("RoomIDs(removed) = %v, %v; want none", ids, err)
	}
	r := f.room(id)
	if !r.RotationPending || r.Epoch != 1 {
		f.t.Errorf("room after an admin removal: epoch %d, pending %v; want 1, true", r.Epoch, r.RotationPending)
	}
	eps, err := f.s.Epochs(f.ctx, id)
	if err != nil || len(eps) != 1 {
		f.t.Errorf("Epochs: %d records, %v; want 1 (no new epoch)", len(eps), err)
	}
	ks, err := f.s.SealedKeys(f.ctx, id, carol)
	if err != nil {
		f.t.Fatalf("SealedKeys(removed): %v", err)
	}
	checkKeys(f.t, ks, before.keys[carol])
}

func testRemoveMemberNotMember(f *fixture) {
	us := f.users("alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	id := f.createRoom("ops", alice, bob)
	if err := f.s.RemoveMember(f.ctx, id, bob, nil); err != nil {
		f.t.Fatalf("RemoveMember: %v", err)
	}
	for _, tc := range []struct{ name, who string }{
		{"registered non-member", carol},
		{"already removed", bob},
		{"unknown user", signPub("nobody")},
	} {
		f.t.Run(tc.name, func(t *testing.T) {
			f := f.sub(t)
			before := f.snap(id, alice, bob, carol)
			wantErr(t, "RemoveMember", f.s.RemoveMember(f.ctx, id, tc.who, nil), store.ErrNotMember)
			f.unchanged(before)
		})
	}
}
