package client_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// node is a single membershipd process a test started (random loopback
// ports, a temporary directory, SQLite), with its bootstrap admin. Being
// another process, it leaves this one's goroutines to the SDK alone.
type node struct {
	*harness.Bus
	admin *identity.Identity
}

func startNode(t *testing.T) *node {
	t.Helper()
	b := harness.StartBus(t, t.TempDir())
	adm, err := identity.Load(filepath.Join(b.Dir, "local_files", "admin.id"))
	if err != nil {
		t.Fatal(err)
	}
	return &node{Bus: b, admin: adm}
}

// dial dials id (publishing its KEM key if the server lacks it) with its
// log in logs (nil: discarded); the client is closed at the end of the
// test.
func (n *node) dial(ctx context.Context, t *testing.T, id *identity.Identity, logs *harness.LockedBuffer) *client.Client {
	t.Helper()
	cfg := client.Config{Identity: id, Servers: []string{n.HTTPURL}, NATS: []string{n.NATSURL}}
	if logs != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// user registers a new member under handle and dials it.
func (n *node) user(ctx context.Context, t *testing.T, admin *client.Client, handle string, logs *harness.LockedBuffer) (*identity.Identity, *client.Client) {
	t.Helper()
	id := newIdentity(t)
	if _, err := admin.AddUser(ctx, handle, id.SignPub().String(), client.RoleMember); err != nil {
		t.Fatal(err)
	}
	return id, n.dial(ctx, t, id, logs)
}

// bus logs in as the node's internal identity in the bus account, where
// the room streams and the listeners' consumers are: what only
// membershipd (or whoever holds its disk) can do.
func (n *node) bus(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	internal, err := identity.Load(filepath.Join(n.Dir, "local_files", "internal.id"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(n.NATSURL, nats.Nkey(internal.NKey(), internal.SignNonce), natsnode.BusLogin())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// memberConn is a plain nats.go connection of a member, as a program that
// does not use the SDK would make it.
func (n *node) memberConn(t *testing.T, id *identity.Identity) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.NATSURL, nats.Nkey(id.NKey(), id.SignNonce),
		nats.CustomInboxPrefix(subjects.InboxPrefix(id.SignPub().String())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// relay publishes m through the relay, as a request on the sender's
// ingress, and returns the relay's answer.
func relay(t *testing.T, nc *nats.Conn, m *nats.Msg) wire.PubAck {
	t.Helper()
	resp, err := nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		t.Fatalf("publish through the relay: %v", err)
	}
	var ack wire.PubAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		t.Fatalf("relay answer %q: %v", resp.Data, err)
	}
	return ack
}

// listeners returns the consumers of the shared stream that are
// listeners on room, as the bus account sees them.
func listeners(ctx context.Context, js jetstream.JetStream, room string) ([]*jetstream.ConsumerInfo, error) {
	s, err := js.Stream(ctx, subjects.SharedStream)
	if err != nil {
		return nil, err
	}
	var out []*jetstream.ConsumerInfo
	list := s.ListConsumers(ctx)
	for ci := range list.Info() {
		if ci.Config.Metadata["unibus_room"] == room {
			out = append(out, ci)
		}
	}
	return out, list.Err()
}

func newIdentity(t *testing.T) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}
