package storetest

import (
	"time"

	"github.com/unibus/unibus/internal/store"
)

var timeTests = []test{
	{"TimesUTC", testTimesUTC},
}

// Times given in another zone come back in UTC, to the millisecond.
func testTimesUTC(f *fixture) {
	zone := time.FixedZone("UTC-07:00", -7*3600)
	created := time.Date(2031, 12, 31, 23, 59, 59, 999_999_999, zone)
	later := created.Add(36*time.Hour + 123456789)
	u := store.User{SignPub: signPub("alice"), Handle: "alice", Role: store.RoleMember, Status: store.StatusActive, CreatedAt: created, UpdatedAt: created}
	if err := f.s.AddUser(f.ctx, u); err != nil {
		f.t.Fatalf("AddUser: %v", err)
	}
	got := f.getUser(u.SignPub)
	checkTime(f.t, "CreatedAt", got.CreatedAt, created)
	if err := f.s.SetKEMKey(f.ctx, u.SignPub, filler(kemPubSize, "kem"), filler(sigSize, "sig"), later); err != nil {
		f.t.Fatalf("SetKEMKey: %v", err)
	}
	checkTime(f.t, "UpdatedAt after SetKEMKey", f.getUser(u.SignPub).UpdatedAt, later)

	r := store.Room{ID: roomID("ops"), Name: "ops", CreatedBy: u.SignPub, CreatedAt: created, MaxAge: 90 * time.Minute, MaxBytes: 1}
	o := store.Member{Room: r.ID, SignPub: u.SignPub, Role: store.RoomOwner, AddedBy: u.SignPub, AddedAt: created}
	if err := f.s.CreateRoom(f.ctx, r, o, sealedKey(r.ID, 1, u.SignPub, u.SignPub, 0)); err != nil {
		f.t.Fatalf("CreateRoom: %v", err)
	}
	checkTime(f.t, "room CreatedAt", f.room(r.ID).CreatedAt, created)
	m, err := f.s.GetMember(f.ctx, r.ID, u.SignPub)
	if err != nil {
		f.t.Fatalf("GetMember: %v", err)
	}
	checkTime(f.t, "AddedAt", m.AddedAt, created)
	rot := store.Rotation{Room: r.ID, Epoch: 2, By: u.SignPub, Reason: store.EpochRotate, Keys: keysFor(r.ID, 2, u.SignPub, u.SignPub), At: later}
	if err := f.s.Rotate(f.ctx, rot); err != nil {
		f.t.Fatalf("Rotate: %v", err)
	}
	eps, err := f.s.Epochs(f.ctx, r.ID)
	if err != nil || len(eps) != 2 {
		f.t.Fatalf("Epochs: %d, %v", len(eps), err)
	}
	checkTime(f.t, "epoch 1 CreatedAt", eps[0].CreatedAt, created)
	checkTime(f.t, "epoch 2 CreatedAt", eps[1].CreatedAt, later)
	revoked, err := f.s.RevokeUser(f.ctx, u.SignPub, later.Add(time.Hour))
	if err != nil {
		f.t.Fatalf("RevokeUser: %v", err)
	}
	checkTime(f.t, "UpdatedAt after RevokeUser", revoked.UpdatedAt, later.Add(time.Hour))
	if got := f.room(r.ID); got.MaxAge != r.MaxAge || got.MaxBytes != r.MaxBytes {
		f.t.Errorf("retention: got %v/%d, want %v/%d", got.MaxAge, got.MaxBytes, r.MaxAge, r.MaxBytes)
	}

	// Nonce expiry compares instants, not wall-clock text in some zone.
	key, n := u.SignPub, nonce("zone")
	now := later.In(zone)
	wantErr(f.t, "UseNonce", f.s.UseNonce(f.ctx, key, n, now, now.Add(window)), nil)
	inUTC := now.Add(window / 2).UTC()
	wantErr(f.t, "UseNonce in UTC", f.s.UseNonce(f.ctx, key, n, inUTC, inUTC.Add(window)), store.ErrReplay)
	east := now.Add(window + time.Second).In(time.FixedZone("UTC+14:00", 14*3600))
	wantErr(f.t, "UseNonce after expiry, east", f.s.UseNonce(f.ctx, key, n, east, east.Add(window)), nil)
}
