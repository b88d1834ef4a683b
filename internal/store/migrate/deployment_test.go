package migrate_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/internal/store/migrate"
	"github.com/unibus/unibus/internal/store/sqlite"
	"github.com/unibus/unibus/internal/testnode"
)

// The KV keeps the SQLite deployment's id and its rooms' shared flag; a KV
// that has an id of its own keeps it, reported as a conflict.
func TestToKVKeepsDeploymentIDAndShared(t *testing.T) {
	dir := t.TempDir()
	db, blobDir := filepath.Join(dir, "unibus.db"), filepath.Join(dir, "blobs")
	populate(t, db, blobDir)
	ctx := t.Context()
	s, err := sqlite.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	shared := strings.Repeat("5", 32)
	if err := s.CreateRoom(ctx, store.Room{ID: shared, Name: "shared", CreatedBy: bob, CreatedAt: t0, MaxAge: time.Hour, Shared: true},
		store.Member{SignPub: bob, AddedBy: bob, AddedAt: t0}, store.SealedKey{Room: shared, Epoch: 1, Member: bob, Sealer: bob, Sealed: []byte("s"), Sig: []byte("g")}); err != nil {
		t.Fatal(err)
	}
	id, err := s.DeploymentID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	n := testnode.Start(t, "")
	o := migrate.Options{DB: db, BlobDir: blobDir, Conn: n.Control(t), Replicas: 1,
		Record: func(ctx context.Context, log store.AuditLog, rec audit.Record, apply func() error) error {
			return store.AuditedAs(ctx, log, "tester", rec.Via, rec, apply)
		}}
	rep, err := migrate.ToKV(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.DeploymentID != id || len(rep.Conflicts) != 0 {
		t.Fatalf("report: deployment id %q, conflicts %q; want %q and none", rep.DeploymentID, rep.Conflicts, id)
	}
	kv, err := kvstore.Open(ctx, n.Control(t), kvstore.Options{NoCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	if got, err := kv.DeploymentID(ctx); err != nil || got != id {
		t.Fatalf("the KV's deployment id: %q, %v; want SQLite's %q", got, err, id)
	}
	for _, r := range []struct {
		id     string
		shared bool
	}{{room, false}, {shared, true}} {
		if got, err := kv.GetRoom(ctx, r.id); err != nil || got.Shared != r.shared {
			t.Errorf("room %s in the KV: %+v, %v; want shared=%v", r.id, got, err, r.shared)
		}
	}

	// Another SQLite deployment into the same KV: its id is a conflict.
	db2 := filepath.Join(t.TempDir(), "other.db")
	populate(t, db2, filepath.Join(dir, "none"))
	o.DB = db2
	rep, err = migrate.ToKV(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.DeploymentID != id || len(rep.Conflicts) != 1 || !strings.Contains(rep.Conflicts[0], "deployment id") {
		t.Fatalf("report: deployment id %q, conflicts %q; want the KV's id kept and one conflict", rep.DeploymentID, rep.Conflicts)
	}
}
