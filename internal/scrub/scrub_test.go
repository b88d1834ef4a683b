package scrub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/natsnode"
)

const msgs = 20

// setup starts the cluster and makes an R3 stream in each account with
// msgs acknowledged messages: "CTL" in the control account, "BUS" in the
// bus account.
func setup(t *testing.T) (*testCluster, Conns, map[string]jetstream.JetStream) {
	t.Helper()
	c := startTestCluster(t)
	ctl, bus := c.Conn(0), c.Conn(0, natsnode.BusLogin())
	conns := Conns{Control: ctl, Accounts: map[string]*nats.Conn{natsnode.ControlAccount: ctl, natsnode.BusAccount: bus}}
	jss := map[string]jetstream.JetStream{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for acc, name := range map[string]string{natsnode.ControlAccount: "CTL", natsnode.BusAccount: "BUS"} {
		js, err := jetstream.New(conns.Accounts[acc])
		if err != nil {
			t.Fatal(err)
		}
		jss[name] = js
		harness.EventuallyNoError(t, time.Minute, func() error {
			// Each attempt bounded: a request the meta layer drops
			// while it settles is never answered, and one call
			// waiting on it would use the whole minute.
			actx, acancel := context.WithTimeout(ctx, 10*time.Second)
			defer acancel()
			_, err := js.CreateStream(actx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Replicas: 3})
			return err
		}, "create %s", name)
		for i := range msgs {
			harness.EventuallyNoError(t, time.Minute, func() error {
				// Bounded and retried like the creation; the message id
				// makes a retry of a stored message a duplicate.
				actx, acancel := context.WithTimeout(ctx, 10*time.Second)
				defer acancel()
				_, err := js.Publish(actx, fmt.Sprintf("%s.%d", name, i), fmt.Appendf(nil, "message %d of %s", i, name),
					jetstream.WithMsgID(fmt.Sprintf("%s-%d", name, i)))
				return err
			}, "publish message %d of %s", i, name)
		}
	}
	waitAgree(t, conns)
	return c, conns, jss
}

// waitAgree waits until every replica of every stream agrees.
func waitAgree(t *testing.T, conns Conns) Report {
	t.Helper()
	var r Report
	harness.EventuallyNoError(t, time.Minute, func() error {
		var err error
		if r, err = Check(context.Background(), conns.Control, Options{}); err != nil {
			return err
		}
		for _, s := range r.Streams {
			if s.Verdict != Agree || s.Answered != s.Replicas {
				return errors.New(s.String())
			}
		}
		return nil
	}, "every replica agrees")
	return r
}

// readAll reads every message of the stream through its leader and
// returns the sequences that are missing.
func readAll(t *testing.T, js jetstream.JetStream, name string) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	var missing []uint64
	for seq := uint64(1); seq <= msgs; seq++ {
		if _, err := s.GetMsg(ctx, seq); err != nil {
			missing = append(missing, seq)
		}
	}
	return missing
}

// readThroughEach makes each node in turn the stream's leader and reads
// every message back through it: after a repair, none may be missing.
func (c *testCluster) readThroughEach(t *testing.T, js jetstream.JetStream, account, stream string) {
	t.Helper()
	for i := range 3 {
		c.lead(t, js, account, stream, i)
		if m := readAll(t, js, stream); len(m) != 0 {
			t.Errorf("with %s leading after the repair, missing %v", c.names[i], m)
		}
	}
}

// lead makes node i the stream's leader (stepping the others down).
func (c *testCluster) lead(t *testing.T, js jetstream.JetStream, account, stream string, i int) {
	t.Helper()
	harness.EventuallyNoError(t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		l := s.CachedInfo().Cluster.Leader
		if l == c.names[i] {
			return nil
		}
		for j, n := range c.nodes {
			if c.names[j] == l {
				n.Server().JetStreamStepdownStream(account, stream)
			}
		}
		return fmt.Errorf("leader is %s", l)
	}, "%s leads %s", c.names[i], stream)
}

