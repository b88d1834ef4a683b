package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
)

func TestUserAddAlreadyRegisteredNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "u.db")
	id, _ := identity.Generate()
	pub := id.SignPub().String()
	r := harness.Run(t, dir, nil, "", "membershipd", "user", "add", "--db", db, "--handle", "alice", "--sign-pub", pub, "--role", "member")
	if r.Code != 0 || !strings.Contains(r.Stdout, `added user "alice"`) {
		t.Fatalf("first add: %+v", r)
	}
	// A re-add asking for admin must fail with exit 1 and change nothing.
	r = harness.Run(t, dir, nil, "", "membershipd", "user", "add", "--db", db, "--handle", "alice2", "--sign-pub", pub, "--role", "admin")
	if r.Code != 1 || !strings.Contains(r.Stderr, "already registered") {
		t.Fatalf("re-add: %+v", r)
	}
	r = harness.Run(t, dir, nil, "", "membershipd", "user", "list", "--db", db, "--json")
	var users []struct{ Handle, Role, Status string }
	if err := json.Unmarshal([]byte(r.Stdout), &users); err != nil {
		t.Fatalf("list: %v %q", err, r.Stdout)
	}
	if len(users) != 1 || users[0].Role != "member" || users[0].Handle != "alice" {
		t.Fatalf("after re-add: %+v", users)
	}
	r = harness.Run(t, dir, nil, "", "membershipd", "user", "revoke", "--db", db, pub)
	if r.Code != 0 {
		t.Fatalf("revoke: %+v", r)
	}
	r = harness.Run(t, dir, nil, "", "membershipd", "user", "list", "--db", db, "--json")
	json.Unmarshal([]byte(r.Stdout), &users)
	if len(users) != 1 || users[0].Status != "revoked" {
		t.Fatalf("after revoke (the row must stay): %+v", users)
	}
	for _, bad := range [][]string{
		{"--handle", "Bad Handle", "--sign-pub", pub},
		{"--handle", "ok", "--sign-pub", "abcd"},
		{"--handle", "ok", "--sign-pub", pub, "--role", "root"},
	} {
		r = harness.Run(t, dir, nil, "", "membershipd", append([]string{"user", "add", "--db", db}, bad...)...)
		if r.Code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage): %s", bad, r.Code, r.Stderr)
		}
	}
}

func TestRefusesInsecurePostures(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--bind", "0.0.0.0", "--bus-auth", "off", "--insecure-no-tls"}, "--bus-auth off is only allowed when every listener binds a loopback address"},
		{[]string{"--bind", "0.0.0.0"}, "TLS is required"},
		{[]string{"--bus-auth", "maybe"}, "--bus-auth must be enforce or off"},
		{[]string{"--js-sync", "sometimes"}, "--js-sync"},
	}
	for _, tc := range cases {
		r := harness.Run(t, dir, nil, "", "membershipd", append([]string{"--http-port", "0", "--nats-port", "0"}, tc.args...)...)
		if r.Code == 0 || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want refusal mentioning %q", tc.args, r.Code, r.Stderr, tc.want)
		}
	}
	// The same refusal through the environment, as a systemd unit passes it.
	r := harness.Run(t, dir, []string{"UNIBUS_BIND=0.0.0.0", "UNIBUS_BUS_AUTH=off"}, "", "membershipd", "--http-port", "0", "--nats-port", "0")
	if r.Code == 0 || !strings.Contains(r.Stderr, "--bus-auth off is only allowed") {
		t.Errorf("env: exit %d: %s", r.Code, r.Stderr)
	}
}
