package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
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
	"github.com/unibus/unibus/wire"
)

// The fail-over tests run a real three-node R3 cluster. Every room's
// messages are in the one shared stream, UNIBUS_MSGS (docs/DESIGN.md,
// "Rooms are subjects"), so the node a test kills is that stream's leader.

// One SDK client with every node of the cluster as seeds, on both planes,
// sends a steady stream of messages to a room and receives them, while the
// node that is at once its data-plane server, its first control-plane
// seed and the shared stream's leader is SIGKILLed. Every message arrives
// exactly once and is stored once; a message stored again with its
// de-duplication id after the fail-over (what a relay does with the SDK's
// retry) is recognized as a duplicate by the new leader; control-plane calls — the
// room state every send needs, room info, adding a member — are answered
// by a surviving node; the data-plane connection moves to one.
func TestFailoverAcrossSeeds(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	f := newFixture(t)
	room := f.room(t, "failover")
	k := f.leaderOf(t, f.bus, subjects.SharedStream)
	target, surv := f.c.Nodes[k].Name, (k+1)%3
	tap := f.tapRoom(t, surv, room)
	// Node k is the first control-plane seed.
	var servers []string
	for i := range f.c.Nodes {
		servers = append(servers, f.c.Nodes[(k+i)%3].HTTPURL())
	}
	cfg := client.Config{Identity: f.root, Servers: servers, NATS: f.c.SeedsNATS(), Logger: f.logger("client"),
		RoomCacheTTL: 300 * time.Millisecond} // sends keep asking the control plane

	// The client, dialled until its data-plane connection lands on node k
	// (nats.go shuffles the seeds).
	rx := &tally{got: map[int]int{}}
	var cl *client.Client
	for attempt := 0; ; attempt++ {
		cl = dialUntil(f.ctx, t, cfg)
		rx.listen(f.ctx, cl, room)
		if on := dataPlaneServer(t, cl); on == target {
			break
		} else if attempt == 30 {
			t.Fatalf("the client never connected to %s in 30 dials (last: %q)", target, on)
		}
		rx.stop(t)
		cl.Close()
	}
	// Listen delivers what is stored once its listener exists.
	f.waitListener(t, surv, room)

	const total = 300
	s := &sender{cl: cl, room: room, ids: map[int]string{}, retryUnavailable: true}
	s.run(f.ctx, total, 40*time.Millisecond)
	rx.waitFirst(t, s, 50)
	killed := time.Now()
	f.c.Kill(k)
	t.Logf("SIGKILLed %s (the client's data-plane node, first control-plane seed, leader of %s)", target, subjects.SharedStream)

	// Control-plane calls move to a surviving node.
	var info client.RoomInfo
	harness.EventuallyNoError(t, 2*time.Minute, func() error {
		err := cl.AddMember(f.ctx, room, "bob", client.RoomMember)
		if err != nil && !client.IsCode(err, wire.CodeUnavailable) && !client.IsCode(err, wire.CodeAlreadyMember) {
			t.Fatalf("add member with %s down: %v", target, err)
		}
		if err != nil {
			return err
		}
		info, err = cl.RoomInfo(f.ctx, room)
		return err
	}, "room info and member add through a survivor")
	t.Logf("control plane answered through a survivor %v after the kill", time.Since(killed).Round(time.Millisecond))
	if len(info.Members) != 2 {
		t.Errorf("room members after the add: %+v", info.Members)
	}
	if err := s.wait(t, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	f.waitAll(t, rx, surv, room, total)
	wired, retried := tap.stats()

	// A retried publish is the same message, which the relay stores with
	// the same de-duplication id (Nats-Msg-Id). One stored before the
	// kill, published again now to the stream's new leader, is recognized
	// as a duplicate and not stored again: the de-duplication state
	// survived the fail-over.
	again := tap.msg(s.id(50))
	if again == nil {
		t.Fatal("message 50 was not seen on the wire")
	}
	js, err := jetstream.New(f.bus[surv])
	if err != nil {
		t.Fatal(err)
	}
	var ack *jetstream.PubAck
	retry(t, "publish message 50 again", func(ctx context.Context) (err error) {
		ack, err = js.PublishMsg(ctx, &nats.Msg{Subject: again.Subject, Header: again.Header, Data: again.Data})
		return err
	})
	if !ack.Duplicate {
		t.Errorf("message 50 published again after the fail-over: %+v; want a duplicate ack", ack)
	}
	time.Sleep(time.Second) // nothing more should arrive: a late duplicate would show now
	rx.stop(t)
	rx.check(t, 1, total)
	if on := dataPlaneServer(t, cl); on == target {
		t.Errorf("the client's data-plane connection is on %q, want a survivor", on)
	}
	leader := f.checkStream(t, surv, room, total)
	t.Logf("%d messages: %d relayed copies seen on the wire, %d message ids relayed more than once (stored once); %d sends answered 503 and sent again; %s leader now %s",
		total, wired, retried, s.unavailable(), subjects.SharedStream, leader)
}

// The leader of the shared stream and of the members bucket is SIGKILLed
// while a sender stays connected to another node and a receiver keeps
// refreshing the room state: the sender's publishes that the dead leader
// never acknowledged are retried (same message id) until the new leader
// takes them, and the receiver holds what arrives while the control plane
// answers 503 instead of dropping it. Every message arrives exactly once.
func TestFailoverLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	f := newFixture(t)
	room := f.room(t, "leader-loss")
	k := f.oneLeader(t)
	target, survivor := f.c.Nodes[k].Name, (k+1)%3
	admin := dialUntil(f.ctx, t, client.Config{Identity: f.root, Servers: f.c.SeedsHTTP(), NATS: f.c.SeedsNATS()})
	if err := admin.AddMember(f.ctx, room, "bob", client.RoomMember); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	bobc := dialUntil(f.ctx, t, client.Config{Identity: f.bob, Servers: f.c.SeedsHTTP(), NATS: f.c.SeedsNATS(),
		Logger: f.logger("receiver"), RoomCacheTTL: 200 * time.Millisecond})
	rx := &tally{got: map[int]int{}}
	rx.listen(f.ctx, bobc, room)
	f.waitListener(t, survivor, room)

	// The sender holds the room's state for the whole test (no control
	// plane needed to send) and is connected to a node that survives. A
	// first message ("0") connects its data plane.
	var s *sender
	warmups := 0
	for attempt := 0; ; attempt++ {
		cl := dialUntil(f.ctx, t, client.Config{Identity: f.root, Servers: f.c.SeedsHTTP(), NATS: f.c.SeedsNATS(),
			Logger: f.logger("sender"), RoomCacheTTL: time.Hour})
		retry(t, "the sender's first message", func(ctx context.Context) error {
			_, err := cl.Send(ctx, room, "", []byte("0"))
			return err
		})
		warmups++
		if on := dataPlaneServer(t, cl); on != target {
			s = &sender{cl: cl, room: room, ids: map[int]string{}}
			break
		} else if attempt == 30 {
			t.Fatalf("the sender never connected to a node other than %s in 30 dials", target)
		}
		cl.Close()
	}
	const total = 300
	s.run(f.ctx, total, 25*time.Millisecond)
	rx.waitFirst(t, s, 50)
	f.c.Kill(k)
	t.Logf("SIGKILLed %s (leader of %s and of KV_UNIBUS_members; not the sender's node)", target, subjects.SharedStream)
	if err := s.wait(t, 3*time.Minute); err != nil {
		t.Fatalf("the sender gave up: %v", err)
	}
	f.waitAll(t, rx, survivor, room, total)
	time.Sleep(time.Second) // nothing more should arrive: a late duplicate would show now
	rx.stop(t)
	rx.check(t, 1, total)
	f.checkStream(t, survivor, room, uint64(total+warmups))
}

