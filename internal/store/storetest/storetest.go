// Package storetest is the conformance suite for store.Store: every rule in
// store.go's doc comments, checked through the interface only, so that the
// SQLite and the JetStream-KV backends are held to the same behaviour.
//
// A backend's test calls Run with a Backend that opens a fresh, empty store
// (and registers its own cleanup), opens a second handle on the same data,
// and, for a backend that opens in the background, makes a store that is
// not open yet:
//
//	func TestConformance(t *testing.T) {
//		paths := map[store.Store]string{}
//		storetest.Run(t, storetest.Backend{
//			Open: func(t *testing.T) store.Store {
//				path := filepath.Join(t.TempDir(), "unibus.db")
//				s := openTest(t, path)
//				paths[s] = path
//				return s
//			},
//			Reopen: func(t *testing.T, s store.Store) store.Store { return openTest(t, paths[s]) },
//		})
//	}
//
// The suite assumes nothing about timing beyond the context it passes, and
// nothing about a backend's internals. It is not a benchmark.
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/store"
)

// Backend opens the stores the suite runs against.
type Backend struct {
	// Open returns a fresh, empty, open store. It is called once per
	// subtest and registers the store's cleanup.
	Open func(t *testing.T) store.Store
	// Reopen returns a second handle on the data of s (a store Open
	// returned), as another process (SQLite: the same file) or another
	// node (kv: the same buckets) opens it, and registers its cleanup.
	Reopen func(t *testing.T, s store.Store) store.Store
	// NotOpen returns a store whose open cannot complete during the test
	// (kv: JetStream never answers). It is nil for a backend whose
	// constructor returns only an open store (SQLite).
	NotOpen func(t *testing.T) store.Store
}

// Run runs the conformance suite against b.
func Run(t *testing.T, b Backend) {
	t.Helper()
	groups := [][]test{userTests, roomTests, memberTests, rotationTests, removeTests, nonceTests, timeTests, auditTests, watchTests,
		sharedTests, lookupTests, deploymentTests, usageTests}
	for _, g := range groups {
		for _, tc := range g {
			t.Run(tc.name, func(t *testing.T) {
				s := b.Open(t)
				reopen := func() store.Store {
					t.Helper()
					return b.Reopen(t, s)
				}
				tc.fn(&fixture{t: t, s: s, ctx: t.Context(), reopen: reopen})
			})
		}
	}
	if b.NotOpen != nil {
		t.Run("NotOpenYet", func(t *testing.T) { testNotOpenYet(t, b.NotOpen(t)) })
		t.Run("NotOpenYetLookups", func(t *testing.T) { testNotOpenYetLookups(t, b.NotOpen(t)) })
	}
}

// test is one conformance subtest.
type test struct {
	name string
	fn   func(f *fixture)
}

// fixture is a subtest's store with helpers that fail the test on error.
type fixture struct {
	t   *testing.T
	s   store.Store
	ctx context.Context
	// reopen opens a second handle on the store's data (Backend.Reopen).
	reopen func() store.Store
}

// sub returns the fixture for a nested subtest sharing the same store.
func (f *fixture) sub(t *testing.T) *fixture {
	return &fixture{t: t, s: f.s, ctx: f.ctx, reopen: f.reopen}
}

// base is the suite's clock. It is deliberately not UTC and has sub-millisecond
// digits, so every time check also checks UTC conversion and precision.
var base = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+05:30", 5*3600+30*60))

// at returns the suite's time i minutes after base.
func at(i int) time.Time { return base.Add(time.Duration(i) * time.Minute) }

// signPub returns a deterministic 64-hex sign-pub for a test user.
func signPub(name string) string {
	h := sha256.Sum256([]byte("unibus storetest sign-pub " + name))
	return hex.EncodeToString(h[:])
}

// roomID returns a deterministic 32-hex room id.
func roomID(name string) string {
	h := sha256.Sum256([]byte("unibus storetest room " + name))
	return hex.EncodeToString(h[:16])
}

// filler returns n deterministic bytes derived from label. The first byte is
// 0x00 and the last 0xff, so a backend that trims, text-encodes or
// NUL-terminates them fails the byte-exact checks.
func filler(n int, label string) []byte {
	out := make([]byte, 0, n+sha256.Size)
	var ctr [8]byte
	for i := uint64(0); len(out) < n; i++ {
		binary.BigEndian.PutUint64(ctr[:], i)
		h := sha256.Sum256(append([]byte(label), ctr[:]...))
		out = append(out, h[:]...)
	}
	out = out[:n]
	out[0], out[n-1] = 0x00, 0xff
	return out
}

