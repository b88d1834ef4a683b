package sqlite

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/store"
)

// A database written at schema version 2 (before rooms had the shared
// flag and the deployment table existed) opens, migrates, and reads as it
// was written, its rooms with Shared false.
func TestMigrateFromVersion2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unibus.db")
	alice, bob := strings.Repeat("a", 64), strings.Repeat("b", 64)
	room := strings.Repeat("c", 32)
	created := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

	old, err := sql.Open("sqlite", dsn(path, "foreign_keys(1)"))
	if err != nil {
		t.Fatal(err)
	}
	for i, stmt := range []string{
		migrations[0],
		migrations[1],
		"PRAGMA user_version = 2",
		fmt.Sprintf(`INSERT INTO users VALUES ('%s', 'alice', 'admin', 'active', NULL, NULL, %d, %d)`, alice, toDB(created), toDB(created)),
		fmt.Sprintf(`INSERT INTO users VALUES ('%s', 'bob', 'member', 'active', NULL, NULL, %d, %d)`, bob, toDB(created), toDB(created)),
		fmt.Sprintf(`INSERT INTO rooms (id, name, created_by, created_at, epoch, rotation_pending, max_age, max_bytes)
			VALUES ('%s', 'ops', '%s', %d, 2, 1, %d, %d)`, room, alice, toDB(created), int64(time.Hour), 1<<30),
		fmt.Sprintf(`INSERT INTO epochs VALUES ('%s', 1, '%s', 'create', %d)`, room, alice, toDB(created)),
		fmt.Sprintf(`INSERT INTO epochs VALUES ('%s', 2, '%s', 'rotate', %d)`, room, alice, toDB(created.Add(time.Minute))),
		fmt.Sprintf(`INSERT INTO members VALUES ('%s', '%s', 'owner', '%s', %d)`, room, alice, alice, toDB(created)),
		fmt.Sprintf(`INSERT INTO members VALUES ('%s', '%s', 'member', '%s', %d)`, room, bob, alice, toDB(created)),
		fmt.Sprintf(`INSERT INTO sealed_keys VALUES ('%s', '%s', 1, '%s', x'00a1ff', x'5151')`, room, alice, alice),
		fmt.Sprintf(`INSERT INTO sealed_keys VALUES ('%s', '%s', 2, '%s', x'00a2ff', x'5252')`, room, alice, alice),
		fmt.Sprintf(`INSERT INTO sealed_keys VALUES ('%s', '%s', 2, '%s', x'00b2ff', x'5353')`, room, bob, alice),
	} {
		if _, err := old.ExecContext(t.Context(), stmt); err != nil {
			t.Fatalf("statement %d: %v", i, err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, path)
	ctx := t.Context()
	var v int
	if err := s.r.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("user_version %d (%v), want %d", v, err, len(migrations))
	}
	want := store.Room{ID: room, Name: "ops", CreatedBy: alice, CreatedAt: created, Epoch: 2, RotationPending: true, MaxAge: time.Hour, MaxBytes: 1 << 30}
	if r, err := s.GetRoom(ctx, room); err != nil || r != want {
		t.Errorf("GetRoom:\n got %+v, %v\nwant %+v", r, err, want)
	}
	if rs, err := s.ListRooms(ctx, bob); err != nil || len(rs) != 1 || rs[0] != want {
		t.Errorf("ListRooms: %+v, %v", rs, err)
	}
	if e, err := s.Epoch(ctx, room, 2); err != nil || e.CreatedBy != alice || e.Reason != store.EpochRotate || !e.CreatedAt.Equal(created.Add(time.Minute)) {
		t.Errorf("Epoch(2): %+v, %v", e, err)
	}
	if k, err := s.SealedKey(ctx, room, bob, 2); err != nil || string(k.Sealed) != "\x00\xb2\xff" || string(k.Sig) != "SS" || k.Sealer != alice {
		t.Errorf("SealedKey(bob, 2): %+v, %v", k, err)
	}
	if ks, err := s.SealedKeys(ctx, room, alice); err != nil || len(ks) != 2 {
		t.Errorf("SealedKeys(alice): %+v, %v", ks, err)
	}
	if ms, err := s.ListMembers(ctx, room); err != nil || len(ms) != 2 {
		t.Errorf("ListMembers: %+v, %v", ms, err)
	}
	// The migrated file takes protocol 2's writes.
	next := store.Room{ID: strings.Repeat("d", 32), Name: "new", CreatedBy: alice, CreatedAt: created, Shared: true}
	if err := s.CreateRoom(ctx, next, store.Member{SignPub: alice, AddedBy: alice, AddedAt: created},
		store.SealedKey{Room: next.ID, Epoch: 1, Member: alice, Sealer: alice, Sealed: []byte{1}, Sig: []byte{2}}); err != nil {
		t.Fatal(err)
	}
	if r, err := s.GetRoom(ctx, next.ID); err != nil || !r.Shared {
		t.Errorf("GetRoom(new shared room): %+v, %v", r, err)
	}
	if id, err := s.DeploymentID(ctx); err != nil || !store.ValidDeploymentID(id) {
		t.Errorf("DeploymentID: %q, %v", id, err)
	}
}

// The per-epoch lookups are single-row searches of the primary keys, never
// scans of the epochs or sealed keys.
func TestLookupsUsePrimaryKeys(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "unibus.db"))
	for name, q := range map[string]string{"sealed key": sealedKeyQuery, "epoch": epochQuery} {
		args := []any{"r", "m", 1}
		if name == "epoch" {
			args = []any{"r", 1}
		}
		rows, err := s.r.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		text := strings.Join(plan, "; ")
		t.Logf("%s: %s", name, text)
		if strings.Contains(text, "SCAN") || !strings.Contains(text, "PRIMARY KEY") {
			t.Errorf("%s lookup: plan %q, want searches by primary key only", name, text)
		}
	}
}

// The deployment id outlives the process: the same after Close and Open.
func TestDeploymentIDAfterReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unibus.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.DeploymentID(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := openTest(t, path).DeploymentID(t.Context()); err != nil || got != id {
		t.Fatalf("DeploymentID after reopening: %q, %v; want %q", got, err, id)
	}
	if other, err := openTest(t, filepath.Join(t.TempDir(), "other.db")).DeploymentID(t.Context()); err != nil || other == id {
		t.Fatalf("another deployment's id: %q, %v; want one of its own", other, err)
	}
}
