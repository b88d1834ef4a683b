package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
)

// migrate-to-kv copies a populated SQLite deployment
// — users (a revoked one too), a room at epoch 2 with its members and
// keys, and a blob — into a kv-mode node on the same data directory (the
// seeds' procedure); the members read the room's history and the blob
// through the kv node; a second run is a no-op and says so; a remote
// target without --ca is refused before any connection; a rollback to
// SQLite serves the SQLite file and leaves the KV in place.
func TestMigrateToKV(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	// 1. A populated SQLite deployment.
	old := harness.StartBus(t, dir)
	adminID, err := identity.Load(filepath.Join(dir, "local_files", "admin.id"))
	if err != nil {
		t.Fatal(err)
	}
	bob, carol := newID(t, dir, "bob"), newID(t, dir, "carol")
	dial := func(b *harness.Bus, id *identity.Identity) *client.Client {
		c, err := client.Dial(ctx, client.Config{Identity: id, Servers: []string{b.HTTPURL}, NATS: []string{b.NATSURL}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	admin := dial(old, adminID)
	for _, u := range []struct {
		h  string
		id *identity.Identity
	}{{"bob", bob}, {"carol", carol}} {
		if _, err := admin.AddUser(ctx, u.h, u.id.SignPub().String(), "member"); err != nil {
			t.Fatal(err)
		}
	}
	dial(old, bob) // publishes bob's KEM key
	room, err := admin.CreateRoom(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.AddMember(ctx, room.ID, "bob", "member"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Send(ctx, room.ID, "t", []byte("epoch one")); err != nil {
		t.Fatal(err)
	}
	if err := admin.Rotate(ctx, room.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Send(ctx, room.ID, "t", []byte("epoch two")); err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 300<<10)
	rand.Read(blob)
	ann, err := admin.SendBlob(ctx, room.ID, "files", bytes.NewReader(blob), client.BlobMeta{Name: "b.bin"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RevokeUser(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	old.Stop(t)

	// 2. The same directory served in kv mode (the rooms' messages stay in
	// the shared stream in its JetStream directory), then the migration.
	kvNode := harness.StartBus(t, dir, "--store", "kv", "--no-bootstrap")
	args := []string{"migrate-to-kv", "--db", filepath.Join("local_files", "unibus.db"), "--nats-url", kvNode.NATSURL, "--replicas", "1"}
	r := harness.Run(t, dir, nil, "", "membershipd", args...)
	if r.Code != 0 {
		t.Fatalf("migrate-to-kv: %+v", r)
	}
	for _, want := range []string{"users: 3 copied, 0 already present", "rooms: 1 copied (2 members, 4 sealed keys), 0 already present", "blobs: 1 copied"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("migration report lacks %q:\n%s", want, r.Stdout)
		}
	}
	us := kvList(t, dir, []string{"--nats-url", kvNode.NATSURL})
	got := map[string]string{}
	for _, u := range us {
		got[u.Handle] = u.Role + "/" + u.Status
	}
	if got["admin"] != "admin/active" || got["bob"] != "member/active" || got["carol"] != "member/revoked" || len(got) != 3 {
		t.Errorf("users in the KV: %v", got)
	}

	// 3. bob reads both epochs and the blob through the kv node; the room
	// is still in the shared stream, and takes a new message there.
	bc := dial(kvNode, bob)
	info, err := bc.RoomInfo(ctx, room.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Room.Epoch != 2 || len(info.Members) != 2 || !info.Room.Shared {
		t.Errorf("room after migration: epoch %d, %d members, shared %v", info.Room.Epoch, len(info.Members), info.Room.Shared)
	}
	if _, err := dial(kvNode, adminID).Send(ctx, room.ID, "t", []byte("after the migration")); err != nil {
		t.Fatalf("send through the kv node: %v", err)
	}
	var mu sync.Mutex
	var texts []string
	lctx, lcancel := context.WithTimeout(ctx, 20*time.Second)
	err = bc.Listen(lctx, room.ID, client.ListenOptions{Topic: "t", FromStart: true, OnError: func(err error) { t.Errorf("listen: %v", err) }}, func(m client.Message) {
		mu.Lock()
		defer mu.Unlock()
		texts = append(texts, string(m.Data))
		if len(texts) == 3 {
			lcancel()
		}
	})
	lcancel()
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("listen through the kv node: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(texts, "|") != "epoch one|epoch two|after the migration" {
		t.Errorf("history through the kv node: %q", texts)
	}
	var out bytes.Buffer
	if _, err := bc.GetBlob(ctx, room.ID, ann, &out, nil); err != nil || !bytes.Equal(out.Bytes(), blob) {
		t.Errorf("blob through the kv node: %v (%d bytes)", err, out.Len())
	}

	// 4. A second run changes nothing and says so.
	r = harness.Run(t, dir, nil, "", "membershipd", args...)
	if r.Code != 0 || !strings.Contains(r.Stdout, "nothing to do") || !strings.Contains(r.Stdout, "users: 0 copied, 3 already present") {
		t.Fatalf("second run: %+v", r)
	}

	// 5. A remote target without --ca is refused before connecting.
	r = harness.Run(t, dir, nil, "", "membershipd", "migrate-to-kv", "--db", filepath.Join("local_files", "unibus.db"), "--nats-url", "nats://192.0.2.10:4250", "--replicas", "3")
	if r.Code != 2 || !strings.Contains(r.Stderr, "refusing 192.0.2.10:4250 without --ca") || strings.Contains(r.Stderr, "connect") {
		t.Fatalf("remote target without --ca: %+v", r)
	}

	// 6. Rollback: the same directory started without --store kv serves its
	// SQLite file again, and the KV data is left in place.
	kvNode.Stop(t)
	back := harness.StartBus(t, dir, "--no-bootstrap")
	ac := dial(back, adminID)
	users, err := ac.ListUsers(ctx)
	if err != nil || len(users) != 3 {
		t.Fatalf("users after rollback to sqlite: %d, %v", len(users), err)
	}
	back.Stop(t)
	again := harness.StartBus(t, dir, "--store", "kv", "--no-bootstrap")
	if us := kvList(t, dir, []string{"--nats-url", again.NATSURL}); len(us) != 3 {
		t.Fatalf("KV after a rollback and return: %d users", len(us))
	}
}
