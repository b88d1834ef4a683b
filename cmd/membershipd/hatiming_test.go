package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/subjects"
)

// TestHATiming measures, over repeated trials on a real three-node R3
// cluster on loopback, (a) how long a receiving client goes without
// messages when the node it is connected to is SIGKILLed, and (b) how long
// a revocation made through one node's API takes to close the user's
// connection on another node. It reports p50/p90/p99/max and never fails
// on a timing (only on a lost or duplicated message): it is a benchmark,
// gated so that CI does not run it. docs/CLUSTER.md has the figures.
//
//	UNIBUS_HA_TIMING=1 [UNIBUS_HA_TRIALS=15] [UNIBUS_HA_REVOKE_TRIALS=50] [UNIBUS_HA_OUT=file.json] \
//	    go test -run TestHATiming -timeout 60m -v ./cmd/membershipd
func TestHATiming(t *testing.T) {
	if os.Getenv("UNIBUS_HA_TIMING") == "" {
		t.Skip("benchmark: set UNIBUS_HA_TIMING=1 (see docs/CLUSTER.md)")
	}
	trials, revokes := envInt(t, "UNIBUS_HA_TRIALS", 15), envInt(t, "UNIBUS_HA_REVOKE_TRIALS", 50)
	c := harness.StartCluster(t, 3)
	root, rx := newID(t, c.Nodes[0].Dir, "root"), newID(t, c.Nodes[0].Dir, "rx")
	c.AddUser(t, 0, "root", "admin", root)
	c.AddUser(t, 0, "rx", "member", rx)
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Minute)
	defer cancel()

	res := haResults{Machine: fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version()), Started: time.Now()}
	res.Revocation = revocationTrials(ctx, t, c, root, revokes)
	res.Failover = failoverTrials(ctx, t, c, root, rx, trials)
	report := res.summary()
	t.Log("\n" + report)
	if out := os.Getenv("UNIBUS_HA_OUT"); out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Error(err)
		}
	}
}

type failoverTrial struct {
	Victim       string `json:"victim"`
	StreamLeader bool   `json:"victim_was_room_stream_leader"`
	// ListenerNode: the victim held rx's listener (its consumer, one
	// replica in memory), which the SDK must then make again.
	ListenerNode bool          `json:"victim_held_the_listener"`
	Restore      time.Duration `json:"restore_ns"`       // kill → first message sent after the kill received
	Gap          time.Duration `json:"gap_ns"`           // longest time without a message around the kill
	ControlPlane time.Duration `json:"control_plane_ns"` // longest wait for a control-plane answer after the kill
	Sent         int           `json:"sent"`
	Lost, Dups   int
}

type revokeTrial struct {
	API, On string
	Closed  time.Duration `json:"closed_ns"` // API request start → connection closed on the other node
	Answer  time.Duration `json:"answer_ns"` // API request start → API answer
}

type haResults struct {
	Machine    string
	Started    time.Time
	Failover   []failoverTrial
	Revocation []revokeTrial
}

func (r haResults) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "machine: %s\n", r.Machine)
	var restore, gap, cp, closed, answer []time.Duration
	leader, listener := 0, 0
	for _, f := range r.Failover {
		restore, gap, cp = append(restore, f.Restore), append(gap, f.Gap), append(cp, f.ControlPlane)
		if f.StreamLeader {
			leader++
		}
		if f.ListenerNode {
			listener++
		}
	}
	for _, v := range r.Revocation {
		closed, answer = append(closed, v.Closed), append(answer, v.Answer)
	}
	fmt.Fprintf(&b, "fail-over, %d trials (%d where the killed node led the room's stream, %d where it held the listener):\n", len(r.Failover), leader, listener)
	fmt.Fprintf(&b, "  kill → receiving again: %s\n", percentiles(restore))
	fmt.Fprintf(&b, "  longest gap:            %s\n", percentiles(gap))
	fmt.Fprintf(&b, "  control plane, longest wait for an answer: %s\n", percentiles(cp))
	fmt.Fprintf(&b, "revocation across nodes, %d trials:\n", len(r.Revocation))
	fmt.Fprintf(&b, "  request → connection closed on another node: %s\n", percentiles(closed))
	fmt.Fprintf(&b, "  request → API answer:                        %s\n", percentiles(answer))
	return b.String()
}

