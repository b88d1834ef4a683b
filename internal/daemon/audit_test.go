package daemon_test

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
)

// TestAuditLogRecordsEveryAdminAction runs the E2E admin scenario through
// the SDK and checks that every admin and membership action is in the
// audit log, in order, with the actor's key and the signed request's
// digest, and that the chain verifies.
func TestAuditLogRecordsEveryAdminAction(t *testing.T) { forEachStore(t, testAuditLog) }

func testAuditLog(t *testing.T, kind storeKind) {
	b := startBus(t, storeOption(kind))
	ctx := ctxT(t)
	admin := b.adm.SignPub().String()
	alice, ac := b.user(t, "alice") // user.add by admin, user.kem_key by alice
	bob, _ := b.user(t, "bob")
	room, err := b.admin.CreateRoom(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob"} {
		if err := b.admin.AddMember(ctx, room.ID, u, "member"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.admin.Rotate(ctx, room.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.admin.RemoveMember(ctx, room.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := ac.Send(ctx, room.ID, "", []byte("not an admin action")); err != nil {
		t.Fatal(err)
	}
	// A refused change: re-adding alice's key.
	_, err = b.admin.AddUser(ctx, "alice2", alice.SignPub().String(), "admin")
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != 409 {
		t.Fatalf("re-add: %v", err)
	}
	if _, err := b.admin.RevokeUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}

	es, err := b.d.Store().AuditEntries(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(audit.Head{}, es); err != nil {
		t.Fatalf("chain: %v", err)
	}
	a, bo := alice.SignPub().String(), bob.SignPub().String()
	want := []struct{ actor, action, room, subject string }{
		{"", audit.ActionBootstrapAdmin, "", admin},
		{admin, audit.ActionUserAdd, "", a},
		{a, audit.ActionUserKEMKey, "", a},
		{admin, audit.ActionUserAdd, "", bo},
		{bo, audit.ActionUserKEMKey, "", bo},
		{admin, audit.ActionRoomCreate, room.ID, admin},
		{admin, audit.ActionMemberAdd, room.ID, a},
		{admin, audit.ActionMemberAdd, room.ID, bo},
		{admin, audit.ActionRoomRotate, room.ID, ""},
		{admin, audit.ActionMemberRemove, room.ID, bo},
		{admin, audit.ActionUserAdd, "", a},
		{admin, audit.ActionFailed, "", a},
		{admin, audit.ActionUserRevoke, "", a},
	}
	if len(es) != len(want) {
		for _, e := range es {
			t.Logf("%d %s %s", e.Seq, e.Action, e.Detail)
		}
		t.Fatalf("%d audit entries, want %d", len(es), len(want))
	}
	for i, w := range want {
		e := es[i]
		if e.Action != w.action || e.Room != w.room || e.Subject != w.subject || (w.actor != "" && e.Actor != w.actor) {
			t.Errorf("entry %d: %s by %.8s room %.8s subject %.8s; want %s by %.8s room %.8s subject %.8s",
				e.Seq, e.Action, e.Actor, e.Room, e.Subject, w.action, w.actor, w.room, w.subject)
		}
		if e.Via == audit.ViaAPI && len(e.Request) != 64 {
			t.Errorf("entry %d has no request digest", e.Seq)
		}
	}
	if es[0].Via != audit.ViaBootstrap || len(es[0].Actor) != 64 || es[0].Actor == admin {
		t.Errorf("bootstrap entry: %+v", es[0])
	}
	if es[11].Refers != es[10].Seq || !strings.Contains(es[11].Detail, "already registered") {
		t.Errorf("failed entry: %+v", es[11])
	}
	if es[6].Request == es[7].Request {
		t.Error("two requests share a digest")
	}
}

// TestAuditFailureRefusesTheChange: when the audit log cannot be written
// the API answers 503 and the change is not made (fail closed: no
// unaudited admin action).
func TestAuditFailureRefusesTheChange(t *testing.T) {
	b := startBus(t)
	ctx := ctxT(t)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(b.cfg.DataDir, "unibus.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Someone damaged the newest entry (triggers dropped first).
	for _, q := range []string{"DROP TRIGGER audit_no_update", "UPDATE audit SET entry = X'7b' WHERE seq = (SELECT max(seq) FROM audit)"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	id := fmt.Sprintf("%064x", 7)
	_, err = b.admin.AddUser(ctx, "mallory", id, "admin")
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != 503 || !strings.Contains(ae.Message, "unavailable") {
		t.Fatalf("add user with a broken audit log: %v", err)
	}
	if _, err := b.d.Store().GetUser(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the unaudited change was made: %v", err)
	}
}
