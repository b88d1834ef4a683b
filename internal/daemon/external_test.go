package daemon_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/internal/extnats"
	"github.com/unibus/unibus/internal/extnats/extnatstest"
)

// storeExternal is not a store: startBus runs a bus with it in front of
// a real nats-server process (built from go.mod's nats-server) through
// the auth callout, with --store kv, so that the data-plane tests written
// for the embedded engine run against the external one unchanged.
const storeExternal storeKind = "external-nats"

// useExternalNATS starts one nats-server configured for new credentials
// and points the bus at it.
func useExternalNATS(t testing.TB, b *bus) {
	t.Helper()
	creds := filepath.Join(b.cfg.DataDir, "nats.creds")
	keys, err := extnats.WriteNewCreds(creds)
	if err != nil {
		t.Fatal(err)
	}
	cl := extnatstest.Start(t, 1, extnatstest.Config{Unibus: extnatstest.Unibus(keys)})
	b.cfg.Store, b.cfg.NATSURL, b.cfg.NATSCreds = daemon.StoreKV, cl.URLs(), creds
}

// TestExternalNATS runs the data-plane scenarios against membershipd in
// front of an external nats-server: a member's exact permissions, no
// JetStream for members, removal, and revocation closing live
// connections within 1 s (testRevokedUser).
func TestExternalNATS(t *testing.T) {
	for name, test := range map[string]func(*testing.T, storeKind){
		"non-member denied":   testNonMemberDeniedOnDataPlane,
		"member no jetstream": testMemberHasNoJetStream,
		"removed member":      testRemovedMember,
		"revoked user":        testRevokedUser,
	} {
		t.Run(name, func(t *testing.T) { test(t, storeExternal) })
	}
}

// TestExternalNATSSendAndListen: the SDK, unchanged, sends and listens
// through membershipd in front of an external nats-server.
func TestExternalNATSSendAndListen(t *testing.T) {
	b := startBus(t, storeOption(storeExternal))
	ctx := ctxT(t)
	if h := b.d.NATSURL(); !strings.HasPrefix(h, "nats://127.0.0.1:") {
		t.Fatalf("clients are told %q", h)
	}
	_, bob := b.user(t, "bob")
	room, err := b.admin.CreateRoom(ctx, "demo")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.admin.AddMember(ctx, room.ID, "bob", client.RoomMember); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := b.admin.Send(ctx, room.ID, "", []byte{'m', byte('0' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	got := listenN(t, bob, room.ID, 3)
	for i, m := range got {
		if string(m.Data) != string([]byte{'m', byte('0' + i)}) {
			t.Fatalf("message %d: %q", i, m.Data)
		}
	}
}

// TestExternalNATSRefusesUnsafeConfig: membershipd does not start in
// front of a nats-server without unibus's configuration, and says what to
// add.
func TestExternalNATSRefusesUnsafeConfig(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "nats.creds")
	if _, err := extnats.WriteNewCreds(creds); err != nil {
		t.Fatal(err)
	}
	cl := extnatstest.Start(t, 1, extnatstest.Config{Unibus: "accounts { A: { users: [ { user: a, password: b } ] } }"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := daemon.Start(ctx, daemon.Config{Bind: "127.0.0.1", DataDir: dir, Store: daemon.StoreKV, NATSURL: cl.URLs(), NATSCreds: creds, Logger: testLogger(t)})
	if err == nil {
		d.Close()
		t.Fatal("started in front of a nats-server without unibus's configuration")
	}
	if !strings.Contains(err.Error(), "auth_callout.auth_users") {
		t.Fatalf("the error does not name the configuration needed: %v", err)
	}
}
