package storetest

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/unibus/unibus/internal/store"
)

var roomTests = []test{
	{"CreateRoom", testCreateRoom},
	{"CreateRoomExists", testCreateRoomExists},
	{"GetRoomUnknown", testGetRoomUnknown},
	{"ListRoomsAndRoomIDs", testListRoomsAndRoomIDs},
	{"ListMembersAndGetMember", testListMembersAndGetMember},
	{"SealedKeysOrderedAndExact", testSealedKeysOrderedAndExact},
	{"EpochsOrdered", testEpochsOrdered},
}

// checkKeys fails the test unless got holds exactly want, byte for byte, in order.
func checkKeys(t *testing.T, got, want []store.SealedKey) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d sealed keys, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Room != w.Room || g.Epoch != w.Epoch || g.Member != w.Member || g.Sealer != w.Sealer {
			t.Errorf("key %d: got (room %s, epoch %d, member %s, sealer %s), want (%s, %d, %s, %s)",
				i, g.Room, g.Epoch, g.Member, g.Sealer, w.Room, w.Epoch, w.Member, w.Sealer)
		}
		if !bytes.Equal(g.Sealed, w.Sealed) || !bytes.Equal(g.Sig, w.Sig) {
			t.Errorf("key %d (epoch %d): sealed or signature bytes differ from those stored", i, w.Epoch)
		}
	}
}

// checkEpoch compares an epoch record.
func checkEpoch(t *testing.T, got, want store.Epoch) {
	t.Helper()
	if got.Room != want.Room || got.Epoch != want.Epoch || got.CreatedBy != want.CreatedBy || got.Reason != want.Reason {
		t.Errorf("epoch: got (%s, %d, %s, %s), want (%s, %d, %s, %s)",
			got.Room, got.Epoch, got.CreatedBy, got.Reason, want.Room, want.Epoch, want.CreatedBy, want.Reason)
	}
	checkTime(t, "epoch CreatedAt", got.CreatedAt, want.CreatedAt)
}

func testCreateRoom(f *fixture) {
	alice := f.addUser("alice", store.RoleMember).SignPub
	r := newRoom("ops", alice) // Epoch left zero: the store creates epoch 1
	owner := store.Member{Room: r.ID, SignPub: alice, Role: store.RoomOwner, AddedBy: alice, AddedAt: at(1)}
	key := sealedKey(r.ID, 1, alice, alice, 0)
	if err := f.s.CreateRoom(f.ctx, r, owner, key); err != nil {
		f.t.Fatalf("CreateRoom: %v", err)
	}

	got := f.room(r.ID)
	if got.ID != r.ID || got.Name != r.Name || got.CreatedBy != alice || got.Epoch != 1 || got.RotationPending ||
		got.MaxAge != r.MaxAge || got.MaxBytes != r.MaxBytes {
		f.t.Errorf("GetRoom: got %+v, want %+v at epoch 1, no rotation pending", got, r)
	}
	checkTime(f.t, "room CreatedAt", got.CreatedAt, r.CreatedAt)

	ms, err := f.s.ListMembers(f.ctx, r.ID)
	if err != nil {
		f.t.Fatalf("ListMembers: %v", err)
	}
	if len(ms) != 1 {
		f.t.Fatalf("ListMembers: %d members, want the owner only", len(ms))
	}
	m := ms[0]
	if m.Room != r.ID || m.SignPub != alice || m.Role != store.RoomOwner || m.AddedBy != alice {
		f.t.Errorf("owner membership: got %+v, want %+v", m, owner)
	}
	checkTime(f.t, "owner AddedAt", m.AddedAt, owner.AddedAt)
	gm, err := f.s.GetMember(f.ctx, r.ID, alice)
	if err != nil {
		f.t.Fatalf("GetMember(owner): %v", err)
	}
	if !reflect.DeepEqual(gm, m) {
		f.t.Errorf("GetMember = %+v, ListMembers has %+v", gm, m)
	}

	ks, err := f.s.SealedKeys(f.ctx, r.ID, alice)
	if err != nil {
		f.t.Fatalf("SealedKeys: %v", err)
	}
	checkKeys(f.t, ks, []store.SealedKey{key})

	eps, err := f.s.Epochs(f.ctx, r.ID)
	if err != nil {
		f.t.Fatalf("Epochs: %v", err)
	}
	if len(eps) != 1 {
		f.t.Fatalf("Epochs: %d records, want 1", len(eps))
	}
	checkEpoch(f.t, eps[0], store.Epoch{Room: r.ID, Epoch: 1, CreatedBy: alice, Reason: store.EpochCreate, CreatedAt: r.CreatedAt})
}

