package kvstore_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/kvstore"
)

// WatchAccess reports, to a watcher on one store handle (one node), the
// users whose access changed through another handle (another node): a
// member added or removed, a user revoked. It does not report the state
// that existed when it started, nor changes that leave access as it was.
func TestWatchAccess(t *testing.T) {
	writer, n := openStore(t)
	ctx := t.Context()
	addUsers(t, writer, alice, bob, carol)
	if err := writer.CreateRoom(ctx, store.Room{ID: room, Name: "ops", CreatedBy: alice, CreatedAt: t0}, store.Member{SignPub: alice, AddedBy: alice, AddedAt: t0}, key(1, alice, alice, "a1")); err != nil {
		t.Fatal(err)
	}
	watcher, err := kvstore.Open(ctx, n.Control(t), kvstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := watcher.WatchAccess(wctx, func(pub string) { mu.Lock(); got = append(got, pub); mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	expect := func(step string, want ...string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			g := slices.Clone(got)
			mu.Unlock()
			if slices.Equal(g, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: changed %v, want %v", step, g, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		mu.Lock()
		got = nil
		mu.Unlock()
	}
	if err := writer.SetKEMKey(ctx, carol, []byte("kem"), []byte("sig"), t0); err != nil {
		t.Fatal(err)
	}
	if err := writer.AddMember(ctx, store.Member{Room: room, SignPub: bob, Role: store.RoomMember, AddedBy: alice, AddedAt: t0}, []store.SealedKey{key(1, bob, alice, "b1")}); err != nil {
		t.Fatal(err)
	}
	expect("a KEM key update then bob added", bob)
	if err := writer.Rotate(ctx, store.Rotation{Room: room, Epoch: 2, By: alice, Keys: []store.SealedKey{key(2, alice, alice, "a2"), key(2, bob, alice, "b2")}, At: t0}); err != nil {
		t.Fatal(err)
	}
	if err := writer.RemoveMember(ctx, room, bob, nil); err != nil {
		t.Fatal(err)
	}
	expect("a rotation then bob removed", bob)
	if _, err := writer.RevokeUser(ctx, carol, t0); err != nil {
		t.Fatal(err)
	}
	expect("carol revoked", carol)
}
