package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/subjects"
)

func newID(t *testing.T, dir, name string) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := id.Save(filepath.Join(dir, name+".id")); err != nil {
		t.Fatal(err)
	}
	return id
}

type listedUser struct{ Handle, Role, Status, Sign_pub string }

func kvList(t *testing.T, dir string, kvArgs []string) []listedUser {
	t.Helper()
	r := harness.Run(t, dir, nil, "", "membershipd", append([]string{"user", "list", "--store", "kv", "--json"}, kvArgs...)...)
	if r.Code != 0 {
		t.Fatalf("user list --store kv: %+v", r)
	}
	var us []listedUser
	if err := json.Unmarshal([]byte(r.Stdout), &us); err != nil {
		t.Fatalf("list: %v %q", err, r.Stdout)
	}
	return us
}

// Against a running membershipd --store kv,
// the first admin is added live over the internal identity, a re-add is
// "already registered" (exit 1) and changes no role, list shows both, and a
// revocation made by the admin tool — not through the API — denies the
// user on both planes at once: the node's watcher closes its live
// connection and its next signed request is refused.
func TestUserAddStoreKVLive(t *testing.T) {
	dir := t.TempDir()
	b := harness.StartBus(t, dir, "--store", "kv", "--no-bootstrap")
	kvArgs := []string{"--nats-url", b.NATSURL, "--internal-id-file", filepath.Join("local_files", "internal.id")}

	root, bob := newID(t, dir, "root"), newID(t, dir, "bob")
	r := harness.Run(t, dir, nil, "", "membershipd", append([]string{"user", "add", "--store", "kv", "--handle", "root", "--role", "admin", "--sign-pub", root.SignPub().String()}, kvArgs...)...)
	if r.Code != 0 || !strings.Contains(r.Stdout, `added user "root"`) {
		t.Fatalf("first admin: %+v", r)
	}
	if !regexp.MustCompile(`KV_UNIBUS_users: leader=\S+ followers_current=0/0 msgs=\d+ \(single replica, NOT HA\)`).MatchString(r.Stdout) {
		t.Errorf("replication line missing or wrong: %q", r.Stdout)
	}
	r = harness.Run(t, dir, nil, "", "membershipd", append([]string{"user", "add", "--store", "kv", "--handle", "bob", "--role", "member", "--sign-pub", bob.SignPub().String()}, kvArgs...)...)
	if r.Code != 0 {
		t.Fatalf("add bob: %+v", r)
	}
	r = harness.Run(t, dir, nil, "", "membershipd", append([]string{"user", "add", "--store", "kv", "--handle", "bob2", "--role", "admin", "--sign-pub", bob.SignPub().String()}, kvArgs...)...)
	if r.Code != 1 || !strings.Contains(r.Stderr, "already registered") {
		t.Fatalf("re-add as admin: exit %d, stderr %q; want exit 1, already registered", r.Code, r.Stderr)
	}
	us := kvList(t, dir, kvArgs)
	if len(us) != 2 || us[0].Handle != "bob" || us[0].Role != "member" || us[1].Handle != "root" || us[1].Role != "admin" {
		t.Fatalf("list after re-add: %+v", us)
	}

	// The admin added live can administer at once; bob joins a room and
	// listens on the data plane.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func(id *identity.Identity) *client.Client {
		c, err := client.Dial(ctx, client.Config{Identity: id, Servers: []string{b.HTTPURL}, NATS: []string{b.NATSURL}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	admin, bc := dial(root), dial(bob)
	room, err := admin.CreateRoom(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.AddMember(ctx, room.ID, "bob", "member"); err != nil {
		t.Fatal(err)
	}
	// A raw connection of bob's, subscribed to his deliveries (the one
	// subject a member reads rooms on), to watch it closed.
	closed := make(chan struct{}, 4)
	denied := make(chan error, 4)
	nc, err := nats.Connect(b.NATSURL, nats.Nkey(bob.NKey(), bob.SignNonce),
		nats.CustomInboxPrefix(subjects.InboxPrefix(bob.SignPub().String())),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { closed <- struct{}{} }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("bob's data-plane login before revocation: %v", err)
	}
	defer nc.Close()
	if _, err := nc.SubscribeSync(subjects.DeliverOf(bob.SignPub().String())); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-denied:
		t.Fatalf("bob's subscription to his deliveries: %v", err)
	default:
	}

	r = harness.Run(t, dir, nil, "", "membershipd", append([]string{"user", "revoke", "--store", "kv", bob.SignPub().String()}, kvArgs...)...)
	if r.Code != 0 || !strings.Contains(r.Stdout, "status=revoked") {
		t.Fatalf("revoke --store kv: %+v", r)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("bob's live data-plane connection was not closed after revocation by the admin tool")
	}
	// Reconnecting is refused, and so is a fresh login.
	if _, err := nats.Connect(b.NATSURL, nats.Nkey(bob.NKey(), bob.SignNonce)); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("fresh login of a revoked user: %v, want an authorization violation", err)
	}
	// Control plane: bob's signed request is refused.
	_, err = bc.ListRooms(ctx)
	var he *client.APIError
	if !errors.As(err, &he) || he.Status != http.StatusUnauthorized {
		t.Errorf("revoked user's signed request: %v, want 401", err)
	}
	us = kvList(t, dir, kvArgs)
	if len(us) != 2 || us[0].Status != "revoked" {
		t.Fatalf("after revoke (the record stays): %+v", us)
	}
}

// Pointed at a node that is not in kv mode, the admin tool fails and
// creates nothing there.
func TestUserStoreKVAgainstSQLiteNode(t *testing.T) {
	dir := t.TempDir()
	b := harness.StartBus(t, dir, "--no-bootstrap")
	r := harness.Run(t, dir, nil, "", "membershipd", "user", "list", "--store", "kv", "--nats-url", b.NATSURL)
	if r.Code == 0 || !strings.Contains(r.Stderr, "is the node running with --store kv?") {
		t.Fatalf("user list --store kv against a sqlite node: %+v", r)
	}
}
