package natsnode

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/internal/harness"
)

func TestKick(t *testing.T) {
	tn := startNode(t, nil)
	alice, bob := newUser(t), newUser(t)
	tn.authz.set(alice, true)
	tn.authz.set(bob, true)

	disconnected := make(chan struct{}, 8)
	reconnected := make(chan struct{}, 8)
	m := mustConnect(t, tn.ClientURL(), alice,
		nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1), nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { disconnected <- struct{}{} }),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }),
	)
	second := mustConnect(t, tn.ClientURL(), alice, nats.NoReconnect())
	other := mustConnect(t, tn.ClientURL(), bob)
	if n := tn.authz.callCount(alice); n != 2 {
		t.Fatalf("authorizer calls for alice = %d, want 2", n)
	}

	n, err := tn.Kick(alice.pub)
	if err != nil || n != 2 {
		t.Fatalf("Kick = %d, %v; want 2 connections", n, err)
	}
	waitFor(t, disconnected, "disconnect after Kick")
	waitFor(t, reconnected, "reconnect after Kick")
	if calls := tn.authz.callCount(alice); calls != 3 {
		t.Errorf("authorizer calls after the reconnect = %d, want 3 (the login was checked again)", calls)
	}
	if second.nc.IsConnected() {
		t.Error("alice's second connection survived Kick")
	}
	if !other.nc.IsConnected() {
		t.Error("bob was kicked with alice")
	}

	// Revoked: the next Kick closes the connection and the reconnect fails.
	tn.authz.set(alice, false)
	if n, err := tn.Kick(alice.pub); err != nil || n != 1 {
		t.Fatalf("Kick = %d, %v; want 1", n, err)
	}
	waitFor(t, disconnected, "disconnect after revocation")
	harness.Eventually(t, 3*time.Second, func() bool { return tn.authz.callCount(alice) >= 5 },
		"reconnect attempts authorized (calls = %d)", tn.authz.callCount(alice))
	if m.nc.IsConnected() {
		t.Error("revoked member reconnected")
	}
	if err := m.nc.LastError(); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("last error %v, want an authorization violation", err)
	}
	// Stop the client's reconnect attempts (one in flight, not yet refused,
	// is briefly listed as a connection), then Kick finds nothing.
	m.nc.Close()
	harness.EventuallyNoError(t, 3*time.Second, func() error {
		if n, err := tn.Kick(alice.pub); err != nil || n != 0 {
			return fmt.Errorf("Kick = %d, %v", n, err)
		}
		return nil
	}, "Kick of a user with no connections finds none")
}

// waitFor waits up to one second for a signal.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatalf("no %s within 1s", what)
	}
}

func TestKickPages(t *testing.T) {
	tn := startNode(t, nil)
	alice := newUser(t)
	tn.authz.set(alice, true)
	const conns = 1100 // more than one Connz page (1024)
	if testing.Short() {
		t.Skip("opens 1100 connections")
	}
	for i := 0; i < conns; i++ {
		if _, err := tn.Connect(alice.pub, alice.sign, nats.NoReconnect()); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := tn.Kick(alice.pub); err != nil || n != conns {
		t.Fatalf("Kick = %d, %v; want %d", n, err, conns)
	}
}
