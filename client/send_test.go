package client

import (
	"context"
	"testing"
	"time"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/daemon"
)

// Sends reuse one JetStream context per connection: each context keeps
// its own reply subscription for asynchronous publishes until the
// connection closes, so a context per send would leak one subscription
// per call.
func TestSendsShareOneReplySubscription(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := daemon.Start(ctx, daemon.Config{Bind: "127.0.0.1", DataDir: t.TempDir(), Bootstrap: true, JSSync: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	adm, err := identity.Load(d.AdminIDFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(ctx, Config{Identity: adm, Servers: []string{d.HTTPURL()}, NATS: []string{d.NATSURL()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.CreateRoom(ctx, "subs")
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := c.Send(ctx, r.ID, "", []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SendBatch(ctx, r.ID, "", [][]byte{[]byte("a"), []byte("b")}); err != nil {
			t.Fatal(err)
		}
	}
	nc, err := c.conn()
	if err != nil {
		t.Fatal(err)
	}
	if n := nc.NumSubscriptions(); n > 1 {
		t.Fatalf("%d subscriptions after 40 sends: one per send leaks", n)
	}
}
