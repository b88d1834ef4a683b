package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/wire"
)

// TestUserQuotas: one member floods with rooms, blobs and messages. Past
// each quota it is refused (quota_exceeded, nothing stored), leaving a
// room does not give a room back, a blob the room holds already is not
// counted twice; another member and the admin keep working throughout;
// and after a restart the ledger still holds what the flooder used.
func TestUserQuotas(t *testing.T) { forEachStore(t, testUserQuotas) }

func testUserQuotas(t *testing.T, kind storeKind) {
	const rooms, blobBytes, msgBytes = 3, 48 << 10, 24 << 10
	b := startBus(t, storeOption(kind), withConfig(func(c *daemon.Config) {
		c.UserReads, c.UserChanges = -1, -1
		c.UserRooms, c.UserBlobBytes, c.UserMsgBytes = rooms, blobBytes, msgBytes
	}))
	ctx := ctxT(t)
	malloryID, mallory := b.user(t, "mallory")
	_, carol := b.user(t, "carol")
	adminWorks := func(when string) {
		t.Helper()
		if _, err := b.admin.ListUsers(ctx); err != nil {
			t.Fatalf("the admin %s: %v", when, err)
		}
	}
	quotaErr := func(what string, err error, status int) {
		t.Helper()
		var ae *client.APIError
		if !errors.Is(err, client.ErrQuotaExceeded) || !errors.As(err, &ae) || ae.Status != status {
			t.Fatalf("%s past the quota: %v, want %d %s", what, err, status, wire.CodeQuotaExceeded)
		}
	}

	// Rooms.
	var mine []string
	for i := range rooms {
		r, err := mallory.CreateRoom(ctx, fmt.Sprintf("mine-%d", i))
		if err != nil {
			t.Fatalf("room %d of %d: %v", i+1, rooms, err)
		}
		mine = append(mine, r.ID)
	}
	_, err := mallory.CreateRoom(ctx, "one too many")
	quotaErr("a room", err, http.StatusForbidden)
	if err := mallory.RemoveMember(ctx, mine[rooms-1], malloryID.SignPub().String()); err != nil {
		t.Fatalf("leave a room: %v", err)
	}
	_, err = mallory.CreateRoom(ctx, "after leaving one")
	quotaErr("a room after leaving one", err, http.StatusForbidden)
	if ids, err := b.d.Store().RoomIDs(ctx, malloryID.SignPub().String()); err != nil || len(ids) != rooms-1 {
		t.Fatalf("mallory is in %d rooms (%v), want %d: a refused creation made one", len(ids), err, rooms-1)
	}
	theirs, err := carol.CreateRoom(ctx, "carol's")
	if err != nil {
		t.Fatalf("another member's room while mallory is at her quota: %v", err)
	}
	adminWorks("after the room flood")

	// Blobs: three of 16 KiB fill the 48 KiB quota.
	first, firstSum, firstID := randomBlob(16 << 10)
	if st, e := putBlob(t, b, malloryID, mine[0], firstID, firstSum, first); st != http.StatusCreated {
		t.Fatalf("blob 1: %d %v", st, e)
	}
	for i := 2; i <= 3; i++ {
		data, sum, id := randomBlob(16 << 10)
		if st, e := putBlob(t, b, malloryID, mine[0], id, sum, data); st != http.StatusCreated {
			t.Fatalf("blob %d: %d %v", i, st, e)
		}
	}
	data, sum, id := randomBlob(1)
	if st, e := putBlob(t, b, malloryID, mine[0], id, sum, data); st != http.StatusInsufficientStorage || e.Code != wire.CodeQuotaExceeded {
		t.Fatalf("a blob past the quota: %d %v, want 507 %s", st, e, wire.CodeQuotaExceeded)
	}
	if st, _ := getBlob(t, b, malloryID, mine[0], id); st != http.StatusNotFound {
		t.Fatalf("the refused blob reads %d, want 404: it was stored", st)
	}
	if st, e := putBlob(t, b, malloryID, mine[0], firstID, firstSum, first); st != http.StatusCreated {
		t.Fatalf("a blob the room holds already, at the quota: %d %v (it costs nothing)", st, e)
	}
	data, sum, id = randomBlob(16 << 10)
	if st, e := putBlob(t, b, malloryID, mine[1], id, sum, data[:8<<10]); st != http.StatusBadRequest && st != http.StatusInsufficientStorage {
		t.Fatalf("a truncated blob at the quota: %d %v", st, e)
	}
	if _, err := carol.PutBlob(ctx, theirs.ID, bytes.NewReader(make([]byte, 32<<10)), client.BlobMeta{Name: "fine"}, nil); err != nil {
		t.Fatalf("another member's blob while mallory is at her quota: %v", err)
	}
	adminWorks("after the blob flood")

	// Messages of 4 KiB: a few fit in 24 KiB, then the relay refuses.
	msg := bytes.Repeat([]byte("m"), 4<<10)
	sent := 0
	for sent < 20 {
		_, err := mallory.Send(ctx, mine[0], "flood", msg)
		if errors.Is(err, client.ErrQuotaExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("message %d: %v", sent+1, err)
		}
		sent++
	}
	t.Logf("%d messages of 4 KiB stored under a 24 KiB quota", sent)
	if sent < 3 || sent > 5 {
		t.Errorf("%d messages of 4 KiB stored under a 24 KiB quota, want 3 to 5 (each carries its envelope)", sent)
	}
	if _, err := carol.Send(ctx, theirs.ID, "fine", msg); err != nil {
		t.Fatalf("another member's message while mallory is at her quota: %v", err)
	}
	adminWorks("after the message flood")

	// A restart keeps the ledger: the quotas still hold.
	b.d.Close()
	d2, err := daemon.Start(ctx, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d2.Close() })
	c2, err := client.Dial(ctx, client.Config{Identity: malloryID, Servers: []string{d2.HTTPURL()}, NATS: []string{d2.NATSURL()}, Logger: testLogger(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, err = c2.CreateRoom(ctx, "after a restart")
	quotaErr("a room after a restart", err, http.StatusForbidden)
	if _, err := c2.Send(ctx, mine[0], "flood", msg); !errors.Is(err, client.ErrQuotaExceeded) {
		t.Fatalf("a message after a restart: %v, want ErrQuotaExceeded", err)
	}
}

// TestUserConnsLimit: a user's data-plane connections on a node are
// bounded; another user is not affected.
func TestUserConnsLimit(t *testing.T) {
	b := startBus(t, withConfig(func(c *daemon.Config) { c.UserConns = 1 }))
	ctx := ctxT(t)
	malloryID, mallory := b.user(t, "mallory")
	_, carol := b.user(t, "carol")
	room, err := mallory.CreateRoom(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.Send(ctx, room.ID, "t", []byte("first connection")); err != nil {
		t.Fatal(err)
	}
	second := b.dial(t, malloryID)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := second.Send(sctx, room.ID, "t", []byte("second connection")); err == nil {
		t.Fatal("a second data-plane connection past a limit of 1 could send")
	}
	theirs, err := carol.CreateRoom(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Send(ctx, theirs.ID, "t", []byte("unaffected")); err != nil {
		t.Fatalf("another user while mallory is at her limit: %v", err)
	}
}

// TestUserDailyChanges: every change may append to the audit log, which is
// never pruned, so a member's changes are bounded per UTC day, not only
// per second: past the budget, 429 quota_exceeded with Retry-After, and
// nothing is done; another member and the admin are not affected.
func TestUserDailyChanges(t *testing.T) {
	const budget = 5
	b := startBus(t, withConfig(func(c *daemon.Config) {
		c.UserReads, c.UserChanges, c.UserRooms = -1, -1, -1
		c.UserDailyChanges = budget
	}))
	ctx := ctxT(t)
	malloryID, mallory := b.user(t, "mallory") // dialing publishes the KEM key: one change
	_, carol := b.user(t, "carol")
	made := 0
	for range budget + 5 {
		_, err := mallory.CreateRoom(ctx, "flood")
		if err == nil {
			made++
			continue
		}
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.Code != wire.CodeQuotaExceeded {
			t.Fatalf("a change past the daily budget: %v, want 429 %s", err, wire.CodeQuotaExceeded)
		}
	}
	if made != budget-1 {
		t.Errorf("%d rooms made under a budget of %d changes a day (one spent on the KEM key), want %d", made, budget, budget-1)
	}
	if ids, err := b.d.Store().RoomIDs(ctx, malloryID.SignPub().String()); err != nil || len(ids) != made {
		t.Fatalf("mallory is in %d rooms (%v), want %d: a refused change was made", len(ids), err, made)
	}
	req := signed(t, b, "POST", "/v1/rooms", []byte(`{}`), malloryID.SignPub().String(), malloryID.SigningKey(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ra := resp.Header.Get("Retry-After"); resp.StatusCode != http.StatusTooManyRequests || ra == "" {
		t.Fatalf("past the budget: %d, Retry-After %q; want 429 with the seconds until 00:00 UTC", resp.StatusCode, ra)
	}
	if _, err := mallory.ListRooms(ctx); err != nil {
		t.Errorf("reads are not changes: %v", err)
	}
	if _, err := carol.CreateRoom(ctx, "fine"); err != nil {
		t.Errorf("another member while mallory's budget is spent: %v", err)
	}
	for i := range budget + 3 {
		if _, err := b.admin.CreateRoom(ctx, fmt.Sprintf("admin-%d", i)); err != nil {
			t.Fatalf("the admin's change %d: %v (admins have no daily budget)", i+1, err)
		}
	}
}
