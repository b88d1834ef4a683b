package migrate_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/blobstore/fileblobs"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/internal/store/migrate"
	"github.com/unibus/unibus/internal/store/sqlite"
	"github.com/unibus/unibus/internal/testnode"
)

var (
	alice = strings.Repeat("a", 64)
	bob   = strings.Repeat("b", 64)
	carol = strings.Repeat("c", 64)
	room  = strings.Repeat("0", 31) + "1"
	t0    = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
)

func key(epoch uint64, member, tag string) store.SealedKey {
	return store.SealedKey{Room: room, Epoch: epoch, Member: member, Sealer: alice, Sealed: []byte("sealed " + tag), Sig: []byte("sig " + tag)}
}

// populate writes a small SQLite deployment: alice (admin) and bob in a
// room at epoch 2, carol revoked, and one blob.
func populate(t *testing.T, db, blobDir string) {
	t.Helper()
	ctx := t.Context()
	s, err := sqlite.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, u := range []store.User{
		{SignPub: alice, Handle: "alice", Role: store.RoleAdmin, Status: store.StatusActive, CreatedAt: t0, UpdatedAt: t0},
		{SignPub: bob, Handle: "bob", Role: store.RoleMember, Status: store.StatusActive, CreatedAt: t0, UpdatedAt: t0},
		{SignPub: carol, Handle: "carol", Role: store.RoleMember, Status: store.StatusActive, CreatedAt: t0, UpdatedAt: t0},
	} {
		if err := s.AddUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RevokeUser(ctx, carol, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRoom(ctx, store.Room{ID: room, Name: "ops", CreatedBy: alice, CreatedAt: t0}, store.Member{SignPub: alice, AddedBy: alice, AddedAt: t0}, key(1, alice, "a1")); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMember(ctx, store.Member{Room: room, SignPub: bob, Role: store.RoomMember, AddedBy: alice, AddedAt: t0}, []store.SealedKey{key(1, bob, "b1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Rotate(ctx, store.Rotation{Room: room, Epoch: 2, By: alice, Reason: store.EpochRotate, Keys: []store.SealedKey{key(2, alice, "a2"), key(2, bob, "b2")}, At: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendAudit(ctx, audit.Record{Time: t0, Actor: audit.ActorLocal, Via: audit.ViaCLI, Action: audit.ActionUserAdd, Subject: alice}); err != nil {
		t.Fatal(err)
	}
	blobs, err := fileblobs.Open(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 100<<10)
	rand.Read(data)
	sum := sha256.Sum256(data)
	if _, err := blobs.Put(ctx, room, hex.EncodeToString(sum[:]), bytes.NewReader(data), 1<<20); err != nil {
		t.Fatal(err)
	}
}

// ToKV copies users (the revoked one too), a room with its members, epochs
// and keys, and blobs; records each copy in the KV's audit log, linked to
// the SQLite log's head; and a second run copies nothing. A user that
// differs in the KV is a conflict, left unchanged.
func TestToKV(t *testing.T) {
	dir := t.TempDir()
	db, blobDir := filepath.Join(dir, "unibus.db"), filepath.Join(dir, "blobs")
	populate(t, db, blobDir)
	n := testnode.Start(t, "")
	nc := n.Control(t)
	o := migrate.Options{DB: db, BlobDir: blobDir, Conn: nc, Replicas: 1,
		Record: func(ctx context.Context, log store.AuditLog, rec audit.Record, apply func() error) error {
			return store.AuditedAs(ctx, log, "tester", rec.Via, rec, apply)
		}}
	rep, err := migrate.ToKV(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	want := migrate.Report{Users: 3, Rooms: 1, Members: 2, Keys: 4, Blobs: 1}
	if rep.String() != want.String() {
		t.Fatalf("report:\n%s\nwant:\n%s", rep, want)
	}

	kv, err := kvstore.Open(t.Context(), nc, kvstore.Options{NoCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	if u, err := kv.GetUser(t.Context(), carol); err != nil || u.Status != store.StatusRevoked {
		t.Errorf("carol in the KV: %+v %v", u, err)
	}
	if r, err := kv.GetRoom(t.Context(), room); err != nil || r.Epoch != 2 {
		t.Errorf("room in the KV: %+v %v", r, err)
	}
	if ks, err := kv.SealedKeys(t.Context(), room, bob); err != nil || len(ks) != 2 {
		t.Errorf("bob's keys in the KV: %d %v", len(ks), err)
	}
	es, err := store.ListAudit(t.Context(), kv, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 4 {
		t.Fatalf("%d audit entries in the KV, want 4 (3 users, 1 room)", len(es))
	}
	for _, e := range es {
		if e.Actor != "tester" || e.Via != audit.ViaMigrate || !strings.Contains(e.Detail, "from=unibus.db sqlite_audit_head=1:") {
			t.Errorf("audit entry %+v", e)
		}
	}

	rep, err = migrate.ToKV(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Copied() != 0 || rep.UsersPresent != 3 || rep.RoomsPresent != 1 || rep.BlobsPresent != 1 || len(rep.Conflicts) != 0 {
		t.Fatalf("second run:\n%s", rep)
	}

	// A user the KV holds with another status is reported, not changed.
	s, err := sqlite.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeUser(t.Context(), bob, t0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	rep, err = migrate.ToKV(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Conflicts) != 1 || !strings.Contains(rep.Conflicts[0], bob) {
		t.Fatalf("conflicts: %q", rep.Conflicts)
	}
	if u, _ := kv.GetUser(t.Context(), bob); u.Status != store.StatusActive {
		t.Errorf("a conflict overwrote bob in the KV: %s", u.Status)
	}
}

// A missing SQLite file is refused, not created.
func TestToKVMissingFile(t *testing.T) {
	db := filepath.Join(t.TempDir(), "none.db")
	if _, err := migrate.ToKV(t.Context(), migrate.Options{DB: db}); err == nil {
		t.Fatal("no error for a missing SQLite file")
	}
	if _, err := os.Stat(db); err == nil {
		t.Fatal("the missing SQLite file was created")
	}
}
