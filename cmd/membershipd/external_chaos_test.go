package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/extnats"
	"github.com/unibus/unibus/internal/extnats/extnatstest"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/natsnode"
)

// TestExternalClusterSurvivesKills puts two membershipd processes in front
// of a three-node external nats-server cluster (--store kv --kv-replicas
// 3) and runs clientcheck against both of them and all three servers.
// Under that traffic one membershipd is SIGKILLed — the other keeps
// serving new logins, signed requests and the traffic — and then the
// nats-server node clientcheck's data plane is connected to: every message
// arrives exactly once and the room's stream holds each once. The node and
// the membershipd restart and serve again.
func TestExternalClusterSurvivesKills(t *testing.T) {
	if testing.Short() {
		t.Skip("three nats-server processes, two membershipd processes and clientcheck")
	}
	const n, rate = 2000, 40 // fifty seconds of traffic: the kills come in its first quarter
	bin := harness.Build(t)
	base := t.TempDir()
	creds := filepath.Join(base, "nats.creds")
	keys, err := extnats.WriteNewCreds(creds)
	if err != nil {
		t.Fatal(err)
	}
	cl := extnatstest.Start(t, 3, extnatstest.Config{Unibus: extnatstest.Unibus(keys)})
	seeds := strings.Split(cl.URLs(), ",")
	ports := harness.FreePorts(t, []string{"127.0.0.1"}, 2)
	a := newExtMembershipd(t, base, "a", ports[0], cl.URLs(), creds, true)
	b := newExtMembershipd(t, base, "b", ports[1], cl.URLs(), creds, false)
	var ccErr harness.LockedBuffer // clientcheck's stderr
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, m := range []*extMembershipd{a, b} {
			for i, p := range m.runs {
				t.Logf("--- membershipd %s, run %d (last lines):\n%s", m.name, i+1, lastLines(p.Output(), 60))
			}
		}
		for _, s := range cl.Servers {
			t.Logf("--- nats-server %s (last lines, route retries left out):\n%s", s.Name, lastLines(withoutRouteRetries(s.Output()), 60))
		}
		t.Logf("--- clientcheck stderr:\n%s", ccErr.String())
	})
	a.start(t, bin)
	b.start(t, bin)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	adminID, err := identity.Load(filepath.Join(a.dir, "local_files", "admin.id"))
	if err != nil {
		t.Fatal(err)
	}
	admin := dialExt(ctx, t, adminID, []string{a.url(), b.url()}, seeds)
	checker := newID(t, base, "checker")
	if _, err := admin.AddUser(ctx, "checker", checker.SignPub().String(), client.RoleMember); err != nil {
		t.Fatal(err)
	}
	bus := busMessages(t, cl.URLs(), keys)
	sys := systemConn(t, cl.URLs(), keys)
	before, err := bus.stored()
	if err != nil {
		t.Fatal(err)
	}

	// clientcheck's first control-plane seed is a: the membershipd killed.
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Minute)
	defer ccancel()
	cmd := harness.Command(cctx, t, base, nil, "clientcheck",
		"-server", a.url()+","+b.url(), "-nats", cl.URLs(), "-identity", filepath.Join(base, "checker.id"),
		"-n", strconv.Itoa(n), "-rate", strconv.Itoa(rate), "-drain", "120s", "-json")
	var out harness.LockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &ccErr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var waited error
	ended := false
	running := func() bool {
		if !ended {
			select {
			case waited = <-done:
				ended = true
			default:
			}
		}
		return !ended
	}
	// traffic waits until k more messages than at is stored, while
	// clientcheck still runs.
	traffic := func(at uint64, k uint64, what string) uint64 {
		t.Helper()
		var now uint64
		harness.EventuallyNoError(t, 3*time.Minute, func() error {
			if !running() {
				t.Fatalf("clientcheck ended (%v) before %s:\n%s\n%s", waited, what, out.String(), ccErr.String())
			}
			var err error
			if now, err = bus.stored(); err == nil && now < at+k {
				err = fmt.Errorf("%d of %d messages stored", now-min(now, at), k)
			}
			return err
		}, "%s", what)
		return now
	}
	at := traffic(before, 100, "clientcheck's first hundred messages")

	// 1. membershipd a SIGKILLed: b serves signed requests, new logins and
	// the traffic.
	a.bus.Kill()
	t.Logf("SIGKILLed membershipd a at %v (%d messages stored)", time.Now().Format(time.TimeOnly), at-before)
	if code, h := harness.Health(b.url()); code != http.StatusOK {
		t.Fatalf("membershipd b /healthz with a killed: %d %+v", code, h)
	}
	throughB := dialExt(ctx, t, adminID, []string{b.url()}, seeds)
	carolID, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := throughB.AddUser(ctx, "carol", carolID.SignPub().String(), client.RoleMember); err != nil {
		t.Fatalf("add a user through b with a killed: %v", err)
	}
	carol := dialExt(ctx, t, carolID, []string{b.url()}, seeds) // publishes its KEM key through b
	room, err := carol.CreateRoom(ctx, "carols")
	if err != nil {
		t.Fatalf("create a room through b with a killed: %v", err)
	}
	// Carol's first data-plane login is answered by b's callout alone, and
	// b's relay stores what she sends.
	if _, err := carol.Send(ctx, room.ID, "", []byte("hello")); err != nil {
		t.Fatalf("a new member's first send with a killed: %v", err)
	}
	at = traffic(at, 2*rate, "clientcheck's traffic through b alone")

	// 2. The nats-server node clientcheck's data plane is on SIGKILLed.
	victim := cl.Servers[0]
	if where, err := serversOf(sys, checker.NKey(), len(cl.Servers)); err != nil || len(where) != 1 {
		t.Logf("clientcheck's data-plane connection is on %v (%v): killing %s", where, err, victim.Name)
	} else {
		for _, s := range cl.Servers {
			if s.Name == where[0] {
				victim = s
			}
		}
	}
	if now, err := bus.stored(); err == nil {
		at = now
	}
	if !running() || at-before >= n {
		t.Fatalf("clientcheck had sent everything before the nats-server kill (%d stored): too few messages for this machine's pace", at-before)
	}
	victim.Kill()
	t.Logf("SIGKILLed nats-server %s at %v (%d messages stored)", victim.Name, time.Now().Format(time.TimeOnly), at-before)
	traffic(at, 2*rate, "clientcheck's traffic with "+victim.Name+" down")

	// 3. Every message exactly once.
	if !ended {
		select {
		case waited = <-done:
			ended = true
		case <-ctx.Done():
			t.Fatalf("clientcheck did not end:\n%s", ccErr.String())
		}
	}
	var rep struct {
		Room                                         string
		Sent, Received, Lost, Duplicated, Unexpected int
		SendErrors                                   int           `json:"send_errors"`
		LongestGap                                   time.Duration `json:"longest_gap_ns"`
		GapAfter                                     int           `json:"gap_after_seq"`
		Elapsed                                      time.Duration `json:"elapsed_ns"`
	}
	if jerr := json.Unmarshal([]byte(out.String()), &rep); jerr != nil {
		t.Fatalf("clientcheck output %q (%v): %v\n%s", out.String(), waited, jerr, ccErr.String())
	}
	t.Logf("clientcheck: sent %d received %d lost %d duplicated %d unexpected %d, longest gap %v (after #%d), %d send retries, %v",
		rep.Sent, rep.Received, rep.Lost, rep.Duplicated, rep.Unexpected, rep.LongestGap.Round(time.Millisecond), rep.GapAfter,
		rep.SendErrors, rep.Elapsed.Round(time.Millisecond))
	if waited != nil || rep.Sent != n || rep.Lost != 0 || rep.Duplicated != 0 || rep.Unexpected != 0 {
		t.Errorf("clientcheck across a membershipd and a nats-server killed: %v, %+v\n%s", waited, rep, ccErr.String())
	}
	if r := reportedLines(ccErr.String()); r != "" {
		t.Logf("the SDK reported (not delivered):\n%s", r)
	}
	// The receiver drops a duplicate the stream holds: the stream must hold
	// each message once.
	checkRoom := func() client.Room {
		rooms, err := dialExt(ctx, t, checker, []string{b.url()}, seeds).ListRooms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rooms {
			if r.ID == rep.Room {
				return r
			}
		}
		t.Fatalf("clientcheck's room %s is not among checker's rooms %+v", rep.Room, rooms)
		return client.Room{}
	}()
	if k, err := roomMessages(ctx, bus.js, checkRoom); err != nil || k != n {
		t.Errorf("clientcheck's room holds %d messages (%v), want %d", k, err, n)
	}

	// 4. The node and membershipd a restart and serve: a member logged in
	// through the restarted node alone reads the room through a alone.
	victim.Start(t)
	a.start(t, bin)
	harness.EventuallyNoError(t, 2*time.Minute, func() error {
		if code, h := harness.Health(a.url()); code != http.StatusOK {
			return fmt.Errorf("/healthz %d %+v", code, h)
		}
		return nil
	}, "restarted membershipd a healthy")
	users, err := dialExt(ctx, t, adminID, []string{a.url()}, seeds).ListUsers(ctx)
	if err != nil || !hasHandle(users, "carol") {
		t.Errorf("restarted a lists %+v (%v): want carol, added while it was down", users, err)
	}
	harness.EventuallyNoError(t, 3*time.Minute, func() error {
		return readAll(ctx, checker, a.url(), victim.URL(), rep.Room, n)
	}, "checker reads the room through restarted a and restarted %s", victim.Name)
}