func testCreateRoomExists(f *fixture) {
	us := f.users("alice", "bob")
	alice, bob := us[0], us[1]
	id := f.createRoom("ops", alice)
	before := f.snap(id, alice, bob)

	r := newRoom("hijacked", bob)
	r.ID, r.CreatedAt, r.MaxAge, r.MaxBytes = id, at(30), 1, 1
	owner := store.Member{Room: id, SignPub: bob, Role: store.RoomOwner, AddedBy: bob, AddedAt: at(30)}
	err := f.s.CreateRoom(f.ctx, r, owner, sealedKey(id, 1, bob, bob, 1))
	wantErr(f.t, "CreateRoom(existing id)", err, store.ErrRoomExists)
	f.unchanged(before)
	if _, err := f.s.GetMember(f.ctx, id, bob); !errors.Is(err, store.ErrNotMember) {
		f.t.Errorf("the refused owner is a member: %v", err)
	}
}

func testGetRoomUnknown(f *fixture) {
	alice := f.users("alice")[0]
	f.createRoom("ops", alice)
	if _, err := f.s.GetRoom(f.ctx, roomID("nowhere")); !errors.Is(err, store.ErrNotFound) {
		f.t.Errorf("GetRoom(unknown): %v, want ErrNotFound", err)
	}
}

