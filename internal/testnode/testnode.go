// Package testnode starts a real embedded unibus NATS node for tests of
// the packages that sit on JetStream (the KV store, the object store).
package testnode

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/natsnode"
)

// Node is a started node with its internal identity.
type Node struct {
	*natsnode.Node
	Internal *identity.Identity
}

// denyAll is the Authorizer of a node no member logs in to.
type denyAll struct{}

func (denyAll) Grant(context.Context, string) (natsnode.Grant, error) { return natsnode.Grant{}, nil }

// Start starts a node on a random loopback port with its store in dir (a
// fresh temporary directory when dir is ""), stopped at the end of the test.
// No member can log in to it.
func Start(t testing.TB, dir string) *Node { return StartWith(t, dir, denyAll{}) }

// StartWith is Start with the Authorizer that grants members' logins.
func StartWith(t testing.TB, dir string, authz natsnode.Authorizer) *Node {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if dir == "" {
		dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := natsnode.Start(ctx, natsnode.Options{
		Host: "127.0.0.1", Port: -1, ServerName: "test", StoreDir: dir,
		InternalNKey: id.NKey(), Authorizer: authz,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(n.Shutdown)
	return &Node{Node: n, Internal: id}
}

// Control returns an in-process connection of the internal identity in the
// control account (where the KV buckets and the object store live).
func (n *Node) Control(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := n.Connect(n.Internal.NKey(), n.Internal.SignNonce, nats.Name("test-control"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Bus returns an in-process connection of the internal identity in the
// bus account (room streams, members' consumers).
func (n *Node) Bus(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := n.ConnectBus(n.Internal.NKey(), n.Internal.SignNonce, nats.Name("test-bus"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Members returns an in-process connection of the internal identity in
// the members account (the relay's side).
func (n *Node) Members(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := n.ConnectMembers(n.Internal.NKey(), n.Internal.SignNonce, nats.Name("test-members"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