// extMembershipd is one membershipd process in front of the external
// cluster; it keeps its directory and HTTP port across restarts.
type extMembershipd struct {
	name, dir string
	port      int
	args      []string
	bus       *harness.Bus       // the current process
	runs      []*harness.Process // every process started, for the logs
}

func newExtMembershipd(t *testing.T, base, name string, port int, natsURL, creds string, bootstrap bool) *extMembershipd {
	t.Helper()
	m := &extMembershipd{name: name, dir: filepath.Join(base, name), port: port}
	m.args = []string{"--store", "kv", "--kv-replicas", "3", "--nats-url", natsURL, "--nats-creds", creds,
		"--http-port", strconv.Itoa(port), "--nats-port", "0", "--node-name", name, "--log-format", "json"}
	if !bootstrap {
		m.args = append(m.args, "--no-bootstrap")
	}
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *extMembershipd) url() string { return fmt.Sprintf("http://127.0.0.1:%d", m.port) }

// start (re)starts the process and waits until it is ready; it retries
// while the cluster is too young to answer membershipd's checks at start.
func (m *extMembershipd) start(t *testing.T, bin string) {
	t.Helper()
	attempt := 0
	harness.EventuallyNoError(t, 4*time.Minute, func() error {
		attempt++
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		p, err := harness.Start(ctx, filepath.Join(bin, "membershipd"), m.dir, nil, m.args...)
		if err != nil {
			var nr *harness.NotReadyError
			if errors.As(err, &nr) {
				err = fmt.Errorf("not ready (exited: %v): %s", nr.Exited, lastLines(nr.Output, 15))
			}
			t.Logf("membershipd %s, start attempt %d: %v", m.name, attempt, err)
			return err
		}
		m.bus = &harness.Bus{Process: p}
		m.runs = append(m.runs, p)
		b := m.bus
		t.Cleanup(func() { b.Stop(t) })
		return nil
	}, "membershipd %s in front of the cluster", m.name)
}