func testListRoomsAndRoomIDs(f *fixture) {
	us := f.users("alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	zulu := f.createRoom("zulu", alice)
	alpha := f.createRoom("alpha", alice, bob)
	mike := f.createRoom("mike", bob, alice)
	f.createRoom("bob-only", bob)

	for _, tc := range []struct {
		who   string
		names []string
		ids   []string
	}{
		{alice, []string{"alpha", "mike", "zulu"}, []string{alpha, mike, zulu}},
		{bob, []string{"alpha", "bob-only", "mike"}, []string{alpha, roomID("bob-only"), mike}},
		{carol, nil, nil},
	} {
		rooms, err := f.s.ListRooms(f.ctx, tc.who)
		if err != nil {
			f.t.Fatalf("ListRooms: %v", err)
		}
		var names []string
		for _, r := range rooms {
			names = append(names, r.Name)
			if r.ID != roomID(r.Name) || r.Epoch != 1 {
				f.t.Errorf("ListRooms: room %q has id %s, epoch %d", r.Name, r.ID, r.Epoch)
			}
		}
		if !slices.Equal(names, tc.names) {
			f.t.Errorf("ListRooms(%s) = %v, want %v (ordered by name)", tc.who[:8], names, tc.names)
		}
		ids, err := f.s.RoomIDs(f.ctx, tc.who)
		if err != nil {
			f.t.Fatalf("RoomIDs: %v", err)
		}
		slices.Sort(ids)
		want := slices.Sorted(slices.Values(tc.ids))
		if !slices.Equal(ids, want) {
			f.t.Errorf("RoomIDs(%s) = %v, want %v", tc.who[:8], ids, want)
		}
	}

	if err := f.s.RemoveMember(f.ctx, alpha, bob, nil); err != nil {
		f.t.Fatalf("RemoveMember: %v", err)
	}
	ids, err := f.s.RoomIDs(f.ctx, bob)
	if err != nil {
		f.t.Fatalf("RoomIDs: %v", err)
	}
	slices.Sort(ids)
	if want := slices.Sorted(slices.Values([]string{roomID("bob-only"), mike})); !slices.Equal(ids, want) {
		f.t.Errorf("RoomIDs after removal = %v, want %v", ids, want)
	}
}

func testListMembersAndGetMember(f *fixture) {
	us := f.users("alice", "bob", "carol", "dave", "erin", "frank")
	alice, outsider := us[0], us[5]
	id := f.createRoom("ops", alice, us[1:5]...)

	ms, err := f.s.ListMembers(f.ctx, id)
	if err != nil {
		f.t.Fatalf("ListMembers: %v", err)
	}
	got := f.memberIDs(id)
	if want := slices.Sorted(slices.Values(us[:5])); !slices.Equal(got, want) {
		f.t.Errorf("ListMembers = %v, want %v (ordered by sign-pub)", got, want)
	}
	for _, m := range ms {
		wantRole, wantBy, wantAt := store.RoomMember, alice, at(2)
		if m.SignPub == alice {
			wantRole, wantAt = store.RoomOwner, at(1)
		}
		if m.Room != id || m.Role != wantRole || m.AddedBy != wantBy {
			f.t.Errorf("member %s: %+v, want role %s added by %s", m.SignPub[:8], m, wantRole, wantBy[:8])
		}
		checkTime(f.t, "AddedAt", m.AddedAt, wantAt)
		gm, err := f.s.GetMember(f.ctx, id, m.SignPub)
		if err != nil {
			f.t.Fatalf("GetMember: %v", err)
		}
		if !reflect.DeepEqual(gm, m) {
			f.t.Errorf("GetMember = %+v, ListMembers has %+v", gm, m)
		}
	}

	for _, tc := range []struct{ name, room, who string }{
		{"registered non-member", id, outsider},
		{"unknown user", id, signPub("nobody")},
		{"unknown room", roomID("nowhere"), alice},
	} {
		if _, err := f.s.GetMember(f.ctx, tc.room, tc.who); !errors.Is(err, store.ErrNotMember) {
			f.t.Errorf("GetMember(%s): %v, want ErrNotMember", tc.name, err)
		}
	}
}

func testSealedKeysOrderedAndExact(f *fixture) {
	us := f.users("alice", "bob")
	alice, bob := us[0], us[1]
	id := f.createRoom("ops", alice)
	f.rotate(id, alice, alice)
	f.rotate(id, alice, alice)
	// bob joins at epoch 3 with the history, handed over out of order.
	want := []store.SealedKey{sealedKey(id, 1, bob, alice, 0), sealedKey(id, 2, bob, alice, 0), sealedKey(id, 3, bob, alice, 0)}
	given := []store.SealedKey{want[2], want[0], want[1]}
	m := store.Member{Room: id, SignPub: bob, Role: store.RoomMember, AddedBy: alice, AddedAt: at(5)}
	if err := f.s.AddMember(f.ctx, m, given); err != nil {
		f.t.Fatalf("AddMember: %v", err)
	}
	ks, err := f.s.SealedKeys(f.ctx, id, bob)
	if err != nil {
		f.t.Fatalf("SealedKeys: %v", err)
	}
	checkKeys(f.t, ks, want)
	ks, err = f.s.SealedKeys(f.ctx, id, alice)
	if err != nil {
		f.t.Fatalf("SealedKeys: %v", err)
	}
	checkKeys(f.t, ks, []store.SealedKey{sealedKey(id, 1, alice, alice, 0), sealedKey(id, 2, alice, alice, 0), sealedKey(id, 3, alice, alice, 0)})
}

func testEpochsOrdered(f *fixture) {
	us := f.users("alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	id := f.createRoom("ops", alice, bob, carol)
	f.rotate(id, alice, alice, bob, carol) // 2
	if err := f.s.RemoveMember(f.ctx, id, carol, &store.Rotation{Room: id, Epoch: 3, By: alice, Reason: store.EpochRemove,
		Keys: keysFor(id, 3, alice, alice, bob), At: at(3)}); err != nil {
		f.t.Fatalf("RemoveMember: %v", err)
	}
	if err := f.s.RemoveMember(f.ctx, id, alice, nil); err != nil {
		f.t.Fatalf("RemoveMember(nil): %v", err)
	}
	if err := f.s.Rotate(f.ctx, store.Rotation{Room: id, Epoch: 4, By: bob, Reason: store.EpochPending,
		Keys: keysFor(id, 4, bob, bob), At: at(4)}); err != nil {
		f.t.Fatalf("Rotate(pending): %v", err)
	}
	eps, err := f.s.Epochs(f.ctx, id)
	if err != nil {
		f.t.Fatalf("Epochs: %v", err)
	}
	want := []store.Epoch{
		{Room: id, Epoch: 1, CreatedBy: alice, Reason: store.EpochCreate, CreatedAt: at(1)},
		{Room: id, Epoch: 2, CreatedBy: alice, Reason: store.EpochRotate, CreatedAt: at(2)},
		{Room: id, Epoch: 3, CreatedBy: alice, Reason: store.EpochRemove, CreatedAt: at(3)},
		{Room: id, Epoch: 4, CreatedBy: bob, Reason: store.EpochPending, CreatedAt: at(4)},
	}
	if len(eps) != len(want) {
		f.t.Fatalf("Epochs: %d records, want %d", len(eps), len(want))
	}
	for i := range want {
		checkEpoch(f.t, eps[i], want[i])
	}
}
