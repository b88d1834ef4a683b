package main

import (
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	_ "modernc.org/sqlite" // the test tampers with membershipd's database directly

	"github.com/unibus/unibus/internal/harness"
)

var fingerprintLine = regexp.MustCompile(`(?m)^fingerprint: ((?:[0-9a-f]{4} ){15}[0-9a-f]{4})$`)

// TestWhoisAndPinnedKeys runs, with the real commands, what a user sees
// when a compromised server puts another identity under a handle: the
// first whois pins and shows a fingerprint that the user's own whois
// matches; after the swap (made directly in membershipd's SQLite file)
// room add refuses with a message that names the user and the command to
// accept, whois shows CHANGED, and only whois --accept lets the add
// through. A fresh known-keys file is fooled, which shows the swap is real.
func TestWhoisAndPinnedKeys(t *testing.T) {
	dir := t.TempDir()
	bus := harness.StartBus(t, dir)
	env := []string{"UNIBUS_SERVER=" + bus.HTTPURL, "UNIBUS_NATS=" + bus.NATSURL}
	adminID := filepath.Join(dir, "local_files", "admin.id")
	admin := append(env[:len(env):len(env)], "UNIBUS_IDENTITY="+adminID)
	as := func(name string) []string {
		return append(env[:len(env):len(env)], "UNIBUS_IDENTITY="+filepath.Join(dir, name+".id"))
	}
	run := func(env []string, want int, args ...string) harness.Result {
		t.Helper()
		r := harness.Run(t, dir, env, "", "unibus", args...)
		if r.Code != want {
			t.Fatalf("unibus %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, r.Code, want, r.Stdout, r.Stderr)
		}
		return r
	}
	fingerprint := func(r harness.Result) string {
		t.Helper()
		m := fingerprintLine.FindStringSubmatch(r.Stdout)
		if m == nil {
			t.Fatalf("no fingerprint in:\n%s", r.Stdout)
		}
		return m[1]
	}
	pubs := map[string]string{}
	for _, u := range []string{"bob", "mallory"} {
		pubs[u] = strings.TrimSpace(run(env, 0, "keygen", "-o", filepath.Join(dir, u+".id")).Stdout)
		run(admin, 0, "user", "add", "--handle", u, "--sign-pub", pubs[u])
		run(as(u), 0, "register")
	}
	r := run(as("bob"), 0, "whois", "bob")
	bobSays := fingerprint(r)
	if !strings.Contains(r.Stdout, "your own") {
		t.Errorf("bob's whois of himself:\n%s", r.Stdout)
	}
	mallorySays := fingerprint(run(as("mallory"), 0, "whois", "mallory"))

	r = run(admin, 0, "whois", "bob")
	if fingerprint(r) != bobSays || !strings.Contains(r.Stdout, "first seen: pinned now") {
		t.Fatalf("first whois of bob:\n%s\nbob's own fingerprint: %s", r.Stdout, bobSays)
	}
	known := adminID + ".known_keys"
	if fi, err := os.Stat(known); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("known-keys file beside the identity: %v %v", fi, err)
	}
	var j whoisJSON
	if err := json.Unmarshal([]byte(run(admin, 0, "--json", "whois", pubs["bob"]).Stdout), &j); err != nil || j.Pin != "match" || j.Handle != "bob" || j.KnownKeysFile != known {
		t.Fatalf("whois --json by sign-pub: %+v %v", j, err)
	}
	run(admin, 0, "room", "create", "demo")
	run(admin, 0, "room", "add", "demo", "bob")

	// The server's disk is tampered with: mallory becomes "bob".
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "local_files", "unibus.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		`UPDATE users SET handle = 'bob-old' WHERE sign_pub = '` + pubs["bob"] + `'`,
		`UPDATE users SET handle = 'bob' WHERE sign_pub = '` + pubs["mallory"] + `'`,
	} {
		if _, err := tx.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	db.Close()

	run(admin, 0, "room", "create", "demo2")
	r = run(admin, 1, "room", "add", "demo2", "bob")
	for _, s := range []string{`user "bob"`, "unibus whois bob --accept", "unibus whois bob)"} {
		if !strings.Contains(r.Stderr, s) {
			t.Errorf("refusal %q does not say %q", r.Stderr, s)
		}
	}
	r = run(admin, 1, "whois", "bob")
	seed, _ := os.ReadFile(adminID)
	if !strings.Contains(r.Stdout, "CHANGED") || fingerprint(r) != mallorySays || strings.Contains(r.Stdout+r.Stderr, strings.TrimSpace(string(seed))) {
		t.Fatalf("whois after the swap:\nstdout: %s\nstderr: %s", r.Stdout, r.Stderr)
	}

	// Control: with no pins (another known-keys file), the CLI is fooled.
	fresh := append(admin[:len(admin):len(admin)], "UNIBUS_KNOWN_KEYS="+filepath.Join(dir, "fresh.known_keys"))
	run(fresh, 0, "room", "create", "demo3")
	run(fresh, 0, "room", "add", "demo3", "bob")

	// Accepting is explicit, and then the add goes through.
	if r = run(admin, 0, "whois", "bob", "--accept"); !strings.Contains(r.Stdout, "accepted") || fingerprint(r) != mallorySays {
		t.Fatalf("whois --accept:\n%s", r.Stdout)
	}
	run(admin, 0, "room", "add", "demo2", "bob")
	run(admin, 0, "whois", "bob")

	// A known-keys file others can read is refused, as an identity is.
	os.Chmod(known, 0o644)
	if r = run(admin, 1, "whois", "bob"); !strings.Contains(r.Stderr, "chmod 600 "+known) {
		t.Fatalf("loose known-keys file: %s", r.Stderr)
	}
}