// Sizes of realistic key material: an HPKE MLKEM768X25519 encapsulated key
// plus a sealed 32-byte room key, an ed25519 signature, a KEM public key.
const (
	sealedSize = 1120 + 32 + 16
	sigSize    = 64
	kemPubSize = 1216
)

// sealedKey returns a deterministic sealed key; variant distinguishes two
// seals of the same (room, epoch, member), e.g. by competing rotations.
func sealedKey(room string, epoch uint64, member, sealer string, variant int) store.SealedKey {
	label := fmt.Sprintf("%s/%d/%s/%s/%d", room, epoch, member, sealer, variant)
	return store.SealedKey{
		Room:   room,
		Epoch:  epoch,
		Member: member,
		Sealer: sealer,
		Sealed: filler(sealedSize, "sealed "+label),
		Sig:    filler(sigSize, "sig "+label),
	}
}

// keysFor returns one sealed key per member for (room, epoch).
func keysFor(room string, epoch uint64, sealer string, members ...string) []store.SealedKey {
	ks := make([]store.SealedKey, 0, len(members))
	for _, m := range members {
		ks = append(ks, sealedKey(room, epoch, m, sealer, 0))
	}
	return ks
}

// addUser registers an active user named handle and returns the record.
func (f *fixture) addUser(handle string, role store.Role) store.User {
	f.t.Helper()
	u := store.User{SignPub: signPub(handle), Handle: handle, Role: role, Status: store.StatusActive, CreatedAt: at(0), UpdatedAt: at(0)}
	if err := f.s.AddUser(f.ctx, u); err != nil {
		f.t.Fatalf("AddUser(%s): %v", handle, err)
	}
	return u
}

// users registers active members with these handles and returns their sign-pubs.
func (f *fixture) users(handles ...string) []string {
	f.t.Helper()
	out := make([]string, 0, len(handles))
	for _, h := range handles {
		out = append(out, f.addUser(h, store.RoleMember).SignPub)
	}
	return out
}

// newRoom returns the record CreateRoom is given for a room named name.
func newRoom(name, owner string) store.Room {
	return store.Room{ID: roomID(name), Name: name, CreatedBy: owner, CreatedAt: at(1), MaxAge: 72 * time.Hour, MaxBytes: 1 << 30}
}

// createRoom creates the room name owned by owner (a sign-pub) and adds
// members (sign-pubs) with role member, and returns the room id.
func (f *fixture) createRoom(name, owner string, members ...string) string {
	f.t.Helper()
	r := newRoom(name, owner)
	o := store.Member{Room: r.ID, SignPub: owner, Role: store.RoomOwner, AddedBy: owner, AddedAt: at(1)}
	if err := f.s.CreateRoom(f.ctx, r, o, sealedKey(r.ID, 1, owner, owner, 0)); err != nil {
		f.t.Fatalf("CreateRoom(%s): %v", name, err)
	}
	for _, m := range members {
		f.addMember(r.ID, m, owner)
	}
	return r.ID
}

// addMember adds member to room with a key for the room's current epoch.
func (f *fixture) addMember(room, member, by string) {
	f.t.Helper()
	epoch := f.room(room).Epoch
	m := store.Member{Room: room, SignPub: member, Role: store.RoomMember, AddedBy: by, AddedAt: at(2)}
	if err := f.s.AddMember(f.ctx, m, []store.SealedKey{sealedKey(room, epoch, member, by, 0)}); err != nil {
		f.t.Fatalf("AddMember(%s): %v", member[:8], err)
	}
}

// rotate moves room to its next epoch with keys for members.
func (f *fixture) rotate(room, by string, members ...string) uint64 {
	f.t.Helper()
	next := f.room(room).Epoch + 1
	rot := store.Rotation{Room: room, Epoch: next, By: by, Reason: store.EpochRotate, Keys: keysFor(room, next, by, members...), At: at(int(next))}
	if err := f.s.Rotate(f.ctx, rot); err != nil {
		f.t.Fatalf("Rotate(%d): %v", next, err)
	}
	return next
}

