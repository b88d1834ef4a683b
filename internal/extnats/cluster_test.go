package extnats_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/internal/extnats"
)

// Several membershipds in front of one cluster share the callout's queue
// group, so another's callout may answer the login a starting Engine
// makes to check the server's configuration: each must start anyway.
func TestEnginesStartBesideEachOther(t *testing.T) {
	if testing.Short() {
		t.Skip("three nats-server processes")
	}
	f := start(t, 3)
	for i := range 40 {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		eng, err := extnats.Dial(ctx, extnats.Options{URL: f.cluster.URLs(), Keys: f.keys, Authorizer: f.authz})
		cancel()
		if err != nil {
			t.Fatalf("engine %d beside a running one: %v", i+2, err)
		}
		eng.Shutdown()
	}
}

// A revocation closes the user's connections on every server of the
// cluster, not only on the one that answers first.
func TestKickClosesConnectionsOnEveryServer(t *testing.T) {
	if testing.Short() {
		t.Skip("three nats-server processes")
	}
	f := start(t, 3)
	alice := newMember(t)
	f.authz.set(alice.pub, alice.hex, true)
	closed := make(chan string, len(f.cluster.Servers))
	for _, s := range f.cluster.Servers {
		// One connection on each server: its URL alone, no other to go to.
		nc, err := nats.Connect(s.URL(), nats.Nkey(alice.pub, alice.kp.Sign), nats.NoReconnect(),
			nats.ClosedHandler(func(*nats.Conn) { closed <- s.Name }))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
	}
	f.authz.set(alice.pub, alice.hex, false)
	n, err := f.eng.Kick(alice.pub)
	if err != nil || n != len(f.cluster.Servers) {
		t.Fatalf("kick: %d, %v; want %d, one on each server", n, err, len(f.cluster.Servers))
	}
	for range f.cluster.Servers {
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("a kicked connection is still open")
		}
	}
}
