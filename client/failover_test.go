package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/testbin"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// One SDK client with every node of a real three-node R3 cluster as seeds,
// on both planes, sends a steady stream of messages to a room and receives
// them, while the node that is at once its data-plane server, its first
// control-plane seed and the room stream's leader is SIGKILLed. Every
// message arrives exactly once and is stored once; a message published
// again with its Nats-Msg-Id after the fail-over (what the SDK's retry
// does) is recognized as a duplicate by the new leader; control-plane
// calls — the room state every send needs, room info, adding a member —
// are answered by a surviving node; the data-plane connection moves to one.
func TestFailoverAcrossSeeds(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	f := newFixture(t)
	cfg := client.Config{Identity: f.root, Servers: f.c.SeedsHTTP(), NATS: f.c.SeedsNATS(), Logger: f.logger("client"),
		RoomCacheTTL: 300 * time.Millisecond} // sends keep asking the control plane
	room := f.roomLedBy(t, "n1")
	tap := f.tapRoom(t, room)

	// The client, dialled until its data-plane connection lands on n1
	// (nats.go shuffles the seeds); its first control-plane seed is n1.
	rx := &receiver{got: map[int]int{}}
	var cl *client.Client
	for attempt := 0; ; attempt++ {
		cl = dialUntil(f.ctx, t, cfg)
		rx.listen(f.ctx, cl, room)
		if on := connectedTo(f.bus, f.root); on == "n1" {
			break
		} else if attempt == 30 {
			t.Fatalf("the client never connected to n1 in 30 dials (last: %q)", on)
		}
		rx.stop(t)
		cl.Close()
	}

	warmups := rx.ready(t, cl, room) // Listen delivers new messages only: wait until it does

	const total = 300
	s := &sender{cl: cl, room: room, ids: map[int]string{}, retryUnavailable: true}
	sent := s.run(f.ctx, total, 40*time.Millisecond)
	waitUntil(t, "the first 50 messages", 2*time.Minute, func() bool { return rx.count(func(i, _ int) bool { return i >= 1 && i <= 50 }) == 50 })
	killed := time.Now()
	f.c.Kill(0)
	t.Logf("SIGKILLed n1 (the client's data-plane node, first control-plane seed, room stream leader)")

	// Control-plane calls move to a surviving node.
	var info client.RoomInfo
	waitUntil(t, "room info and member add through a survivor", 2*time.Minute, func() bool {
		err := cl.AddMember(f.ctx, room, "bob", client.RoomMember)
		if err != nil && !client.IsCode(err, wire.CodeUnavailable) && !client.IsCode(err, wire.CodeAlreadyMember) {
			t.Fatalf("add member with n1 down: %v", err)
		}
		if err != nil {
			return false
		}
		info, err = cl.RoomInfo(f.ctx, room)
		return err == nil
	})
	t.Logf("control plane answered through a survivor %v after the kill", time.Since(killed).Round(time.Millisecond))
	if len(info.Members) != 2 {
		t.Errorf("room members after the add: %+v", info.Members)
	}
	if err := within(t, sent, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	f.waitAll(t, rx, 1, room, total)
	wired, retried := tap.stats()

	// A retried publish is the same message with the same Nats-Msg-Id. One
	// stored by n1 before the kill, published again now to the stream's
	// new leader, is recognized as a duplicate and not stored again: the
	// de-duplication state survived the fail-over.
	again := tap.msg(s.id(50))
	if again == nil {
		t.Fatal("message 50 was not seen on the wire")
	}
	var ack *jetstream.PubAck
	retry(t, "publish message 50 again", func(ctx context.Context) (err error) {
		ack, err = f.js.PublishMsg(ctx, &nats.Msg{Subject: again.Subject, Header: again.Header, Data: again.Data})
		return err
	})
	if !ack.Duplicate {
		t.Errorf("message 50 published again after the fail-over: %+v; want a duplicate ack", ack)
	}
	time.Sleep(time.Second) // a late duplicate would show now
	rx.stop(t)
	rx.check(t, 1, total)
	if on := connectedTo(f.bus[1:], f.root); on == "" || on == "n1" {
		t.Errorf("the client's data-plane connection is on %q, want a survivor", on)
	}
	leader := f.checkStream(t, 1, room, uint64(total+warmups))
	t.Logf("%d messages: %d publishes seen on the wire from n2, %d message ids published more than once (stored once); %d sends answered 503 and sent again; stream leader now %s",
		total, wired, retried, s.unavailable(), leader)
}

// The leader of the room stream and of the members bucket is SIGKILLed
// while a sender stays connected to another node and a receiver keeps
// refreshing the room state: the sender's publishes that the dead leader
// never acknowledged are retried (same Nats-Msg-Id) until the new leader
// takes them, and the receiver holds what arrives while the control plane
// answers 503 instead of dropping it. Every message arrives exactly once.
func TestFailoverLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	f := newFixture(t)
	cjs, err := jetstream.New(f.c.InternalConn(t, 1, false))
	if err != nil {
		t.Fatal(err)
	}
	target := streamLeader(f.ctx, cjs, "KV_UNIBUS_members")
	room := f.roomLedBy(t, target)
	admin := dialUntil(f.ctx, t, client.Config{Identity: f.root, Servers: f.c.SeedsHTTP(), NATS: f.c.SeedsNATS()})
	if err := admin.AddMember(f.ctx, room, "bob", client.RoomMember); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	bobc := dialUntil(f.ctx, t, client.Config{Identity: f.bob, Servers: f.c.SeedsHTTP(), NATS: f.c.SeedsNATS(),
		Logger: f.logger("receiver"), RoomCacheTTL: 200 * time.Millisecond})
	rx := &receiver{got: map[int]int{}}
	rx.listen(f.ctx, bobc, room)

	// The sender holds the room's state for the whole test (no control
	// plane needed to send) and is connected to a node that survives.
	var s *sender
	warmups := 0
	for attempt := 0; ; attempt++ {
		cl := dialUntil(f.ctx, t, client.Config{Identity: f.root, Servers: f.c.SeedsHTTP(), NATS: f.c.SeedsNATS(),
			Logger: f.logger("sender"), RoomCacheTTL: time.Hour})
		warmups += rx.ready(t, cl, room) // also connects the sender's data plane
		if on := connectedTo(f.bus, f.root); on != "" && on != target {
			s = &sender{cl: cl, room: room, ids: map[int]string{}}
			break
		} else if attempt == 30 {
			t.Fatalf("the sender never connected to a node other than %s in 30 dials", target)
		}
		cl.Close()
	}
	const total = 300
	sent := s.run(f.ctx, total, 25*time.Millisecond)
	waitUntil(t, "the first 50 messages", 2*time.Minute, func() bool { return rx.count(func(i, _ int) bool { return i >= 1 && i <= 50 }) == 50 })
	survivor := 0
	for i, n := range f.c.Nodes {
		if n.Name == target {
			f.c.Kill(i)
			survivor = (i + 1) % 3
		}
	}
	t.Logf("SIGKILLed %s (leader of the room stream and of KV_UNIBUS_members; not the sender's node)", target)
	if err := within(t, sent, 3*time.Minute); err != nil {
		t.Fatalf("the sender gave up: %v", err)
	}
	f.waitAll(t, rx, survivor, room, total)
	time.Sleep(time.Second) // a late duplicate would show now
	rx.stop(t)
	rx.check(t, 1, total)
	f.checkStream(t, survivor, room, uint64(total+warmups))
}