// fixture is a started cluster with an admin (root) and a member (bob,
// KEM key published), and the internal identity's bus-account connection
// to every node. The SDK clients' logs are kept and shown if the test
// fails.
type fixture struct {
	c         *harness.Cluster
	ctx       context.Context
	root, bob *identity.Identity
	bus       []*nats.Conn
	logs      harness.LockedBuffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{c: harness.StartCluster(t, 3), root: newIdentity(t), bob: newIdentity(t)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("SDK logs:\n%s", f.logs.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	f.ctx = ctx
	f.c.AddUser(t, 0, "root", "admin", f.root)
	f.c.AddUser(t, 0, "bob", "member", f.bob)
	f.bus = make([]*nats.Conn, 3)
	for i := range f.bus {
		f.bus[i] = f.c.InternalConn(t, i, natsnode.BusAccount)
	}
	dialUntil(ctx, t, client.Config{Identity: f.bob, Servers: f.c.SeedsHTTP(), NATS: f.c.SeedsNATS()}).Close()
	return f
}

func (f *fixture) logger(who string) *slog.Logger {
	return slog.New(slog.NewTextHandler(&f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("client", who)
}

// room creates a room of root's, in the shared stream, and returns its id.
func (f *fixture) room(t *testing.T, name string) string {
	t.Helper()
	admin := dialUntil(f.ctx, t, client.Config{Identity: f.root, Servers: f.c.SeedsHTTP(), NATS: f.c.SeedsNATS()})
	defer admin.Close()
	r, err := admin.CreateRoom(f.ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Shared {
		t.Fatalf("room %s is not in the shared stream", name)
	}
	return r.ID
}

// leaderOf returns the index of the node that leads the stream, asking
// through the given connections (one per node, in node order).
func (f *fixture) leaderOf(t *testing.T, conns []*nats.Conn, stream string) int {
	t.Helper()
	var k int
	harness.EventuallyNoError(t, time.Minute, func() error {
		for _, nc := range conns {
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			if leader := streamLeader(f.ctx, js, stream); leader != "" {
				for i, n := range f.c.Nodes {
					if n.Name == leader {
						k = i
						return nil
					}
				}
				return fmt.Errorf("leader %q is not a node of the cluster", leader)
			}
		}
		return errors.New("no leader")
	}, "the leader of %s", stream)
	return k
}

// oneLeader makes one node lead both the shared stream and the members
// bucket, and returns its index. Leaders cannot be moved through the
// JetStream API (membershipd disables stepdowns), so it restarts the
// bucket's leader until the bucket's new leader is the stream's: each
// restart moves it to one of the two other nodes.
func (f *fixture) oneLeader(t *testing.T) int {
	t.Helper()
	control := make([]*nats.Conn, 3)
	for i := range control {
		control[i] = f.c.InternalConn(t, i, "")
	}
	for attempt := 0; ; attempt++ {
		stream, bucket := f.leaderOf(t, f.bus, subjects.SharedStream), f.leaderOf(t, control, "KV_UNIBUS_members")
		if stream == bucket {
			return stream
		}
		if attempt == 8 {
			t.Fatalf("%s never led both %s and KV_UNIBUS_members in 8 restarts", f.c.Nodes[stream].Name, subjects.SharedStream)
		}
		t.Logf("%s leads %s, %s the members bucket: restarting %s", f.c.Nodes[stream].Name, subjects.SharedStream, f.c.Nodes[bucket].Name, f.c.Nodes[bucket].Name)
		f.c.Nodes[bucket].Bus.Stop(t)
		f.c.Start(t, bucket)
		f.c.WaitHealthy(t, 0, 1, 2)
	}
}

// waitListener waits, through node i, until the room has a listener.
func (f *fixture) waitListener(t *testing.T, i int, room string) {
	t.Helper()
	js, err := jetstream.New(f.bus[i])
	if err != nil {
		t.Fatal(err)
	}
	harness.EventuallyNoError(t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
		defer cancel()
		ls, err := listeners(ctx, js, room)
		if err == nil && len(ls) == 0 {
			err = errors.New("none yet")
		}
		return err
	}, "a listener on room %s", room)
}

// waitAll waits until messages 1..n have all been received; if they do
// not come, it shows what is missing and where it is (through node via).
func (f *fixture) waitAll(t *testing.T, rx *tally, via int, room string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 3*time.Minute)
	defer cancel()
	err := harness.Wait(ctx, func() error {
		if rx.count(func(i, k int) bool { return i >= 1 && i <= n && k > 0 }) < n {
			return errors.New("not yet")
		}
		return nil
	})
	if err == nil {
		return
	}
	var missing []int
	rx.mu.Lock()
	for i := 1; i <= n; i++ {
		if rx.got[i] == 0 {
			missing = append(missing, i)
		}
	}
	rx.mu.Unlock()
	js, _ := jetstream.New(f.bus[via])
	dctx, dcancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer dcancel()
	if s, err := js.Stream(dctx, subjects.SharedStream); err == nil {
		if info, err := s.Info(dctx, jetstream.WithSubjectFilter(subjects.SharedRoom(room))); err == nil {
			t.Logf("%s: %+v", subjects.SharedStream, info.State)
		}
	}
	if ls, err := listeners(dctx, js, room); err == nil {
		for _, ci := range ls {
			on := ""
			if ci.Cluster != nil {
				on = ci.Cluster.Leader
			}
			t.Logf("listener %s on %s: delivered %+v pending %d, created %v", ci.Name, on, ci.Delivered, ci.NumPending, ci.Created.Format(time.TimeOnly))
		}
	}
	t.Fatalf("messages not received within 3 minutes: %v", missing)
}

// checkStream checks, through node i, that the shared stream holds want
// messages of the room, each message id once, and returns its leader.
func (f *fixture) checkStream(t *testing.T, i int, room string, want uint64) string {
	t.Helper()
	js, err := jetstream.New(f.bus[i])
	if err != nil {
		t.Fatal(err)
	}
	filter := subjects.SharedRoom(room)
	var s jetstream.Stream
	var info *jetstream.StreamInfo
	retry(t, "stream info", func(ctx context.Context) (err error) {
		if s, err = js.Stream(ctx, subjects.SharedStream); err != nil {
			return err
		}
		info, err = s.Info(ctx, jetstream.WithSubjectFilter(filter))
		return err
	})
	var stored uint64
	for _, n := range info.State.Subjects {
		stored += n
	}
	ids := map[string]bool{}
	for seq, end := uint64(1), false; !end; {
		retry(t, fmt.Sprintf("the room's message from %d", seq), func(ctx context.Context) error {
			m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				end = true
				return nil
			}
			if err != nil {
				return err
			}
			id := m.Header.Get(e2e.HdrMsgID)
			if ids[id] {
				t.Errorf("message id %s stored twice", id)
			}
			ids[id] = true
			seq = m.Sequence + 1
			return nil
		})
	}
	if stored != want || uint64(len(ids)) != want {
		t.Errorf("the shared stream holds %d messages of the room (%d read), want %d", stored, len(ids), want)
	}
	return info.Cluster.Leader
}

// tap sees every copy the relays store for a room, retries included.
type tap struct {
	mu       sync.Mutex
	attempts map[string]int
	last     map[string]*nats.Msg
}

// tapRoom subscribes, as the internal identity on node i, to the room's
// stored subjects in the shared stream.
func (f *fixture) tapRoom(t *testing.T, i int, room string) *tap {
	tp := &tap{attempts: map[string]int{}, last: map[string]*nats.Msg{}}
	sub, err := f.bus[i].Subscribe(subjects.SharedRoom(room), func(m *nats.Msg) {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		id := m.Header.Get(e2e.HdrMsgID)
		tp.attempts[id]++
		tp.last[id] = m
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.bus[i].Flush(); err != nil {
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

// stats returns the copies seen and how many ids were seen more than once.
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

// tally counts the messages a Listen delivers by their number.
type tally struct {
	mu      sync.Mutex
	got     map[int]int
	reports []error
	cancel  context.CancelFunc
	done    chan error
}

func (r *tally) listen(ctx context.Context, cl *client.Client, room string) {
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

func (r *tally) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
}

// waitFirst waits until messages 1..n have been received, failing at
// once if the sender stops.
func (r *tally) waitFirst(t *testing.T, s *sender, n int) {
	t.Helper()
	harness.EventuallyNoError(t, 2*time.Minute, func() error {
		if err := s.failed(); err != nil {
			t.Fatalf("the sender stopped: %v", err)
		}
		if got := r.count(func(i, _ int) bool { return i >= 1 && i <= n }); got < n {
			return fmt.Errorf("%d received", got)
		}
		return nil
	}, "the first %d messages", n)
}

func (r *tally) count(pred func(i, n int) bool) int {
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
func (r *tally) check(t *testing.T, lo, hi int) {
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
	done             chan struct{} // closed when run ends, with err set
	err              error
}

// run sends in the background; wait and failed tell how it ended.
func (s *sender) run(ctx context.Context, n int, every time.Duration) {
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
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
					s.err = fmt.Errorf("send %d: %w", i, err)
					return
				}
				s.mu.Lock()
				s.unavail++
				s.mu.Unlock()
				time.Sleep(100 * time.Millisecond) // clientcheck's pause before sending again
			}
			<-tick.C
		}
	}()
}

// failed returns the error the sender stopped on, if it has.
func (s *sender) failed() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// wait waits for the sender to finish, and fails the test if it has not
// within d.
func (s *sender) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(d):
		t.Fatalf("the sender is stuck: not done within %v", d)
		return nil
	}
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

// retry runs a request with a 10 s deadline, again until it succeeds (up
// to 2 minutes): a JetStream request sent while a leader is being elected
// is never answered, and must not wait on the test's deadline.
func retry(t *testing.T, what string, f func(ctx context.Context) error) {
	t.Helper()
	harness.EventuallyNoError(t, 2*time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return f(ctx)
	}, "%s", what)
}

// dialUntil dials, retrying while the control plane is not ready; the
// client is closed at the end of the test.
func dialUntil(ctx context.Context, t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	var cl *client.Client
	harness.EventuallyNoError(t, 2*time.Minute, func() (err error) {
		cl, err = client.Dial(ctx, cfg)
		return err
	}, "dial")
	t.Cleanup(cl.Close)
	return cl
}

// streamLeader waits (up to 30 s) for the stream to have a leader, and
// returns it ("" if it has none by then).
func streamLeader(ctx context.Context, js jetstream.JetStream, stream string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	leader := ""
	harness.Wait(ctx, func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := js.Stream(rctx, stream)
		if err != nil {
			return err
		}
		if c := s.CachedInfo().Cluster; c != nil && c.Leader != "" {
			leader = c.Leader
			return nil
		}
		return errors.New("no leader")
	})
	return leader
}

// dataPlaneServer waits (up to a minute) until the client has a
// data-plane connection, and returns the node it is on.
func dataPlaneServer(t *testing.T, cl *client.Client) string {
	t.Helper()
	var on string
	harness.Eventually(t, time.Minute, func() bool {
		on = client.DataPlaneServer(cl)
		return on != ""
	}, "a data-plane connection")
	return on
}
