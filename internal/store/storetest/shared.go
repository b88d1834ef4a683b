package storetest

import (
	"time"

	"github.com/unibus/unibus/internal/store"
)

var sharedTests = []test{
	{"RoomShared", testRoomShared},
}

// Room.Shared round-trips both ways, through GetRoom and ListRooms, on
// another handle too, and survives writes to the room's state.
func testRoomShared(f *fixture) {
	us := f.users("alice", "bob")
	alice, bob := us[0], us[1]
	shared := store.Room{ID: roomID("shared"), Name: "shared", CreatedBy: alice, CreatedAt: at(1), MaxAge: time.Hour, Shared: true}
	own := store.Room{ID: roomID("own"), Name: "own", CreatedBy: alice, CreatedAt: at(1), MaxAge: time.Hour, MaxBytes: 1 << 20}
	for _, r := range []store.Room{shared, own} {
		o := store.Member{Room: r.ID, SignPub: alice, Role: store.RoomOwner, AddedBy: alice, AddedAt: at(1)}
		if err := f.s.CreateRoom(f.ctx, r, o, sealedKey(r.ID, 1, alice, alice, 0)); err != nil {
			f.t.Fatalf("CreateRoom(%s): %v", r.Name, err)
		}
	}
	check := func(when string, s store.Store) {
		f.t.Helper()
		for _, want := range []store.Room{shared, own} {
			got, err := s.GetRoom(f.ctx, want.ID)
			if err != nil {
				f.t.Fatalf("%s: GetRoom(%s): %v", when, want.Name, err)
			}
			if got.Shared != want.Shared || got.MaxBytes != want.MaxBytes || got.MaxAge != want.MaxAge {
				f.t.Errorf("%s: GetRoom(%s): shared %v, max bytes %d, max age %v; want %v, %d, %v",
					when, want.Name, got.Shared, got.MaxBytes, got.MaxAge, want.Shared, want.MaxBytes, want.MaxAge)
			}
		}
		rooms, err := s.ListRooms(f.ctx, alice)
		if err != nil {
			f.t.Fatalf("%s: ListRooms: %v", when, err)
		}
		if len(rooms) != 2 {
			f.t.Fatalf("%s: ListRooms: %d rooms, want 2", when, len(rooms))
		}
		for _, r := range rooms {
			if want := r.ID == shared.ID; r.Shared != want {
				f.t.Errorf("%s: ListRooms: room %s shared %v, want %v", when, r.Name, r.Shared, want)
			}
		}
	}
	check("after CreateRoom", f.s)
	check("on another handle", f.reopen())
	for _, id := range []string{shared.ID, own.ID} {
		f.addMember(id, bob, alice)
		f.rotate(id, alice, alice, bob)
	}
	check("after AddMember and Rotate", f.s)
}
