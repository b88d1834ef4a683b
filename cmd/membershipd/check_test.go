package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
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
	last := lastBlock(t, c, i, account, stream)
	st, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, max(st.Size()-n, 0)); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s cut from %d to %d bytes", c.Nodes[i].Name, filepath.Base(last), st.Size(), max(st.Size()-n, 0))
}

// lastBlock is the path of the last message block of stream in node i's
// store.
func lastBlock(t *testing.T, c *harness.Cluster, i int, account, stream string) string {
	t.Helper()
	blks, _ := filepath.Glob(filepath.Join(c.Nodes[i].Dir, "local_files", "jetstream", "jetstream", account, "streams", stream, "msgs", "*.blk"))
	if len(blks) == 0 {
		t.Fatalf("%s: no message block of %s", c.Nodes[i].Name, stream)
	}
	sort.Strings(blks)
	return blks[len(blks)-1]
}

// flipMiddle inverts 16 bytes in the middle of the last message block of
// stream in node i's store (the node is stopped): records whose checksum
// fails, the replica's counts unchanged.
func flipMiddle(t *testing.T, c *harness.Cluster, i int, account, stream string) {
	t.Helper()
	last := lastBlock(t, c, i, account, stream)
	b, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	for j := len(b) / 2; j < len(b)/2+16 && j < len(b); j++ {
		b[j] ^= 0xff
	}
	if err := os.WriteFile(last, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The integrity check on a real three-node R3 cluster: it reports every
// replica in agreement; n3 is stopped, the tails of its copies of the
// shared room stream and of the rooms bucket are cut off, and it is
// started again (healthy, Raft calls it current); `check` names n3's two
// replicas as divergent (exit 1), `check --repair` rebuilds them from the
// majority (exit 0), a second check finds every replica in agreement, and
// every acknowledged message and room is read back through each node.
// seeded is a three-node R3 cluster with a room of acknowledged
// messages and a few more rooms.
type seeded struct {
	c     *harness.Cluster
	root  *identity.Identity
	alpha string
	want  []string
	rooms []string
}

func seedCluster(ctx context.Context, t *testing.T, extra ...string) seeded {
	t.Helper()
	c := harness.StartCluster(t, 3, extra...)
	root := newID(t, c.Nodes[0].Dir, "root")
	c.AddUser(t, 0, "root", "admin", root)
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
	return seeded{c: c, root: root, alpha: alpha.ID, want: want, rooms: rooms}
}

// readBack reads every acknowledged message and room through each node
// alone.
func (sd seeded) readBack(ctx context.Context, t *testing.T) {
	t.Helper()
	for _, n := range sd.c.Nodes {
		cl, err := client.Dial(ctx, client.Config{Identity: sd.root, Servers: []string{n.HTTPURL()}, NATS: []string{n.NATSURL()}})
		if err != nil {
			t.Fatalf("dial %s: %v", n.Name, err)
		}
		got := history(ctx, t, cl, sd.alpha, len(sd.want))
		if !equalSorted(got, sd.want) {
			t.Errorf("through %s: %d of %d acknowledged messages: %v", n.Name, len(got), len(sd.want), got)
		}
		for _, id := range sd.rooms {
			if _, err := cl.RoomInfo(ctx, id); err != nil {
				t.Errorf("through %s: room %s: %v", n.Name, id[:6], err)
			}
		}
		cl.Close()
	}
}

func TestCheckRepairsTruncatedReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	sd := seedCluster(ctx, t, "--scrub-interval=0") // only the command repairs here
	c := sd.c

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

	sd.readBack(ctx, t)
}

// The periodic scrub on its own: with --scrub-interval 3s, a replica
// whose tail was cut while its node was down is found and rebuilt by the
// meta leader without anyone running a command; the divergence shows in
// unibus_scrub_divergent_replicas, the repair in
// unibus_scrub_repairs_total, and every acknowledged message and room
// reads back through each node.
func TestScrubRepairsOnItsOwn(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	sd := seedCluster(ctx, t, "--scrub-interval=3s")
	c := sd.c
	took := repairsOnItsOwn(t, c, func() { truncateLastBlock(t, c, 2, natsnode.BusAccount, subjects.SharedStream, 1500) })
	t.Logf("the scrub repaired n3's %s %v after the node was back", subjects.SharedStream, took)
	sd.readBack(ctx, t)
}

// A node restarted on a replica whose bytes were damaged while it was
// down finds the damage when it verifies its block files at start, and
// asks for a scrub at once: the meta leader repairs it long before its
// next periodic scrub (an hour here).
func TestScrubRepairsDamageAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	sd := seedCluster(ctx, t, "--scrub-interval=1h")
	c := sd.c
	took := repairsOnItsOwn(t, c, func() { flipMiddle(t, c, 2, natsnode.BusAccount, subjects.SharedStream) })
	t.Logf("repaired n3's %s %v after the node was back", subjects.SharedStream, took)
	asked := false
	for _, n := range c.Nodes {
		asked = asked || strings.Contains(n.Bus.Output(), "scrub: asked to run now")
	}
	if !asked {
		t.Error("no node logged a scrub run on request: the repair came from the periodic scrub")
	}
	if !strings.Contains(c.Nodes[2].Bus.Output(), "records of this node's replica fail their checksum") {
		t.Error("n3 did not log the damage it found")
	}
	sd.readBack(ctx, t)
}

// repairsOnItsOwn waits until every replica agrees, stops n3, damages its
// files (damage), starts it again and waits until the periodic scrub has
// repaired it (a repair counted, the check clean); it returns how long
// after n3 was healthy again.
func repairsOnItsOwn(t *testing.T, c *harness.Cluster, damage func()) time.Duration {
	t.Helper()
	harness.EventuallyNoError(t, time.Minute, func() error {
		if res, r := checkJSON(t, c); r.Code != 0 || len(res.Divergent()) != 0 {
			return fmt.Errorf("check on a healthy cluster: %+v", r)
		}
		return nil
	}, "every replica agrees before the damage")
	c.Nodes[2].Bus.Stop(t)
	damage()
	c.Start(t, 2)
	c.WaitHealthy(t, 0, 1, 2)
	start := time.Now()
	harness.EventuallyNoError(t, 3*time.Minute, func() error {
		repaired := 0.0
		for _, n := range c.Nodes {
			repaired += metricValue(t, n.HTTPURL(), `unibus_scrub_repairs_total{result="ok"}`)
		}
		if repaired < 1 {
			return errors.New("no repair counted yet")
		}
		if res, r := checkJSON(t, c, "--wait", "2s"); r.Code != 0 || len(res.Divergent()) != 0 {
			return fmt.Errorf("check after the scrub: exit %d", r.Code)
		}
		return nil
	}, "the scrub repairs the damaged replica on its own")
	return time.Since(start).Round(100 * time.Millisecond)
}

// metricValue reads one sample from a node's /metrics (0 when absent).
func metricValue(t *testing.T, httpURL, sample string) float64 {
	t.Helper()
	resp, err := http.Get(httpURL + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return 0
}
