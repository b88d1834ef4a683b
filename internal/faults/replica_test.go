package faults

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
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/scrub"
	"github.com/unibus/unibus/subjects"
)

// damaged are the streams whose copy on one node the experiment damages:
// the shared room stream (the load's messages) and the rooms bucket.
var damaged = []struct{ account, stream string }{
	{natsnode.BusAccount, subjects.SharedStream},
	{natsnode.ControlAccount, "KV_UNIBUS_rooms"},
}

// TestReplicaTruncate and TestReplicaBitFlip damage one replica of a
// three-node R3 cluster (kv store) while its node is down, after a load:
// the tail of the last message block of the shared room stream and of the
// rooms bucket is cut off ("truncate"), or bytes in the middle of those
// blocks are flipped ("bit flip"). The node is started again and made the
// leader of both streams where Raft lets it; every acknowledged message
// and room is read back through it (lost before repair), then `membershipd
// check` and `check --repair` run, and everything is read back through
// each node (lost after repair).
//
// The check must see the damage (it does not say every replica agrees),
// and nothing acknowledged may be missing after the repair. What a reader
// missed before the repair is reported, not judged: until the repair
// rebuilds the replica, a listener whose consumer the engine placed on
// the damaged node reads its copy (docs/RELIABILITY.md, "A damaged
// replica").
func TestReplicaTruncate(t *testing.T) { replicaDamageTest(t, "truncate") }

// TestReplicaBitFlip: see TestReplicaTruncate.
func TestReplicaBitFlip(t *testing.T) { replicaDamageTest(t, "bit flip") }

func replicaDamageTest(t *testing.T, how string) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	var rs []Result
	for k := range trials(t) {
		rounds := replicaDamage(t, k+1, how)
		for _, rd := range rounds {
			rs = append(rs, rd.before, rd.after)
			if lost(rd.after) > 0 {
				t.Errorf("acknowledged writes missing after check --repair: %v", rd.after)
			}
			if !rd.seen {
				t.Errorf("membershipd check did not see the damage (%s): %v", rd.how, rd.before)
			}
		}
	}
	report(t, rs)
}

func lost(r Result) int { return r.LostMsgs + r.LostUsers + r.LostRooms + r.DupMsgs }

// round is one damage of the replica, and what was read before and after
// the repair.
type round struct {
	how           string
	before, after Result
	seen          bool // the check before the repair saw the damage
}

// replicaDamage runs the rounds hows ("truncate", "bit flip") on one
// cluster and one load, in order: a later round damages the replica the
// one before it repaired.
func replicaDamage(t *testing.T, trial int, hows ...string) []round {
	t.Helper()
	c := harness.StartCluster(t, 3, "--scrub-interval=-1s", "--user-rooms", "0") // only the command repairs here
	adm, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	c.AddUser(t, 0, "root", "admin", adm)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := client.Config{Identity: adm, Servers: c.SeedsHTTP(), NATS: c.SeedsNATS()}
	a, room := load(ctx, t, cfg, func() {})
	var rounds []round
	for _, how := range hows {
		exp := "replica damaged (" + how + "), three nodes, R3"
		rd := round{how: how,
			before: Result{Experiment: exp + ", before repair", Policy: "always", Trial: trial},
			after:  Result{Experiment: exp + ", after check --repair", Policy: "always", Trial: trial}}
		// n3 holds everything before it is stopped: every replica agrees.
		harness.EventuallyNoError(t, time.Minute, func() error {
			if res, code := check(t, c); code != 0 {
				return fmt.Errorf("check: exit %d: %s", code, res)
			}
			return nil
		}, "every replica in agreement before the damage")

		const victim = 2
		c.Nodes[victim].Bus.Stop(t)
		for _, s := range damaged {
			damageLastBlock(t, c, victim, s.account, s.stream, how)
		}
		c.Start(t, victim)
		c.WaitHealthy(t, 0, 1, 2)
		for _, s := range damaged {
			rd.before.Note += fmt.Sprintf("%s leads %s; ", lead(ctx, t, c, victim, s.account, s.stream), s.stream)
		}
		// Through the damaged node, leading what it could: what a client
		// reads before anyone repairs anything.
		verify(ctx, t, nodeConfig(adm, c.Nodes[victim]), room, a, &rd.before)
		res, code := check(t, c)
		rd.before.Note += fmt.Sprintf("check: exit %d, %s", code, res)
		rd.seen = code != 0 && strings.HasPrefix(res, "divergent")

		started := time.Now()
		rr := harness.Run(t, c.Nodes[0].Dir, nil, "", "membershipd", "check", "--repair", "--nats-url", c.Nodes[0].NATSURL())
		rd.after.RecoverSec = time.Since(started).Seconds()
		res, code = check(t, c)
		rd.after.Note = fmt.Sprintf("check --repair: exit %d; check after it: exit %d, %s", rr.Code, code, res)
		if rr.Code != 0 {
			t.Logf("check --repair:\n%s", rr)
		}
		for _, n := range c.Nodes {
			var r Result
			verify(ctx, t, nodeConfig(adm, n), room, a, &r)
			rd.after.AckedMsgs, rd.after.AckedUsers, rd.after.AckedRooms = r.AckedMsgs, r.AckedUsers, r.AckedRooms
			rd.after.LostMsgs, rd.after.DupMsgs = max(rd.after.LostMsgs, r.LostMsgs), max(rd.after.DupMsgs, r.DupMsgs)
			rd.after.LostUsers, rd.after.LostRooms = max(rd.after.LostUsers, r.LostUsers), max(rd.after.LostRooms, r.LostRooms)
			if r.Note != "" {
				rd.after.Note += fmt.Sprintf("; through %s: %s", n.Name, r.Note)
			}
		}
		rounds = append(rounds, rd)
	}
	return rounds
}