// fixture is a started cluster with an admin (root) and a member (bob,
// KEM key published), the internal identity's bus-account connection to
// every node, and a JetStream context on n2's. The SDK clients' logs are
// kept and shown if the test fails.
type fixture struct {
	c         *testbin.Cluster
	ctx       context.Context
	root, bob *identity.Identity
	bus       []*nats.Conn
	js        jetstream.JetStream
	logs      lockedLog
}

type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (f *fixture) logger(who string) *slog.Logger {
	return slog.New(slog.NewTextHandler(&f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("client", who)
}

// waitAll waits until messages 1..n have all been received; if they do
// not come, it shows what is missing and where it is.
func (f *fixture) waitAll(t *testing.T, rx *receiver, via int, room string, n int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for rx.count(func(i, k int) bool { return i >= 1 && i <= n && k > 0 }) < n {
		if time.Now().After(deadline) {
			var missing []int
			rx.mu.Lock()
			for i := 1; i <= n; i++ {
				if rx.got[i] == 0 {
					missing = append(missing, i)
				}
			}
			rx.mu.Unlock()
			js, _ := jetstream.New(f.bus[via])
			ctx, cancel := context.WithTimeout(f.ctx, 20*time.Second)
			defer cancel()
			if s, err := js.Stream(ctx, subjects.Stream(room)); err == nil {
				t.Logf("stream: %+v", s.CachedInfo().State)
				for ci := range s.ListConsumers(ctx).Info() {
					leader := ""
					if ci.Cluster != nil {
						leader = ci.Cluster.Leader
					}
					t.Logf("consumer %s on %s: delivered %+v pending %d, created %v", ci.Name, leader, ci.Delivered, ci.NumPending, ci.Created.Format(time.TimeOnly))
				}
			}
			t.Fatalf("messages not received within 3 minutes: %v", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{c: testbin.StartCluster(t, 3), root: newIdentity(t), bob: newIdentity(t)}
	t.Cleanup(func() {
		if t.Failed() {
			f.logs.mu.Lock()
			t.Logf("SDK logs:\n%s", f.logs.b.String())
			f.logs.mu.Unlock()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	f.ctx = ctx
	f.c.AddUser(t, 0, "root", "admin", f.root)
	f.c.AddUser(t, 0, "bob", "member", f.bob)
	f.bus = make([]*nats.Conn, 3)
	for i := range f.bus {
		f.bus[i] = f.c.InternalConn(t, i, true)
	}
	var err error
	if f.js, err = jetstream.New(f.bus[1]); err != nil {
		t.Fatal(err)
	}
	dialUntil(ctx, t, client.Config{Identity: f.bob, Servers: f.c.SeedsHTTP(), NATS: f.c.SeedsNATS()}).Close()
	return f
}

// roomLedBy creates rooms until one's stream is led by node (placement is
// the engine's choice) and returns its id.
func (f *fixture) roomLedBy(t *testing.T, node string) string {
	t.Helper()
	admin := dialUntil(f.ctx, t, client.Config{Identity: f.root, Servers: f.c.SeedsHTTP(), NATS: f.c.SeedsNATS()})
	defer admin.Close()
	for attempt := 0; ; attempt++ {
		r, err := admin.CreateRoom(f.ctx, "failover-"+strconv.Itoa(attempt))
		if err != nil {
			t.Fatal(err)
		}
		leader := streamLeader(f.ctx, f.js, subjects.Stream(r.ID))
		if leader == node {
			return r.ID
		}
		if attempt == 30 {
			t.Fatalf("no room stream led by %s in 30 rooms (last: %q)", node, leader)
		}
	}
}

// checkStream checks, through node i, that the room stream holds want
// messages, each message id once, and returns its leader.
func (f *fixture) checkStream(t *testing.T, i int, room string, want uint64) string {
	t.Helper()
	js, err := jetstream.New(f.bus[i])
	if err != nil {
		t.Fatal(err)
	}
	var s jetstream.Stream
	retry(t, "stream info", func(ctx context.Context) (err error) {
		s, err = js.Stream(ctx, subjects.Stream(room))
		return err
	})
	info := s.CachedInfo()
	ids := map[string]bool{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		var m *jetstream.RawStreamMsg
		retry(t, fmt.Sprintf("stream message %d", seq), func(ctx context.Context) (err error) {
			m, err = s.GetMsg(ctx, seq)
			return err
		})
		id := m.Header.Get("Nats-Msg-Id")
		if ids[id] {
			t.Errorf("message id %s stored twice", id)
		}
		ids[id] = true
	}
	if info.State.Msgs != want {
		t.Errorf("the room stream holds %d messages, want %d", info.State.Msgs, want)
	}
	return info.Cluster.Leader
}

// tap sees every publish to a room on the wire, retries included.
type tap struct {
	mu       sync.Mutex
	attempts map[string]int
	last     map[string]*nats.Msg
}

func (f *fixture) tapRoom(t *testing.T, room string) *tap {
	tp := &tap{attempts: map[string]int{}, last: map[string]*nats.Msg{}}
	sub, err := f.bus[1].Subscribe(subjects.Room(room), func(m *nats.Msg) {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		id := m.Header.Get("Nats-Msg-Id")
		tp.attempts[id]++
		tp.last[id] = m
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	return tp
}

func (tp *tap) msg(id string) *nats.Msg {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.last[id]
}

// stats returns the publishes seen and how many ids were seen more than once.
func (tp *tap) stats() (publishes, retried int) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, n := range tp.attempts {
		publishes += n
		if n > 1 {
			retried++
		}
	}
	return publishes, retried
}

// receiver counts the messages a Listen delivers by their number.
type receiver struct {
	mu      sync.Mutex
	got     map[int]int
	reports []error
	cancel  context.CancelFunc
	done    chan error
}

func (r *receiver) listen(ctx context.Context, cl *client.Client, room string) {
	ctx, r.cancel = context.WithCancel(ctx)
	r.done = make(chan error, 1)
	go func() {
		r.done <- cl.Listen(ctx, room, client.ListenOptions{OnError: func(err error) {
			r.mu.Lock()
			r.reports = append(r.reports, err)
			r.mu.Unlock()
		}}, func(m client.Message) {
			i, err := strconv.Atoi(string(m.Data))
			if err != nil {
				return
			}
			r.mu.Lock()
			r.got[i]++
			r.mu.Unlock()
		})
	}()
}

// ready sends "0" through cl every 200 ms until the receiver has one, and
// returns how many it sent. A Listen delivers only messages stored after
// its consumer exists: what is sent before may never arrive.
func (r *receiver) ready(t *testing.T, cl *client.Client, room string) int {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	r.mu.Lock()
	base := r.got[0]
	r.mu.Unlock()
	for sent := 1; ; sent++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := cl.Send(ctx, room, "", []byte("0"))
		cancel()
		if err != nil {
			t.Fatalf("warm-up send: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
		r.mu.Lock()
		got := r.got[0]
		r.mu.Unlock()
		if got > base {
			return sent
		}
		if time.Now().After(deadline) {
			t.Fatal("the receiver got no warm-up message within 2 minutes")
		}
	}
}

func (r *receiver) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
}

func (r *receiver) count(pred func(i, n int) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := 0
	for i, n := range r.got {
		if pred(i, n) {
			k++
		}
	}
	return k
}

// check: messages lo..hi each received exactly once, nothing reported.
func (r *receiver) check(t *testing.T, lo, hi int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := lo; i <= hi; i++ {
		if r.got[i] != 1 {
			t.Errorf("message %d received %d times", i, r.got[i])
		}
	}
	for _, err := range r.reports {
		t.Errorf("reported by Listen: %v", err)
		if errors.Is(err, client.ErrDuplicate) || errors.Is(err, client.ErrGap) {
			t.Error("a duplicate or a gap: the stream did not hold every message exactly once")
		}
	}
}

// sender sends the numbers 1..n at a steady rate.
type sender struct {
	cl   *client.Client
	room string
	// retryUnavailable: like clientcheck, a send the control plane
	// answered with 503 (nothing was published) is sent again.
	retryUnavailable bool
	mu               sync.Mutex
	ids              map[int]string
	unavail          int
}

func (s *sender) run(ctx context.Context, n int, every time.Duration) chan error {
	done := make(chan error, 1)
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 1; i <= n; i++ {
			for {
				id, err := s.cl.Send(ctx, s.room, "", []byte(strconv.Itoa(i)))
				if err == nil {
					s.mu.Lock()
					s.ids[i] = id
					s.mu.Unlock()
					break
				}
				if !s.retryUnavailable || ctx.Err() != nil || !client.IsCode(err, wire.CodeUnavailable) {
					done <- fmt.Errorf("send %d: %w", i, err)
					return
				}
				s.mu.Lock()
				s.unavail++
				s.mu.Unlock()
				time.Sleep(100 * time.Millisecond)
			}
			<-tick.C
		}
		done <- nil
	}()
	return done
}

func (s *sender) id(i int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids[i]
}

func (s *sender) unavailable() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unavail
}

// retry runs a JetStream request with a 10 s deadline, again until it
// succeeds (up to 2 minutes): a request sent while a leader is being
// elected is never answered, and must not wait on the test's deadline.
func retry(t *testing.T, what string, f func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// within waits for the sender to finish.
func within(t *testing.T, done chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("the sender is stuck: not done within %v", d)
		return nil
	}
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newIdentity(t *testing.T) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// dialUntil dials, retrying while the control plane is not ready.
func dialUntil(ctx context.Context, t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cl, err := client.Dial(ctx, cfg)
		if err == nil {
			t.Cleanup(cl.Close)
			return cl
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// streamLeader waits (up to 30 s) for the stream to have a leader.
func streamLeader(ctx context.Context, js jetstream.JetStream, stream string) string {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := js.Stream(rctx, stream)
		cancel()
		if err == nil && s.CachedInfo().Cluster != nil && s.CachedInfo().Cluster.Leader != "" {
			return s.CachedInfo().Cluster.Leader
		}
		time.Sleep(200 * time.Millisecond)
	}
	return ""
}

// connectedTo returns the node the identity's data-plane connection is
// on, asking through the given nodes (waiting up to a minute for it to
// exist), or "".
func connectedTo(bus []*nats.Conn, id *identity.Identity) string {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for _, nc := range bus {
			if where, err := testbin.Where(nc, id.NKey()); err == nil && len(where) == 1 {
				return where[0]
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ""
}
