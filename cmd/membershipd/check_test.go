package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/subjects"
)

// checkJSON runs `membershipd check --json` (extra flags appended)
// through node 0 and decodes its report.
func checkJSON(t *testing.T, c *harness.Cluster, extra ...string) (checkResult, harness.Result) {
	t.Helper()
	n := c.Nodes[0]
	r := harness.Run(t, n.Dir, nil, "", "membershipd", append([]string{"check", "--json", "--nats-url", n.NATSURL()}, extra...)...)
	var res checkResult
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatalf("check --json: %v\n%+v", err, r)
	}
	return res, r
}

// truncateLastBlock cuts n bytes off the end of the last message block of
// a stream in node i's JetStream store (the node is stopped).
func truncateLastBlock(t *testing.T, c *harness.Cluster, i int, account, stream string, n int64) {
	t.Helper()
	blks, _ := filepath.Glob(filepath.Join(c.Nodes[i].Dir, "local_files", "jetstream", "jetstream", account, "streams", stream, "msgs", "*.blk"))
	if len(blks) == 0 {
		t.Fatalf("%s: no message block of %s", c.Nodes[i].Name, stream)
	}
	sort.Strings(blks)
	last := blks[len(blks)-1]
	st, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, max(st.Size()-n, 0)); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s cut from %d to %d bytes", c.Nodes[i].Name, filepath.Base(last), st.Size(), max(st.Size()-n, 0))
}

// The integrity check on a real three-node R3 cluster: it reports every
// replica in agreement; n3 is stopped, the tails of its copies of the
// shared room stream and of the rooms bucket are cut off, and it is
// started again (healthy, Raft calls it current); `check` names n3's two
// replicas as divergent (exit 1), `check --repair` rebuilds them from the
// majority (exit 0), a second check finds every replica in agreement, and
// every acknowledged message and room is read back through each node.
func TestCheckRepairsTruncatedReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	c := harness.StartCluster(t, 3, "--scrub-interval=-1s") // only the command repairs here
	root := newID(t, c.Nodes[0].Dir, "root")
	c.AddUser(t, 0, "root", "admin", root)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	admin := dialRetry(ctx, t, c, root)
	alpha, err := admin.CreateRoom(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 12 {
		msg := fmt.Sprintf("acknowledged %d", i)
		if _, err := admin.Send(ctx, alpha.ID, "", []byte(msg)); err != nil {
			t.Fatal(err)
		}
		want = append(want, msg)
	}
	rooms := []string{alpha.ID}
	for i := range 4 {
		r, err := admin.CreateRoom(ctx, fmt.Sprintf("room-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		rooms = append(rooms, r.ID)
	}

	var res checkResult
	harness.EventuallyNoError(t, time.Minute, func() error {
		var r harness.Result
		if res, r = checkJSON(t, c); r.Code != 0 {
			return fmt.Errorf("check on a healthy cluster: %+v", r)
		}
		return nil
	}, "check passes on the healthy cluster")
	if len(res.Servers) != 3 || !res.Quorum || len(res.Streams) < 5 {
		t.Fatalf("healthy check: %+v", res.Report)
	}

	c.Nodes[2].Bus.Stop(t)
	truncateLastBlock(t, c, 2, natsnode.BusAccount, subjects.SharedStream, 1500)
	truncateLastBlock(t, c, 2, natsnode.ControlAccount, "KV_UNIBUS_rooms", 400)
	c.Start(t, 2)
	c.WaitHealthy(t, 0, 1, 2)

	res, r := checkJSON(t, c)
	t.Logf("check after the damage (exit %d): %s", r.Code, r.Stderr)
	bad := map[string]bool{}
	for _, s := range res.Divergent() {
		for _, d := range s.Diverged {
			if d.Server != "n3" {
				t.Errorf("%s: replica on %s reported divergent; only n3 was damaged", s.Stream, d.Server)
			}
		}
		bad[s.Stream] = true
		t.Logf("divergent: %s", s)
	}
	if r.Code != 1 || !bad[subjects.SharedStream] || !bad["KV_UNIBUS_rooms"] {
		t.Fatalf("check after truncating n3's copies of %s and KV_UNIBUS_rooms: exit %d, divergent %v\n%s", subjects.SharedStream, r.Code, bad, r.Stdout)
	}

	start := time.Now()
	rr := harness.Run(t, c.Nodes[0].Dir, nil, "", "membershipd", "check", "--repair", "--nats-url", c.Nodes[0].NATSURL())
	t.Logf("check --repair (exit %d, %v):\n%s%s", rr.Code, time.Since(start).Round(time.Millisecond), rr.Stdout, rr.Stderr)
	if rr.Code != 0 || !strings.Contains(rr.Stdout, "repair "+subjects.SharedStream+": repaired: every replica agrees") ||
		!strings.Contains(rr.Stdout, "repair KV_UNIBUS_rooms: repaired: every replica agrees") {
		t.Fatalf("check --repair: %+v", rr)
	}
	if res, r = checkJSON(t, c); r.Code != 0 || len(res.Divergent()) != 0 {
		t.Fatalf("check after the repair: %+v", r)
	}

	// Every acknowledged message and room, read through each node alone.
	for _, n := range c.Nodes {
		cl, err := client.Dial(ctx, client.Config{Identity: root, Servers: []string{n.HTTPURL()}, NATS: []string{n.NATSURL()}})
		if err != nil {
			t.Fatalf("dial %s: %v", n.Name, err)
		}
		got := history(ctx, t, cl, alpha.ID, len(want))
		if !equalSorted(got, want) {
			t.Errorf("through %s: %d of %d acknowledged messages: %v", n.Name, len(got), len(want), got)
		}
		for _, id := range rooms {
			if _, err := cl.RoomInfo(ctx, id); err != nil {
				t.Errorf("through %s: room %s: %v", n.Name, id[:6], err)
			}
		}
		cl.Close()
	}
}