func nodeConfig(id *identity.Identity, n *harness.Node) client.Config {
	return client.Config{Identity: id, Servers: []string{n.HTTPURL()}, NATS: []string{n.NATSURL()}}
}

// check runs `membershipd check --json` through node 0 and sums its
// report up: "divergent: UNIBUS_MSGS (n3), KV_UNIBUS_rooms (n3)" or
// "every replica agrees".
func check(t *testing.T, c *harness.Cluster) (string, int) {
	t.Helper()
	n := c.Nodes[0]
	r := harness.Run(t, n.Dir, nil, "", "membershipd", "check", "--json", "--nats-url", n.NATSURL())
	var res scrub.Report
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		return fmt.Sprintf("no report: %s", strings.TrimSpace(r.Stderr)), r.Code
	}
	var bad, unsettled []string
	for _, s := range res.Streams {
		switch s.Verdict {
		case scrub.Diverged:
			var who []string
			for _, d := range s.Diverged {
				who = append(who, d.Server)
			}
			bad = append(bad, fmt.Sprintf("%s (%s)", s.Stream, strings.Join(who, ",")))
		case scrub.Unsettled:
			unsettled = append(unsettled, s.Stream)
		}
	}
	switch {
	case len(bad) > 0:
		return "divergent: " + strings.Join(bad, ", "), r.Code
	case len(unsettled) > 0:
		return "unsettled: " + strings.Join(unsettled, ", "), r.Code
	}
	return "every replica agrees", r.Code
}

// damageLastBlock damages the last message block of a stream in node i's
// store (the node is stopped): "truncate" cuts its last 1,500 bytes off
// (400 of a bucket's, whose records are small), "bit flip" inverts 16
// bytes in its middle.
func damageLastBlock(t *testing.T, c *harness.Cluster, i int, account, stream, how string) {
	t.Helper()
	blks, _ := filepath.Glob(filepath.Join(c.Nodes[i].Dir, "local_files", "jetstream", "jetstream", account, "streams", stream, "msgs", "*.blk"))
	if len(blks) == 0 {
		t.Fatalf("%s: no message block of %s", c.Nodes[i].Name, stream)
	}
	sort.Strings(blks)
	last := blks[len(blks)-1]
	b, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	switch how {
	case "truncate":
		cut := int64(1500)
		if strings.HasPrefix(stream, "KV_") {
			cut = 400
		}
		err = os.Truncate(last, max(int64(len(b))-cut, 0))
	case "bit flip":
		mid := len(b) / 2
		for k := mid; k < min(mid+16, len(b)); k++ {
			b[k] ^= 0xff
		}
		err = os.WriteFile(last, b, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s/%s (%d bytes): %s", c.Nodes[i].Name, stream, filepath.Base(last), len(b), how)
}

// lead makes node i the leader of a stream if Raft lets it: the leader is
// asked to step down (through the scrub's responder, the only way: the
// step-down API is disabled) until node i leads, up to ten times. It
// returns the leader it ends with.
func lead(ctx context.Context, t *testing.T, c *harness.Cluster, i int, account, stream string) string {
	t.Helper()
	nc := c.InternalConn(t, 0, "")
	want := c.Nodes[i].Name
	leader := ""
	for range 10 {
		views, err := scrub.Collect(ctx, nc, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		leader = ""
		for _, v := range views {
			for _, s := range v.Streams {
				if s.Account == account && s.Stream == stream && s.Leader != "" {
					leader = s.Leader
				}
			}
		}
		if leader == want {
			return leader
		}
		if leader != "" {
			req, _ := json.Marshal(scrub.StepdownRequest{Server: leader, Account: account, Stream: stream})
			if _, err := nc.Request(scrub.StepdownSubject, req, 5*time.Second); err != nil {
				t.Logf("step down %s from %s: %v", leader, stream, err)
			}
		}
		time.Sleep(2 * time.Second) // an election; the next Collect shows its outcome
	}
	return leader
}
