// Package upgrade tests that a deployment written by the previous
// protocol (one stream per room, members with JetStream access: commit
// 0e820e9) upgrades in place to this one without losing a message.
//
// The state in testdata/ was written by binaries built from that commit
// (testdata/gen-v1.sh for a single node, SQLite and kv;
// testdata/gen-v1-cluster.sh for a three-node kv cluster): an admin and
// bob, a room "history" with four messages at epoch 1 (one from bob, on
// another topic) and one at epoch 2 after a rotation, and (single node) a
// second room "capped" with one message. The tests start this tree's
// membershipd on that state and read and write every room with this
// tree's SDK.
package upgrade

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/wire"
)

// extract unpacks testdata/<name> into a new directory, keeping file modes
// (identity files must stay 0600).
func extract(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, filepath.Clean("/"+h.Name)) // no path leaves dir
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, os.FileMode(h.Mode)&0o777|0o700); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			w, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(w, tr); err != nil {
				t.Fatal(err)
			}
			w.Close()
		}
	}
}

// v1Rooms reads the room list the previous CLI wrote (id by name).
func v1Rooms(t *testing.T, dir string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "rooms.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rooms []wire.Room
	if err := json.Unmarshal(b, &rooms); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rooms {
		out[r.Name] = r.ID
	}
	return out
}

func dial(t *testing.T, idFile string, servers, nats []string) *client.Client {
	t.Helper()
	id, err := identity.Load(idFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var c *client.Client
	harness.EventuallyNoError(t, time.Minute, func() error {
		c, err = client.Dial(ctx, client.Config{Identity: id, Servers: servers, NATS: nats})
		return err
	}, "dial %s", filepath.Base(idFile))
	t.Cleanup(c.Close)
	return c
}

// read returns the room's messages from the start as "epoch:topic:text",
// failing on any message reported instead of delivered.
func read(t *testing.T, c *client.Client, room string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got []string
	var reported []error
	err := c.Listen(ctx, room, client.ListenOptions{FromStart: true, OnError: func(err error) { reported = append(reported, err) }}, func(m client.Message) {
		got = append(got, fmt.Sprintf("%d:%s:%s", m.Epoch, m.Topic, m.Data))
		if len(got) == n {
			cancel()
		}
	})
	if err != nil {
		t.Fatalf("listen to %s: %v", room, err)
	}
	if len(reported) > 0 || len(got) != n {
		t.Fatalf("read %d of %d messages: %q; reported: %v", len(got), n, got, reported)
	}
	return got
}

// history is what the previous version stored in the room "history".
var history = []string{"1:msg:before upgrade 1", "1:msg:before upgrade 2", "1:msg:before upgrade 3", "1:notes:bob before upgrade", "2:msg:after rotation"}

// checkUpgraded reads every message the previous version stored, with
// both users, then writes new ones: into the old room (still in its own
// stream) and into a new room (in the shared stream).
func checkUpgraded(t *testing.T, dir string, adminID, bobID string, servers, nats []string, rooms map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := dial(t, adminID, servers, nats)
	bob := dial(t, bobID, servers, nats)
	mine, err := admin.ListRooms(ctx)
	if err != nil {
		t.Fatalf("list rooms: %v", err)
	}
	if len(mine) != len(rooms) {
		t.Fatalf("the admin's rooms after the upgrade: %+v, want %v", mine, rooms)
	}
	for _, r := range mine {
		if rooms[r.Name] != r.ID || r.Shared {
			t.Fatalf("room %+v after the upgrade: want id %s in a stream of its own", r, rooms[r.Name])
		}
	}
	hist := rooms["history"]
	for who, c := range map[string]*client.Client{"admin": admin, "bob": bob} {
		if got := read(t, c, hist, len(history)); strings.Join(got, "|") != strings.Join(history, "|") {
			t.Fatalf("%s read the history as %q, want %q", who, got, history)
		}
	}
	if id, ok := rooms["capped"]; ok {
		if got := read(t, admin, id, 1); got[0] != "1:msg:in the second room" {
			t.Fatalf("second room: %q", got)
		}
	}
	// Protocol 2 messages into the old room, from a member and its owner.
	if _, err := bob.Send(ctx, hist, "", []byte("after upgrade, from bob")); err != nil {
		t.Fatalf("bob's send: %v", err)
	}
	if _, err := admin.Send(ctx, hist, "", []byte("after upgrade")); err != nil {
		t.Fatalf("the admin's send: %v", err)
	}
	want := append(history[:len(history):len(history)], "2:msg:after upgrade, from bob", "2:msg:after upgrade")
	if got := read(t, bob, hist, len(want)); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("bob read %q after the upgrade, want %q", got, want)
	}
	// A new room is in the shared stream and works as well.
	fresh, err := admin.CreateRoom(ctx, "after upgrade")
	if err != nil {
		t.Fatalf("create a room: %v", err)
	}
	if !fresh.Shared {
		t.Fatalf("a room created after the upgrade has a stream of its own: %+v", fresh)
	}
	if err := admin.AddMember(ctx, fresh.ID, "bob", client.RoomMember); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Send(ctx, fresh.ID, "", []byte("new room")); err != nil {
		t.Fatal(err)
	}
	if got := read(t, bob, fresh.ID, 1); got[0] != "1:msg:new room" {
		t.Fatalf("new room: %q", got)
	}
}

