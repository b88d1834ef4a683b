package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/subjects"
)

// A Listen whose ordered consumer cannot re-create its server-side
// consumer replaces it with a fresh one, and loses and repeats nothing.
// The listener's consumer is deleted while the room stream allows no new
// consumer (MaxConsumers 1, taken by a filler), so every re-creation is refused;
// messages sent meanwhile are stored. Once consumers are allowed again the
// listener receives exactly the messages it had not, in order.
func TestListenReplacesAStuckConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the ordered consumer's reset attempts")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	d, adm := startNode(ctx, t, dir)
	var logs lockedLog
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cl, err := client.Dial(ctx, client.Config{Identity: adm, Servers: []string{d.HTTPURL()}, NATS: []string{d.NATSURL()}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	room, err := cl.CreateRoom(ctx, "replace")
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var got []string
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	listening := make(chan error, 1)
	go func() {
		listening <- cl.Listen(lctx, room.ID, client.ListenOptions{}, func(m client.Message) {
			mu.Lock()
			got = append(got, string(m.Data))
			mu.Unlock()
		})
	}()
	received := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
	send := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			if _, err := cl.Send(ctx, room.ID, "", []byte(fmt.Sprintf("m%02d", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor := func(n int, what string) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for len(received()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: received %v\n%s", what, received(), logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Listen delivers new messages only: send until the first arrives.
	deadline := time.Now().Add(30 * time.Second)
	for len(received()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the listener received nothing")
		}
		send(0, 0)
		time.Sleep(200 * time.Millisecond)
	}
	warmups := len(received())
	send(1, 5)
	waitFor(warmups+5, "before the consumer is deleted")

	// The internal identity, in the bus account, manages the room stream.
	internal, err := identity.Load(filepath.Join(dir, "internal.id"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(d.NATSURL(), nats.Nkey(internal.NKey(), internal.SignNonce), natsnode.BusLogin())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(ctx, subjects.Stream(room.ID))
	if err != nil {
		t.Fatal(err)
	}
	var listeners []string
	for name := range stream.ListConsumers(ctx).Info() {
		listeners = append(listeners, name.Name)
	}
	if len(listeners) != 1 {
		t.Fatalf("consumers on the room stream: %v; want the listener's alone", listeners)
	}
	if _, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "filler", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	setMax := func(n int) {
		t.Helper()
		cfg := stream.CachedInfo().Config
		cfg.MaxConsumers = n
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("set MaxConsumers %d: %v", n, err)
		}
	}
	// Allow one consumer, the filler: the listener's stays until deleted,
	// and then cannot be created again.
	setMax(1)
	if err := stream.DeleteConsumer(ctx, listeners[0]); err != nil {
		t.Fatal(err)
	}
	send(6, 10)
	// The ordered consumer tries 3 times (1 s and 2 s apart) and gives up;
	// Listen then replaces it, and the replacement is refused too.
	deadline = time.Now().Add(60 * time.Second)
	for !strings.Contains(logs.String(), "re-creating the room consumer") {
		if time.Now().After(deadline) {
			t.Fatalf("Listen did not replace its consumer\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(received()); n != warmups+5 {
		t.Fatalf("received %d messages while no consumer could exist", n)
	}
	setMax(-1)
	waitFor(warmups+10, "after consumers are allowed again")
	time.Sleep(500 * time.Millisecond) // a repeat would show now
	all := received()
	want := []string{}
	for i := 1; i <= 10; i++ {
		want = append(want, fmt.Sprintf("m%02d", i))
	}
	if fmt.Sprint(all[warmups:]) != fmt.Sprint(want) {
		t.Errorf("received after the warm-up %v, want %v", all[warmups:], want)
	}
	lcancel()
	if err := <-listening; err != nil {
		t.Errorf("Listen: %v", err)
	}
}

// startNode starts a single-node membershipd (js-sync 1s) in dir, with a
// bootstrap admin, and returns it and the admin's identity.
func startNode(ctx context.Context, t *testing.T, dir string) (*daemon.Daemon, *identity.Identity) {
	t.Helper()
	d, err := daemon.Start(ctx, daemon.Config{Bind: "127.0.0.1", DataDir: dir, Bootstrap: true, JSSync: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	adm, err := identity.Load(d.AdminIDFile)
	if err != nil {
		t.Fatal(err)
	}
	return d, adm
}
