package main

import (
	"bufio"
	"database/sql"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/harness"
)

func auditJSON(t *testing.T, dir string, args ...string) []audit.Entry {
	t.Helper()
	r := harness.Run(t, dir, nil, "", "membershipd", append([]string{"audit", "--json"}, args...)...)
	if r.Code != 0 {
		t.Fatalf("audit --json: %+v", r)
	}
	var es []audit.Entry
	sc := bufio.NewScanner(strings.NewReader(r.Stdout))
	for sc.Scan() {
		e, err := audit.Unmarshal(sc.Bytes())
		if err != nil {
			t.Fatalf("audit --json line %q: %v", sc.Text(), err)
		}
		es = append(es, e)
	}
	return es
}

var headRE = regexp.MustCompile(`audit log intact: (\d+) entries, head (\d+:[0-9a-f]{64})`)

// TestAuditCommandSQLite: the host admin commands are audited (actor
// "local"), `membershipd audit` lists them, and `audit verify` passes on
// the intact log, fails (exit 1) on an edited entry, and with
// --expect-head fails on a log whose newest entries were cut off.
func TestAuditCommandSQLite(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "u.db")
	id, _ := identity.Generate()
	pub := id.SignPub().String()
	run := func(args ...string) harness.Result {
		return harness.Run(t, dir, nil, "", "membershipd", args...)
	}
	if r := run("user", "add", "--db", db, "--handle", "alice", "--sign-pub", pub, "--role", "member"); r.Code != 0 {
		t.Fatal(r)
	}
	if r := run("user", "add", "--db", db, "--handle", "alice2", "--sign-pub", pub, "--role", "admin"); r.Code != 1 {
		t.Fatal(r)
	}
	if r := run("user", "revoke", "--db", db, pub); r.Code != 0 {
		t.Fatal(r)
	}
	es := auditJSON(t, dir, "--db", db)
	var got []string
	for _, e := range es {
		if e.Actor != audit.ActorLocal || e.Via != audit.ViaCLI || e.Subject != pub {
			t.Errorf("entry %+v", e)
		}
		got = append(got, e.Action)
	}
	if strings.Join(got, " ") != "user.add user.add failed user.revoke" {
		t.Fatalf("actions %v", got)
	}
	if es[2].Refers != 2 {
		t.Errorf("failed entry refers to %d", es[2].Refers)
	}
	r := run("audit", "--db", db)
	if r.Code != 0 || !strings.Contains(r.Stdout, "user.revoke") || !strings.Contains(r.Stdout, "(entry 2 not applied)") {
		t.Fatalf("audit table: %+v", r)
	}

	r = run("audit", "verify", "--db", db)
	m := headRE.FindStringSubmatch(r.Stdout)
	if r.Code != 0 || m == nil || m[1] != "4" {
		t.Fatalf("verify intact log: %+v", r)
	}
	head := m[2]
	if r := run("audit", "verify", "--db", db, "--expect-head", head); r.Code != 0 {
		t.Fatalf("verify with its own head: %+v", r)
	}
	if r := run("audit", "verify", "--db", db, "--expect-head", "4:zz"); r.Code != 2 {
		t.Fatalf("malformed --expect-head: %+v", r)
	}

	// Truncation: drop the delete trigger and cut the newest entry. The
	// chain that is left is valid; only the recorded head shows the cut.
	raw, err := sql.Open("sqlite", "file:"+db)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, q := range []string{"DROP TRIGGER audit_no_delete", "DELETE FROM audit WHERE seq = 4"} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if r := run("audit", "verify", "--db", db); r.Code != 0 {
		t.Fatalf("verify after truncation without a head: %+v", r)
	}
	r = run("audit", "verify", "--db", db, "--expect-head", head)
	if r.Code != 1 || !strings.Contains(r.Stdout, "TRUNCATED") {
		t.Fatalf("truncation not detected: %+v", r)
	}

	// An edit in the middle.
	for _, q := range []string{"DROP TRIGGER audit_no_update",
		`UPDATE audit SET entry = CAST(replace(CAST(entry AS TEXT), 'role=member', 'role=admin') AS BLOB) WHERE seq = 1`} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	r = run("audit", "verify", "--db", db)
	if r.Code != 1 || !strings.Contains(r.Stdout, "BROKEN after seq 0") || !strings.Contains(r.Stdout, "edited") {
		t.Fatalf("edit not detected: %+v", r)
	}
}

// TestAuditCommandKV: on --store kv, the host's admin commands are audited
// as the node's internal identity and the log is read from the live
// node's audit stream.
func TestAuditCommandKV(t *testing.T) {
	dir := t.TempDir()
	b := harness.StartBus(t, dir, "--store", "kv", "--no-bootstrap")
	kvArgs := []string{"--store", "kv", "--nats-url", b.NATSURL, "--internal-id-file", filepath.Join("local_files", "internal.id")}
	internal, err := identity.Load(filepath.Join(dir, "local_files", "internal.id"))
	if err != nil {
		t.Fatal(err)
	}
	root := newID(t, dir, "root")
	r := harness.Run(t, dir, nil, "", "membershipd", append([]string{"user", "add", "--handle", "root", "--role", "admin", "--sign-pub", root.SignPub().String()}, kvArgs...)...)
	if r.Code != 0 {
		t.Fatal(r)
	}
	es := auditJSON(t, dir, kvArgs...)
	if len(es) != 1 || es[0].Action != audit.ActionUserAdd || es[0].Actor != internal.SignPub().String() || es[0].Subject != root.SignPub().String() {
		t.Fatalf("entries %+v", es)
	}
	r = harness.Run(t, dir, nil, "", "membershipd", append([]string{"audit", "verify"}, kvArgs...)...)
	if m := headRE.FindStringSubmatch(r.Stdout); r.Code != 0 || m == nil || m[1] != "1" {
		t.Fatalf("verify: %+v", r)
	}
}