// TestUpgradeSingleNode starts this membershipd on a single node's state
// written by the previous version, SQLite and kv.
func TestUpgradeSingleNode(t *testing.T) {
	for _, store := range []string{"sqlite", "kv"} {
		t.Run(store, func(t *testing.T) {
			dir := extract(t, "v1-"+store+".tar.gz")
			rooms := v1Rooms(t, dir)
			args := []string{}
			if store == "kv" {
				args = append(args, "--store", "kv")
			}
			b := harness.StartBus(t, dir, args...)
			checkUpgraded(t, dir, filepath.Join(dir, "local_files", "admin.id"), filepath.Join(dir, "bob.id"),
				[]string{b.HTTPURL}, []string{b.NATSURL}, rooms)
			// And again after a restart on the upgraded state.
			b.Stop(t)
			b = harness.StartBus(t, dir, args...)
			admin := dial(t, filepath.Join(dir, "local_files", "admin.id"), []string{b.HTTPURL}, []string{b.NATSURL})
			want := append(history[:len(history):len(history)], "2:msg:after upgrade, from bob", "2:msg:after upgrade")
			if got := read(t, admin, rooms["history"], len(want)); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("after a restart: %q", got)
			}
		})
	}
}

// TestUpgradeCluster starts this membershipd on the three nodes' state of
// a previous version's kv cluster (same cluster and node names, new
// ports), then loses a node and still reads everything.
func TestUpgradeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	dir := extract(t, "v1-cluster.tar.gz")
	rooms := v1Rooms(t, dir)
	bin := filepath.Join(harness.Build(t), "membershipd")
	ports := harness.FreePorts(t, []string{"127.0.0.1"}, 9)
	var buses []*harness.Bus
	var servers, nats []string
	for i := range 3 {
		var routes []string
		for j := range 3 {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[3*j+2]))
			}
		}
		servers = append(servers, fmt.Sprintf("http://127.0.0.1:%d", ports[3*i]))
		nats = append(nats, fmt.Sprintf("nats://127.0.0.1:%d", ports[3*i+1]))
		buses = append(buses, harness.LaunchBus(t, bin, filepath.Join(dir, fmt.Sprintf("n%d", i+1)), nil,
			"--log-format", "json", "--http-port", fmt.Sprint(ports[3*i]), "--nats-port", fmt.Sprint(ports[3*i+1]),
			"--store", "kv", "--kv-replicas", "3", "--no-bootstrap",
			"--cluster-name", "unibus-fixture", "--node-name", fmt.Sprintf("n%d", i+1),
			"--cluster-port", fmt.Sprint(ports[3*i+2]), "--routes", strings.Join(routes, ","),
			"--cluster-pass-file", filepath.Join(dir, "cluster.pass")))
	}
	harness.EventuallyNoError(t, 4*time.Minute, func() error {
		for i := range 3 {
			if code, h := harness.Health(servers[i]); code != 200 {
				return fmt.Errorf("n%d: %d %s", i+1, code, h.Error)
			}
		}
		return nil
	}, "the upgraded cluster healthy")
	t.Cleanup(func() {
		if t.Failed() {
			for i, b := range buses {
				t.Logf("--- n%d:\n%s", i+1, b.Output())
			}
		}
	})
	checkUpgraded(t, dir, filepath.Join(dir, "admin.id"), filepath.Join(dir, "bob.id"), servers, nats, rooms)
	buses[0].Kill()
	bob := dial(t, filepath.Join(dir, "bob.id"), servers[1:], nats[1:])
	want := append(history[:len(history):len(history)], "2:msg:after upgrade, from bob", "2:msg:after upgrade")
	if got := read(t, bob, rooms["history"], len(want)); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("with n1 down: %q", got)
	}
}
