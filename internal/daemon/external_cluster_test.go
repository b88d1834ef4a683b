package daemon_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/internal/extnats"
	"github.com/unibus/unibus/internal/extnats/extnatstest"
	"github.com/unibus/unibus/internal/harness"
)

// TestExternalNATSClusterTwoMembershipds puts two membershipd instances,
// sharing one credentials file, in front of a three-node nats-server
// cluster (replicas 3): members send and listen end to end; with one
// membershipd closed the other serves logins and requests alone; and
// with one nats-server node killed while a member sends, the listener
// receives every message exactly once.
func TestExternalNATSClusterTwoMembershipds(t *testing.T) {
	if testing.Short() {
		t.Skip("three nats-server processes and two membershipds")
	}
	dir := t.TempDir()
	creds := filepath.Join(dir, "nats.creds")
	keys, err := extnats.WriteNewCreds(creds)
	if err != nil {
		t.Fatal(err)
	}
	cl := extnatstest.Start(t, 3, extnatstest.Config{Unibus: extnatstest.Unibus(keys)})
	start := func(name string, bootstrap bool) *daemon.Daemon {
		t.Helper()
		data := filepath.Join(dir, name)
		if err := os.MkdirAll(data, 0o700); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		var d *daemon.Daemon
		// A fresh cluster elects its meta leader within seconds.
		harness.EventuallyNoError(t, 90*time.Second, func() error {
			d, err = daemon.Start(ctx, daemon.Config{Bind: "127.0.0.1", DataDir: data, Store: daemon.StoreKV, KVReplicas: 3,
				NATSURL: cl.URLs(), NATSCreds: creds, Bootstrap: bootstrap, NodeName: name, Logger: testLogger(t)})
			return err
		}, "membershipd %s in front of the cluster", name)
		return d
	}
	a := start("a", true)
	var aClosed bool
	t.Cleanup(func() {
		if !aClosed {
			a.Close()
		}
	})
	b := start("b", false)
	t.Cleanup(func() { b.Close() })
	adm, err := identity.Load(a.AdminIDFile)
	if err != nil {
		t.Fatal(err)
	}
	seeds := strings.Split(cl.URLs(), ",")
	dial := func(id *identity.Identity) *client.Client {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, client.Config{Identity: id, Servers: []string{a.HTTPURL(), b.HTTPURL()}, NATS: seeds, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	ctx := ctxT(t)
	admin := dial(adm)
	bobID, _ := identity.Generate()
	if _, err := admin.AddUser(ctx, "bob", bobID.SignPub().String(), "member"); err != nil {
		t.Fatal(err)
	}
	bob := dial(bobID)
	room, err := admin.CreateRoom(ctx, "ha")
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.AddMember(ctx, room.ID, "bob", client.RoomMember); err != nil {
		t.Fatal(err)
	}

	// Bob listens for the whole test; every message must arrive once.
	var mu sync.Mutex
	seen := map[string]int{}
	lctx, stopListen := context.WithCancel(context.Background())
	listened := make(chan error, 1)
	go func() {
		listened <- bob.Listen(lctx, room.ID, client.ListenOptions{FromStart: true}, func(m client.Message) {
			mu.Lock()
			seen[string(m.Data)]++
			mu.Unlock()
		})
	}()
	defer func() { stopListen(); <-listened }()
	sent := 0
	send := func(n int, pause time.Duration) {
		t.Helper()
		for range n {
			body := fmt.Sprintf("m%04d", sent)
			if _, err := admin.Send(ctx, room.ID, "", []byte(body)); err != nil {
				t.Fatalf("send %s: %v", body, err)
			}
			sent++
			time.Sleep(pause)
		}
	}
	received := func() (distinct, dup int) {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range seen {
			if n > 1 {
				dup += n - 1
			}
		}
		return len(seen), dup
	}
	send(10, 0)
	harness.Eventually(t, 20*time.Second, func() bool { n, _ := received(); return n == sent }, "bob receives the first messages")

	// One membershipd closed: the other serves new logins and requests.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	aClosed = true
	carolID, _ := identity.Generate()
	if _, err := admin.AddUser(ctx, "carol", carolID.SignPub().String(), "member"); err != nil {
		t.Fatalf("add a user with membershipd a closed: %v", err)
	}
	carol := dial(carolID) // publishes its KEM key through b, logs in through b's callout
	if _, err := carol.CreateRoom(ctx, "carols"); err != nil {
		t.Fatal(err)
	}
	send(10, 0)
	harness.Eventually(t, 20*time.Second, func() bool { n, _ := received(); return n == sent }, "bob receives through b alone")

	// One nats-server node killed under traffic.
	var wg sync.WaitGroup
	wg.Go(func() {
		time.Sleep(500 * time.Millisecond)
		cl.Servers[0].Kill()
	})
	send(60, 25*time.Millisecond)
	wg.Wait()
	harness.Eventually(t, 60*time.Second, func() bool { n, _ := received(); return n >= sent }, "bob receives every message after the node loss")
	distinct, dup := received()
	if distinct != sent || dup != 0 {
		t.Fatalf("sent %d, received %d distinct, %d duplicated", sent, distinct, dup)
	}
	t.Logf("sent %d, received %d, 0 lost, 0 duplicated, across a membershipd closed and a nats-server node killed", sent, distinct)
}