// room returns the room record.
func (f *fixture) room(id string) store.Room {
	f.t.Helper()
	r, err := f.s.GetRoom(f.ctx, id)
	if err != nil {
		f.t.Fatalf("GetRoom: %v", err)
	}
	return r
}

// memberIDs returns the sign-pubs of the room's members, in store order.
func (f *fixture) memberIDs(room string) []string {
	f.t.Helper()
	ms, err := f.s.ListMembers(f.ctx, room)
	if err != nil {
		f.t.Fatalf("ListMembers: %v", err)
	}
	out := []string{}
	for _, m := range ms {
		out = append(out, m.SignPub)
	}
	return out
}

// keyEpochs returns the epochs of member's sealed keys for room, in store order.
func (f *fixture) keyEpochs(room, member string) []uint64 {
	f.t.Helper()
	ks, err := f.s.SealedKeys(f.ctx, room, member)
	if err != nil {
		f.t.Fatalf("SealedKeys: %v", err)
	}
	out := []uint64{}
	for _, k := range ks {
		out = append(out, k.Epoch)
	}
	return out
}

// snapshot is everything observable about one room, for "nothing changed"
// checks after a refused write.
type snapshot struct {
	room    store.Room
	members []store.Member
	epochs  []store.Epoch
	keys    map[string][]store.SealedKey
	roomIDs map[string][]string
}

// snap reads the room and, for each of users, its keys and room ids.
func (f *fixture) snap(room string, users ...string) snapshot {
	f.t.Helper()
	var s snapshot
	var err error
	if s.room, err = f.s.GetRoom(f.ctx, room); err != nil {
		f.t.Fatalf("GetRoom: %v", err)
	}
	if s.members, err = f.s.ListMembers(f.ctx, room); err != nil {
		f.t.Fatalf("ListMembers: %v", err)
	}
	if s.epochs, err = f.s.Epochs(f.ctx, room); err != nil {
		f.t.Fatalf("Epochs: %v", err)
	}
	s.keys = map[string][]store.SealedKey{}
	s.roomIDs = map[string][]string{}
	for _, u := range users {
		if s.keys[u], err = f.s.SealedKeys(f.ctx, room, u); err != nil {
			f.t.Fatalf("SealedKeys: %v", err)
		}
		ids, err := f.s.RoomIDs(f.ctx, u)
		if err != nil {
			f.t.Fatalf("RoomIDs: %v", err)
		}
		slices.Sort(ids)
		s.roomIDs[u] = ids
	}
	return s
}

// unchanged fails the test if the room's state differs from before.
func (f *fixture) unchanged(before snapshot) {
	f.t.Helper()
	users := make([]string, 0, len(before.keys))
	for u := range before.keys {
		users = append(users, u)
	}
	after := f.snap(before.room.ID, users...)
	if !reflect.DeepEqual(after.room, before.room) {
		f.t.Errorf("room changed:\n got %+v\nwant %+v", after.room, before.room)
	}
	if !reflect.DeepEqual(after.members, before.members) {
		f.t.Errorf("members changed:\n got %+v\nwant %+v", after.members, before.members)
	}
	if !reflect.DeepEqual(after.epochs, before.epochs) {
		f.t.Errorf("epochs changed:\n got %+v\nwant %+v", after.epochs, before.epochs)
	}
	for _, u := range users {
		if !reflect.DeepEqual(after.keys[u], before.keys[u]) {
			f.t.Errorf("sealed keys of %s changed: %d keys, had %d", u[:8], len(after.keys[u]), len(before.keys[u]))
		}
		if !slices.Equal(after.roomIDs[u], before.roomIDs[u]) {
			f.t.Errorf("room ids of %s changed: got %v, want %v", u[:8], after.roomIDs[u], before.roomIDs[u])
		}
	}
}

// wantErr fails the test unless errors.Is(err, want); want nil means success.
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("%s: unexpected error: %v", what, err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

// checkTime fails the test unless got is in UTC and within a millisecond
// of want (backends must keep at least millisecond precision).
func checkTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if got.Location() != time.UTC {
		t.Errorf("%s: location %v, want UTC", what, got.Location())
	}
	if d := got.Sub(want); d <= -time.Millisecond || d >= time.Millisecond {
		t.Errorf("%s: got %v, want %v (off by %v)", what, got, want.UTC(), d)
	}
}