// dialExt dials as id through servers and the NATS seeds, until the end
// of the test.
func dialExt(ctx context.Context, t *testing.T, id *identity.Identity, servers, seeds []string) *client.Client {
	t.Helper()
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, err := client.Dial(dctx, client.Config{Identity: id, Servers: servers, NATS: seeds})
	if err != nil {
		t.Fatalf("dial %v: %v", servers, err)
	}
	t.Cleanup(c.Close)
	return c
}

// busCounter counts the messages stored in the bus account's streams,
// through a connection of the internal identity (admitted by any
// membershipd's callout).
type busCounter struct{ js jetstream.JetStream }

func busMessages(t *testing.T, urls string, keys *extnats.Keys) *busCounter {
	t.Helper()
	nc, err := nats.Connect(urls, nats.Nkey(keys.Internal.NKey(), keys.Internal.SignNonce), natsnode.BusLogin(),
		nats.Name("test-internal"), nats.Timeout(10*time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		t.Fatalf("internal login to the bus account: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &busCounter{js: js}
}

// stored is how many messages the bus account's streams hold.
func (c *busCounter) stored() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n uint64
	l := c.js.ListStreams(ctx)
	for info := range l.Info() {
		n += info.State.Msgs
	}
	return n, l.Err()
}

// roomMessages is how many messages of room its stream holds.
func roomMessages(ctx context.Context, js jetstream.JetStream, room client.Room) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	name, filter := roomStream(room)
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, k := range info.State.Subjects {
		n += k
	}
	return n, nil
}

// systemConn logs membershipd's system user in (an auth user of the
// callout: no membershipd needed).
func systemConn(t *testing.T, urls string, keys *extnats.Keys) *nats.Conn {
	t.Helper()
	pub, err := keys.SystemUser.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(urls, nats.Nkey(pub, keys.SystemUser.Sign), nats.Name("test-system"),
		nats.Timeout(10*time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		t.Fatalf("system user login: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// serversOf returns the names of the servers that hold a live member
// connection of nkey, asking every server (there are servers) through the
// system user's connection.
func serversOf(sys *nats.Conn, nkey string, servers int) ([]string, error) {
	req := map[string]any{"acc": natsnode.MembersAccount, "user": nkey, "auth": true, "state": 0}
	return harness.WhereConnected(sys, "$SYS.REQ.SERVER.PING.CONNZ", req, nkey, servers, 5*time.Second)
}

// readAll dials as id through the control plane server and the data
// plane seed only, and reads clientcheck's messages 1..n in room from the
// start: each once, nothing reported.
func readAll(ctx context.Context, id *identity.Identity, server, seed, room string, n int) error {
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, err := client.Dial(dctx, client.Config{Identity: id, Servers: []string{server}, NATS: []string{seed}})
	if err != nil {
		return err
	}
	defer c.Close()
	var mu sync.Mutex
	seen := map[string]int{}
	var reported []error
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	listened := make(chan error, 1)
	go func() {
		listened <- c.Listen(lctx, room, client.ListenOptions{Topic: "check", FromStart: true,
			OnError: func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }},
			func(m client.Message) { mu.Lock(); seen[string(m.Data)]++; mu.Unlock() })
	}()
	wait, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	err = harness.Wait(wait, func() error {
		select {
		case err := <-listened:
			listened <- err
			return nil
		default:
		}
		mu.Lock()
		defer mu.Unlock()
		if len(seen) < n {
			return fmt.Errorf("%d of %d messages read", len(seen), n)
		}
		return nil
	})
	stop()
	lerr := <-listened
	mu.Lock()
	defer mu.Unlock()
	if err != nil || lerr != nil {
		return errors.Join(err, lerr)
	}
	for k, v := range seen {
		if i, err := strconv.Atoi(k); err != nil || i < 1 || i > n || v != 1 {
			return fmt.Errorf("message %q read %d times", k, v)
		}
	}
	if len(seen) != n || len(reported) > 0 {
		return fmt.Errorf("%d of %d messages read, reported: %v", len(seen), n, reported)
	}
	return nil
}

func hasHandle(users []client.User, handle string) bool {
	for _, u := range users {
		if u.Handle == handle {
			return true
		}
	}
	return false
}

// reportedLines are clientcheck's lines about messages the SDK reported
// instead of delivering.
func reportedLines(stderr string) string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, "reported:") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// withoutRouteRetries drops the lines of a nats-server's log that say it
// is trying to reach a route that is down.
func withoutRouteRetries(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "Error trying to connect to route") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