// percentiles gives nearest-rank p50, p90, p99 and the maximum.
func percentiles(d []time.Duration) string {
	if len(d) == 0 {
		return "no trials"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(p float64) time.Duration { return s[max(0, int(math.Ceil(p*float64(len(s))))-1)] }
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	if at(.5) < 10*time.Millisecond {
		r = func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
	}
	return fmt.Sprintf("p50 %v  p90 %v  p99 %v  max %v  (n=%d)", r(at(.5)), r(at(.9)), r(at(.99)), r(s[len(s)-1]), len(s))
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// revocationTrials: a fresh user logs in to the data plane of node C; an
// admin revokes it through node A's API (A ≠ C, rotating); the time is from
// the start of the API request until C closes the user's connection.
func revocationTrials(ctx context.Context, t *testing.T, c *harness.Cluster, root *identity.Identity, n int) []revokeTrial {
	admins := make([]*client.Client, 3)
	for i, node := range c.Nodes {
		cl, err := client.Dial(ctx, client.Config{Identity: root, Servers: []string{node.HTTPURL()}, NATS: []string{node.NATSURL()}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		admins[i] = cl
	}
	var out []revokeTrial
	for k := range n {
		a, on := k%3, (k+1+k/3%2)%3 // every ordered pair of distinct nodes
		id, err := identity.Generate()
		if err != nil {
			t.Fatal(err)
		}
		handle := fmt.Sprintf("rev%d", k)
		if _, err := admins[a].AddUser(ctx, handle, id.SignPub().String(), "member"); err != nil {
			t.Fatal(err)
		}
		closed := make(chan time.Time, 1)
		var nc *nats.Conn
		// The new user reaches node C's watcher a moment later.
		harness.EventuallyNoError(t, 10*time.Second, func() (err error) {
			nc, err = nats.Connect(c.Nodes[on].NATSURL(), nats.Nkey(id.NKey(), id.SignNonce), nats.NoReconnect(),
				nats.CustomInboxPrefix(subjects.InboxPrefix(id.SignPub().String())),
				nats.ClosedHandler(func(*nats.Conn) {
					select {
					case closed <- time.Now():
					default:
					}
				}))
			return err
		}, "user %s logs in to %s", handle, c.Nodes[on].Name)
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := admins[a].RevokeUser(ctx, handle); err != nil {
			t.Fatal(err)
		}
		answered := time.Since(start)
		select {
		case at := <-closed:
			out = append(out, revokeTrial{API: c.Nodes[a].Name, On: c.Nodes[on].Name, Closed: at.Sub(start), Answer: answered})
		case <-time.After(30 * time.Second):
			t.Errorf("revocation through %s did not close the connection on %s within 30 s", c.Nodes[a].Name, c.Nodes[on].Name)
		}
		nc.Close()
	}
	return out
}

// failoverTrials: rx listens to a room (a default client: all seeds, 2 s
// room-state cache); a sender connected to the other two nodes sends every
// 50 ms a message carrying its send time (its room state cached for the
// trial, so that it measures the data plane); the node rx is connected to
// is SIGKILLed. A trial measures the time from the kill until rx receives a
// message sent after it, the longest gap between two messages, and how
// long a control-plane client (all seeds) waited at worst for an answer;
// it checks that every message arrived exactly once. Then the node is
// restarted and every stream is waited on until all its replicas are
// current, so that the next kill meets no lagging follower.
func failoverTrials(ctx context.Context, t *testing.T, c *harness.Cluster, root, rx *identity.Identity, n int) []failoverTrial {
	admin := dialRetry(ctx, t, c, root)
	recv := dialRetry(ctx, t, c, rx)
	room, err := admin.CreateRoom(ctx, "ha-timing")
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.AddMember(ctx, room.ID, "rx", "member"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []received
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	done := make(chan error, 1)
	var listening atomic.Bool
	go func() {
		done <- recv.Listen(lctx, room.ID, client.ListenOptions{OnError: func(err error) { t.Errorf("rx: reported: %v", err) }}, func(m client.Message) {
			listening.Store(true)
			r := received{at: time.Now()}
			if _, err := fmt.Sscanf(string(m.Data), "%d %d %d", &r.trial, &r.seq, &r.sentNs); err != nil {
				return
			}
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
		})
	}()
	// A Listen delivers only what is stored after its consumer exists:
	// warm-up messages until one arrives.
	harness.Eventually(t, 2*time.Minute, func() bool {
		if listening.Load() {
			return true
		}
		if _, err := admin.Send(ctx, room.ID, "", []byte("warm-up")); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
		return false
	}, "warm-up: a message delivered")
	snapshot := func(trial int) []received {
		mu.Lock()
		defer mu.Unlock()
		var out []received
		for _, r := range got {
			if r.trial == trial {
				out = append(out, r)
			}
		}
		return out
	}
	bus, members := make([]*nats.Conn, 3), make([]*nats.Conn, 3)
	for i := range c.Nodes {
		bus[i], members[i] = c.InternalConn(t, i, natsnode.BusAccount), membersConn(t, c, i)
	}
	info, err := admin.RoomInfo(ctx, room.ID)
	if err != nil {
		t.Fatal(err)
	}
	stream, filter := roomStream(info.Room)
	var out []failoverTrial
	for k := range n {
		victim := whereIs(t, c, members, rx)
		survivors := []int{(victim + 1) % 3, (victim + 2) % 3}
		var sHTTP, sNATS []string
		for _, i := range survivors {
			sHTTP, sNATS = append(sHTTP, c.Nodes[i].HTTPURL()), append(sNATS, c.Nodes[i].NATSURL())
		}
		sender, err := client.Dial(ctx, client.Config{Identity: root, Servers: sHTTP, NATS: sNATS, RoomCacheTTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		tr := failoverTrial{Victim: c.Nodes[victim].Name}
		js, _ := jetstream.New(bus[survivors[0]])
		tr.StreamLeader, tr.ListenerNode = placement(ctx, js, stream, room.ID, rx, tr.Victim)

		sctx, scancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var lastSeq int
		ids := map[int]string{}
		wg.Add(2)
		go func() { // the sender
			defer wg.Done()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for seq := 1; sctx.Err() == nil; seq++ {
				msg := fmt.Sprintf("%d %d %d", k, seq, time.Now().UnixNano())
				for sctx.Err() == nil { // like clientcheck: a failed send is sent again
					id, err := sender.Send(sctx, room.ID, "", []byte(msg))
					if err == nil {
						mu.Lock()
						ids[seq], lastSeq = id, seq
						mu.Unlock()
						break
					}
					if sctx.Err() == nil {
						t.Logf("trial %d: send %d failed, sending again: %v", k, seq, err)
						time.Sleep(100 * time.Millisecond)
					}
				}
				select {
				case <-tick.C:
				case <-sctx.Done():
				}
			}
		}()
		var probes []probe
		go func() { // the control-plane prober
			defer wg.Done()
			cl, err := client.Dial(ctx, client.Config{Identity: root, Servers: c.SeedsHTTP(), NATS: c.SeedsNATS()})
			if err != nil {
				t.Errorf("prober: %v", err)
				return
			}
			defer cl.Close()
			for sctx.Err() == nil {
				p := probe{start: time.Now()}
				_, err := cl.RoomInfo(sctx, room.ID)
				p.end, p.ok = time.Now(), err == nil
				mu.Lock()
				probes = append(probes, p)
				mu.Unlock()
				time.Sleep(100 * time.Millisecond)
			}
		}()
		wait := func(what string, d time.Duration, pred func([]received) bool) bool {
			wctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			err := harness.Wait(wctx, func() error {
				if rs := snapshot(k); !pred(rs) {
					return fmt.Errorf("%d received", len(rs))
				}
				return nil
			})
			if err != nil {
				t.Errorf("trial %d: %s: not within %v (%v)", k, what, d, err)
			}
			return err == nil
		}
		wait("warm-up", 60*time.Second, func(rs []received) bool { return len(rs) >= 10 })
		killed := time.Now()
		c.Kill(victim)
		wait("receiving after the kill", 3*time.Minute, func(rs []received) bool {
			return slices.ContainsFunc(rs, func(r received) bool { return r.sentNs > killed.UnixNano() })
		})
		// The control plane answers again (a trial that waits in vain is
		// measured all the same: worstWait shows it), then a second more
		// of traffic: a deliberate window, nothing to wait for.
		pctx, pcancel := context.WithTimeout(ctx, 3*time.Minute)
		if err := harness.Wait(pctx, func() error {
			mu.Lock()
			defer mu.Unlock()
			if !slices.ContainsFunc(probes, func(p probe) bool { return p.ok && p.start.After(killed) }) {
				return errors.New("no control-plane answer since the kill")
			}
			return nil
		}); err != nil {
			t.Logf("trial %d: %v within 3 minutes", k, err)
		}
		pcancel()
		time.Sleep(time.Second)
		scancel()
		wg.Wait()
		sender.Close()
		mu.Lock()
		last := lastSeq
		mu.Unlock()
		drained := wait("drain", time.Minute, func(rs []received) bool {
			return slices.ContainsFunc(rs, func(r received) bool { return r.seq == last })
		})

		seen := map[int]int{}
		var prev time.Time
		for _, r := range snapshot(k) {
			seen[r.seq]++
			if tr.Restore == 0 && r.sentNs > killed.UnixNano() {
				tr.Restore = r.at.Sub(killed)
			}
			if !prev.IsZero() && r.at.Sub(prev) > tr.Gap {
				tr.Gap = r.at.Sub(prev)
			}
			prev = r.at
		}
		tr.Sent = last
		var lost []int
		for s := 1; s <= last; s++ {
			switch seen[s] {
			case 0:
				lost = append(lost, s)
			case 1:
			default:
				tr.Dups += seen[s] - 1
			}
		}
		tr.Lost = len(lost)
		if drained && (tr.Lost > 0 || tr.Dups > 0) {
			t.Errorf("trial %d: lost %v, duplicated %d of %d; %s", k, lost, tr.Dups, tr.Sent, inStream(ctx, js, stream, filter, ids, lost))
		}
		tr.ControlPlane = worstWait(probes, killed)
		t.Logf("trial %d: killed %s (room's stream leader: %v, listener's node: %v): receiving again after %v, longest gap %v, control plane waited at worst %v; %d sent, %d lost, %d dup",
			k, tr.Victim, tr.StreamLeader, tr.ListenerNode, tr.Restore.Round(time.Millisecond), tr.Gap.Round(time.Millisecond), tr.ControlPlane.Round(time.Millisecond), tr.Sent, tr.Lost, tr.Dups)
		out = append(out, tr)

		c.Start(t, victim)
		c.WaitHealthy(t, 0, 1, 2)
		waitAllCurrent(ctx, t, c, survivors[0])
	}
	lcancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
	return out
}

type received struct {
	at         time.Time
	trial, seq int
	sentNs     int64
}

type probe struct {
	start, end time.Time
	ok         bool
}

// worstWait is the longest a control-plane caller waited for an answer
// after the kill: for each probe still running at the kill or started
// after it, the time from its start (or the kill) to the end of the first
// successful probe at or after it.
func worstWait(ps []probe, killed time.Time) time.Duration {
	var worst time.Duration
	for i, p := range ps {
		if p.end.Before(killed) {
			continue
		}
		from := p.start
		if from.Before(killed) {
			from = killed
		}
		for _, q := range ps[i:] {
			if q.ok {
				worst = max(worst, q.end.Sub(from))
				break
			}
		}
	}
	return worst
}

// membersConn logs in to node i as that node's internal identity in the
// members account, where every member's connection is: the account whose
// connection lists say where a member is connected.
func membersConn(t *testing.T, c *harness.Cluster, i int) *nats.Conn {
	t.Helper()
	n := c.Nodes[i]
	id, err := identity.Load(filepath.Join(n.Dir, "local_files", "internal.id"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(n.NATSURL(), nats.Nkey(id.NKey(), id.SignNonce), natsnode.MembersLogin(), nats.Name("test-members"),
		nats.Timeout(10*time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		t.Fatalf("internal login to %s's members account: %v", n.Name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// whereIs returns the node rx's data-plane connection is on, asking
// through members-account connections (members[i] for node i).
func whereIs(t *testing.T, c *harness.Cluster, members []*nats.Conn, rx *identity.Identity) int {
	t.Helper()
	at := -1
	harness.Eventually(t, 2*time.Minute, func() bool {
		for i := range c.Nodes {
			names, err := harness.Where(members[i], rx.NKey())
			if err != nil || len(names) != 1 {
				continue
			}
			for j, node := range c.Nodes {
				if node.Name == names[0] {
					at = j
					return true
				}
			}
		}
		return false
	}, "rx connected to a single node")
	return at
}

// roomStream names the stream that holds the room's messages and the
// subject filter of the room in it: the shared stream, or the room's own.
func roomStream(r client.Room) (stream, filter string) {
	if r.Shared {
		return subjects.SharedStream, subjects.SharedRoom(r.ID)
	}
	return subjects.Stream(r.ID), subjects.Room(r.ID)
}

// placement tells whether node victim leads the room's stream and whether
// it holds a listener of rx's on the room (listeners are consumers with one
// replica, placed by the meta leader, not necessarily where rx is
// connected).
func placement(ctx context.Context, js jetstream.JetStream, stream, room string, rx *identity.Identity, victim string) (leader, listener bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return false, false
	}
	if ci := s.CachedInfo().Cluster; ci != nil {
		leader = ci.Leader == victim
	}
	l := s.ListConsumers(ctx)
	for info := range l.Info() {
		md := info.Config.Metadata
		if md["unibus_member"] == rx.SignPub().String() && md["unibus_room"] == room && info.Cluster != nil && info.Cluster.Leader == victim {
			listener = true
		}
	}
	return leader, listener
}

// inStream tells, for messages a receiver lacked, whether the room's stream
// holds them (lost in delivery) or not (lost in publishing). It reads the
// room's messages (filter) in stream, one at a time from the first: no
// consumer is made.
func inStream(ctx context.Context, js jetstream.JetStream, stream, filter string, ids map[int]string, seqs []int) string {
	ctx, cancel := context.WithTimeout(ctx, time.Minute) // a diagnosis, bounded
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err.Error()
	}
	stored := map[string]bool{}
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return fmt.Sprintf("read %s from %s at %d: %v", filter, stream, seq, err)
		}
		stored[m.Header.Get(e2e.HdrMsgID)] = true
		seq = m.Sequence + 1
	}
	var in, out []int
	for _, q := range seqs {
		if stored[ids[q]] {
			in = append(in, q)
		} else {
			out = append(out, q)
		}
	}
	return fmt.Sprintf("in the stream but not delivered: %v; acknowledged but not in the stream: %v", in, out)
}

// waitAllCurrent waits until every stream has every replica current, so
// that the next kill never meets a stream with a lagging follower.
func waitAllCurrent(ctx context.Context, t *testing.T, c *harness.Cluster, i int) {
	t.Helper()
	harness.EventuallyNoError(t, 3*time.Minute, func() error {
		ss, err := streamsOnce(ctx, c, i, t)
		behind := []string{}
		for _, r := range ss {
			if !r.Done() {
				behind = append(behind, r.String())
			}
		}
		if err == nil && len(behind) > 0 {
			err = fmt.Errorf("behind: %v", behind)
		}
		return err
	}, "every stream current after a restart")
}
