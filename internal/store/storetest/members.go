package storetest

import (
	"errors"
	"slices"
	"testing"

	"github.com/unibus/unibus/internal/store"
)

var memberTests = []test{
	{"AddMember", testAddMember},
	{"AddMemberRefused", testAddMemberRefused},
	{"AddMemberAgainAfterRemoval", testAddMemberAgainAfterRemoval},
}

func testAddMember(f *fixture) {
	us := f.users("alice", "bob")
	alice, bob := us[0], us[1]
	id := f.createRoom("ops", alice)
	key := sealedKey(id, 1, bob, alice, 0)
	m := store.Member{Room: id, SignPub: bob, Role: store.RoomOwner, AddedBy: alice, AddedAt: at(4)}
	if err := f.s.AddMember(f.ctx, m, []store.SealedKey{key}); err != nil {
		f.t.Fatalf("AddMember: %v", err)
	}
	got, err := f.s.GetMember(f.ctx, id, bob)
	if err != nil {
		f.t.Fatalf("GetMember: %v", err)
	}
	if got.Room != id || got.SignPub != bob || got.Role != store.RoomOwner || got.AddedBy != alice {
		f.t.Errorf("GetMember = %+v, want %+v", got, m)
	}
	checkTime(f.t, "AddedAt", got.AddedAt, m.AddedAt)
	if want := slices.Sorted(slices.Values([]string{alice, bob})); !slices.Equal(f.memberIDs(id), want) {
		f.t.Errorf("ListMembers = %v, want %v", f.memberIDs(id), want)
	}
	ks, err := f.s.SealedKeys(f.ctx, id, bob)
	if err != nil {
		f.t.Fatalf("SealedKeys: %v", err)
	}
	checkKeys(f.t, ks, []store.SealedKey{key})
	if ids, err := f.s.RoomIDs(f.ctx, bob); err != nil || !slices.Equal(ids, []string{id}) {
		f.t.Errorf("RoomIDs(new member) = %v, %v; want [%s]", ids, err, id)
	}
	if r := f.room(id); r.Epoch != 1 || r.RotationPending {
		f.t.Errorf("adding a member changed the room: %+v", r)
	}
}

func testAddMemberRefused(f *fixture) {
	us := f.users("alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	id := f.createRoom("ops", alice, bob)
	f.rotate(id, alice, alice, bob) // the room is at epoch 2

	cases := []struct {
		name string
		who  string
		keys []store.SealedKey
		want error
	}{
		{"no keys", carol, nil, store.ErrIncompleteRotation},
		{"old epoch only", carol, []store.SealedKey{sealedKey(id, 1, carol, alice, 0)}, store.ErrIncompleteRotation},
		{"key for another user", carol, []store.SealedKey{sealedKey(id, 2, dave, alice, 0)}, store.ErrIncompleteRotation},
		{"plus a key for another user", carol, []store.SealedKey{sealedKey(id, 2, carol, alice, 0), sealedKey(id, 2, dave, alice, 0)}, store.ErrIncompleteRotation},
		{"plus a key for a member", carol, []store.SealedKey{sealedKey(id, 2, carol, alice, 0), sealedKey(id, 2, bob, alice, 1)}, store.ErrIncompleteRotation},
		{"already a member", bob, []store.SealedKey{sealedKey(id, 2, bob, alice, 1)}, store.ErrAlreadyMember},
		{"the owner again", alice, []store.SealedKey{sealedKey(id, 2, alice, alice, 1)}, store.ErrAlreadyMember},
	}
	for _, tc := range cases {
		f.t.Run(tc.name, func(t *testing.T) {
			f := f.sub(t)
			before := f.snap(id, alice, bob, carol, dave)
			m := store.Member{Room: id, SignPub: tc.who, Role: store.RoomMember, AddedBy: alice, AddedAt: at(9)}
			wantErr(t, "AddMember", f.s.AddMember(f.ctx, m, tc.keys), tc.want)
			f.unchanged(before)
		})
	}
	if _, err := f.s.GetMember(f.ctx, id, carol); !errors.Is(err, store.ErrNotMember) {
		f.t.Errorf("a refused AddMember left carol a member: %v", err)
	}
}

// A removed member keeps the keys of the epochs it held; adding it back with
// keys for those epochs as well as the current one succeeds and the new
// seals are the ones returned.
func testAddMemberAgainAfterRemoval(f *fixture) {
	us := f.users("alice", "bob")
	alice, bob := us[0], us[1]
	id := f.createRoom("ops", alice, bob)
	rot := &store.Rotation{Room: id, Epoch: 2, By: alice, Reason: store.EpochRemove, Keys: keysFor(id, 2, alice, alice), At: at(3)}
	if err := f.s.RemoveMember(f.ctx, id, bob, rot); err != nil {
		f.t.Fatalf("RemoveMember: %v", err)
	}
	keys := []store.SealedKey{sealedKey(id, 1, bob, alice, 7), sealedKey(id, 2, bob, alice, 7)}
	m := store.Member{Room: id, SignPub: bob, Role: store.RoomMember, AddedBy: alice, AddedAt: at(4)}
	if err := f.s.AddMember(f.ctx, m, keys); err != nil {
		f.t.Fatalf("AddMember again: %v", err)
	}
	ks, err := f.s.SealedKeys(f.ctx, id, bob)
	if err != nil {
		f.t.Fatalf("SealedKeys: %v", err)
	}
	checkKeys(f.t, ks, keys)
	if _, err := f.s.GetMember(f.ctx, id, bob); err != nil {
		f.t.Errorf("GetMember after re-adding: %v", err)
	}
}