// A follower's copy truncated while its node was down: the node comes
// back with fewer messages and Raft calls it current. Check names it
// (and only it), Repair rebuilds it from the leader, every replica agrees
// again and every message is read back.
func TestFollowerTruncatedRepaired(t *testing.T) {
	c, conns, jss := setup(t)
	ctx := context.Background()
	c.lead(t, jss["CTL"], natsnode.ControlAccount, "CTL", 0)
	c.Stop(2)
	c.truncateTail(2, natsnode.ControlAccount, "CTL", 120)
	c.Start(2)

	r, err := Check(ctx, conns.Control, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := r.Divergent()
	if !r.Quorum || len(d) != 1 || d[0].Stream != "CTL" || len(d[0].Diverged) != 1 || d[0].Diverged[0].Server != "n3" || d[0].LeaderDiverged() {
		t.Fatalf("check after truncating n3's copy of CTL: %+v", r)
	}
	if got := d[0].Diverged[0].State.Msgs; got >= msgs || d[0].Agreed.Msgs != msgs {
		t.Fatalf("divergent replica holds %d messages, the majority %d; want fewer than %d and %d", got, d[0].Agreed.Msgs, msgs, msgs)
	}
	t.Logf("detected: %s", d[0])

	var steps []string
	start := time.Now()
	err = Repair(ctx, conns, d[0], RepairOptions{Step: func(_, s string) { steps = append(steps, s) }})
	if err != nil {
		t.Fatalf("repair: %v (steps %q)", err, steps)
	}
	t.Logf("repaired in %v: %q", time.Since(start).Round(time.Millisecond), steps)
	waitAgree(t, conns)
	c.readThroughEach(t, jss["CTL"], natsnode.ControlAccount, "CTL")
}

// A copy truncated, and its node then leads: it serves the lost messages
// as missing. Repair makes it step down first (an agreeing replica leads
// and serves everything at once), then rebuilds it.
func TestLeaderTruncatedRepaired(t *testing.T) {
	c, conns, jss := setup(t)
	ctx := context.Background()
	c.lead(t, jss["BUS"], natsnode.BusAccount, "BUS", 0)
	c.Stop(1)
	c.truncateTail(1, natsnode.BusAccount, "BUS", 120)
	c.Start(1)
	c.lead(t, jss["BUS"], natsnode.BusAccount, "BUS", 1)
	missing := readAll(t, jss["BUS"], "BUS")
	if len(missing) == 0 {
		t.Fatal("the damaged leader served every message: the damage did not take")
	}
	t.Logf("n2 leading its truncated copy serves %d of %d messages as missing: %v", len(missing), msgs, missing)

	r, err := Check(ctx, conns.Control, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := r.Divergent()
	if len(d) != 1 || d[0].Stream != "BUS" || !d[0].LeaderDiverged() || d[0].Leader != "n2" {
		t.Fatalf("check with n2 leading a truncated BUS: %+v", r)
	}
	var steps []string
	if err := Repair(ctx, conns, d[0], RepairOptions{Step: func(_, s string) { steps = append(steps, s) }}); err != nil {
		t.Fatalf("repair: %v (steps %q)", err, steps)
	}
	t.Logf("repair steps: %q", steps)
	if !slices.ContainsFunc(steps, func(s string) bool { return s == "asking the divergent leader n2 to step down" }) {
		t.Errorf("the divergent leader was not stepped down: %q", steps)
	}
	waitAgree(t, conns)
	c.readThroughEach(t, jss["BUS"], natsnode.BusAccount, "BUS")
}

// A follower's copy with one record's bytes flipped while its node was
// down: its counts still agree with the others', and the engine would
// skip the record when it reads. Its node's verification finds the
// record; Check names the replica (and only it) divergent, Repair
// rebuilds it, and every message is read back whoever leads.
func TestFlippedReplicaRepaired(t *testing.T) {
	c, conns, jss := setup(t)
	ctx := context.Background()
	c.lead(t, jss["BUS"], natsnode.BusAccount, "BUS", 0)
	c.Stop(2)
	c.flipBits(2, natsnode.BusAccount, "BUS", 12) // the last message's payload
	c.Start(2)

	r, err := Check(ctx, conns.Control, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := r.Divergent()
	if len(d) != 1 || d[0].Stream != "BUS" || len(d[0].Diverged) != 1 || d[0].Diverged[0].Server != "n3" {
		t.Fatalf("check after flipping bytes of n3's copy of BUS: %+v", r)
	}
	got, agreed := d[0].Diverged[0].State, *d[0].Agreed
	if got.Damaged != 1 || agreed.Damaged != 0 || got.Msgs != agreed.Msgs || got.LastSeq != agreed.LastSeq {
		t.Fatalf("divergent replica %s, majority %s: want the same counts and 1 damaged record", got, agreed)
	}
	t.Logf("detected: %s", d[0])
	var steps []string
	if err := Repair(ctx, conns, d[0], RepairOptions{Step: func(_, s string) { steps = append(steps, s) }}); err != nil {
		t.Fatalf("repair: %v (steps %q)", err, steps)
	}
	t.Logf("repair steps: %q", steps)
	for _, s := range waitAgree(t, conns).Streams {
		if s.Agreed.Damaged != 0 {
			t.Errorf("after the repair %s agrees on %s", s.Stream, s.Agreed)
		}
	}
	c.readThroughEach(t, jss["BUS"], natsnode.BusAccount, "BUS")
}

// A node that finds damage in a replica it leads steps down from leading
// it when it next answers a state request, before any repair: an intact
// replica then serves every message.
func TestDamagedLeaderStepsDown(t *testing.T) {
	c, conns, jss := setup(t)
	ctx := context.Background()
	c.lead(t, jss["BUS"], natsnode.BusAccount, "BUS", 0)
	c.Stop(1)
	c.flipBits(1, natsnode.BusAccount, "BUS", 12)
	c.Start(1)
	c.lead(t, jss["BUS"], natsnode.BusAccount, "BUS", 1)
	if m := readAll(t, jss["BUS"], "BUS"); len(m) != 1 || m[0] != msgs {
		t.Fatalf("n2 leading its damaged copy serves as missing %v; want [%d]: the damage did not take", m, msgs)
	}
	if _, err := Collect(ctx, conns.Control, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	harness.EventuallyNoError(t, time.Minute, func() error {
		s, err := jss["BUS"].Stream(ctx, "BUS")
		if err != nil {
			return err
		}
		if l := s.CachedInfo().Cluster.Leader; l == "" || l == "n2" {
			return fmt.Errorf("leader %q", l)
		}
		return nil
	}, "n2 steps down from leading its damaged copy")
	if m := readAll(t, jss["BUS"], "BUS"); len(m) != 0 {
		t.Errorf("after n2 stepped down, missing %v", m)
	}
}

// Without a majority nothing is judged and nothing repaired: with one
// node of three down and the other two disagreeing, the stream is
// unsettled and Repair refuses.
func TestNoMajorityNoRepair(t *testing.T) {
	c, conns, jss := setup(t)
	ctx := context.Background()
	c.lead(t, jss["CTL"], natsnode.ControlAccount, "CTL", 0)
	c.Stop(2)
	c.truncateTail(2, natsnode.ControlAccount, "CTL", 120)
	c.Stop(1)
	c.Start(2) // n1 (agreeing) and n3 (truncated) are up, n2 is down
	var r Report
	harness.EventuallyNoError(t, time.Minute, func() error {
		var err error
		r, err = Check(ctx, conns.Control, Options{})
		if err != nil {
			return err
		}
		for _, s := range r.Streams {
			if s.Stream == "CTL" && s.Answered == 2 {
				return nil
			}
		}
		return fmt.Errorf("%+v", r.Streams)
	}, "two replicas of CTL answer")
	for _, s := range r.Streams {
		if s.Stream != "CTL" {
			continue
		}
		if s.Verdict != Unsettled || len(s.Diverged) != 0 {
			t.Fatalf("one agreeing and one truncated replica of three: %s; want %s", s, Unsettled)
		}
		s.Verdict = Diverged // as if a caller insisted
		if err := Repair(ctx, conns, s, RepairOptions{Wait: 5 * time.Second}); !errors.Is(err, ErrNoQuorum) {
			t.Fatalf("repair without a majority: %v; want ErrNoQuorum", err)
		}
		return
	}
	t.Fatal("CTL not reported")
}

// Compare's rules on fixed views.
func TestCompare(t *testing.T) {
	full := State{Msgs: 20, Bytes: 1000, FirstSeq: 1, LastSeq: 20}
	short := State{Msgs: 17, Bytes: 850, FirstSeq: 1, LastSeq: 20}
	view := func(server string, st ...State) View {
		v := View{Server: server, Quorum: true, MetaSize: 3}
		for i, s := range st {
			v.Streams = append(v.Streams, StreamView{Account: "A", Stream: fmt.Sprint("S", i), Replicas: 3, Leader: "n1", State: s})
		}
		return v
	}
	for _, tc := range []struct {
		name    string
		views   []View
		verdict string
		bad     []string
		quorum  bool
	}{
		{"all agree", []View{view("n1", full), view("n2", full), view("n3", full)}, Agree, nil, true},
		{"follower short", []View{view("n1", full), view("n2", full), view("n3", short)}, Diverged, []string{"n3"}, true},
		{"leader short", []View{view("n1", short), view("n2", full), view("n3", full)}, Diverged, []string{"n1"}, true},
		{"two of three answer and agree", []View{view("n1", full), view("n2", full)}, Agree, nil, true},
		{"two answer and differ", []View{view("n1", full), view("n3", short)}, Unsettled, nil, true},
		{"one answers", []View{view("n1", full)}, Unsettled, nil, false},
		{"three differ", []View{view("n1", full), view("n2", short), view("n3", State{Msgs: 1})}, Unsettled, nil, true},
		{"follower behind a busy stream", []View{view("n1", full), view("n2", full), view("n3", State{Msgs: 19, Bytes: 950, FirstSeq: 1, LastSeq: 19})}, Unsettled, nil, true},
		{"follower ahead of the majority", []View{view("n1", full), view("n2", full), view("n3", State{Msgs: 21, Bytes: 1050, FirstSeq: 1, LastSeq: 21})}, Unsettled, nil, true},
		{"follower behind and another short", []View{view("n1", full), view("n2", full), view("n3", short), view("n4", State{Msgs: 19, Bytes: 950, FirstSeq: 1, LastSeq: 19})}, Diverged, []string{"n3"}, true},
	} {
		r := Compare(tc.views)
		if len(r.Streams) != 1 {
			t.Fatalf("%s: %d streams", tc.name, len(r.Streams))
		}
		s := r.Streams[0]
		if s.Verdict != tc.verdict || !slices.Equal(servers(s.Diverged), tc.bad) || r.Quorum != tc.quorum {
			t.Errorf("%s: %s quorum=%v; want %s %v quorum=%v", tc.name, s, r.Quorum, tc.verdict, tc.bad, tc.quorum)
		}
	}
}
