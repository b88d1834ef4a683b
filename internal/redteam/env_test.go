package redteam

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/extnats/extnatstest"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/testpki"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// NATSCLIVersion is the version of the official nats CLI that
// .ci/install-tools installs and docs/SECURITY-ATTACKS.md was made with.
const NATSCLIVersion = "v0.5.1"

// dedicatedMaxBytes is the byte limit of bob's room with a stream of its
// own (room BD).
const dedicatedMaxBytes = 1 << 20

// tools are the external peers.
type tools struct{ nats, curl, openssl string }

// lookTools finds the tools, or fails the test with what to do (skips it
// when UNIBUS_REDTEAM_OPTIONAL=1).
func lookTools(t *testing.T) tools {
	t.Helper()
	var missing []string
	find := func(name string, extra ...string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, dir := range extra {
			p := filepath.Join(dir, name)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return p
			}
		}
		missing = append(missing, name)
		return ""
	}
	var goBins []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		goBins = append(goBins, gobin)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, p := range filepath.SplitList(strings.TrimSpace(string(out))) {
			goBins = append(goBins, filepath.Join(p, "bin"))
		}
	}
	tl := tools{nats: find("nats", goBins...), curl: find("curl"), openssl: find("openssl")}
	if len(missing) > 0 {
		msg := fmt.Sprintf("redteam: %s not installed: run .ci/install-tools (nats %s via go install, curl and openssl via apt-get)",
			strings.Join(missing, ", "), NATSCLIVersion)
		if os.Getenv("UNIBUS_REDTEAM_OPTIONAL") == "1" {
			t.Skip(msg + "; skipped because UNIBUS_REDTEAM_OPTIONAL=1")
		}
		t.Fatal(msg + " (or set UNIBUS_REDTEAM_OPTIONAL=1 where the suite cannot run)")
	}
	return tl
}

// user is an identity file of the test, and what the tools need of it.
type user struct {
	name   string
	idFile string // a NATS user seed file, mode 0600: the tools get its path, never its content
	id     *identity.Identity
	hex    string
}

// engine is the data plane membershipd runs on in a run of the suite.
type engine string

const (
	// embeddedEngine: membershipd's own NATS node (TestRedTeam).
	embeddedEngine engine = "embedded"
	// externalEngine: membershipd in front of a nats-server process as
	// its auth callout, --store kv --nats-url --nats-creds --nats-ca
	// (TestRedTeamExternal).
	externalEngine engine = "external"
)

// env is one membershipd under attack, with its users, rooms and
// certificate authorities.
type env struct {
	t      *testing.T
	tl     tools
	engine engine
	dir    string
	bus    *harness.Bus
	ca     *testpki.CA
	pool   *tls.Config // trusts the deployment's CA
	pki    string      // directory of certificates and keys
	caCrt  string      // the CA that signed the server certificate
	other  string      // another CA's certificate
	home   string      // HOME of the tools (no user configuration, no contexts)
	cert   string      // the server certificate and key (a second membershipd reuses them)
	key    string
	// The external nats-server's certificate and key (externalEngine):
	// from the same CA as cert, for 127.0.0.1.
	natsCert, natsKey string
	ext               *extnatstest.Server // the nats-server under bus (externalEngine)

	deployment string // the deployment id /healthz announces
	tag        string // wire.DeploymentTag(deployment): every request signature carries it

	admin, internal                  *user
	alice, bob, dave, mallory, trudy *user
	ghost                            *user // a keypair that was never registered
	roomA, roomB, roomBD, roomC      string
	dedicated                        map[string]bool // rooms with a stream of their own
	truth                            jetstream.JetStream
	control                          jetstream.JetStream
	norm                             *normalizer
	httpc                            *http.Client
}

// setup starts membershipd (--store kv, --bus-auth enforce, TLS) on the
// engine eng (startBus) and makes, with the unibus CLI:
//
//   - room A (shared stream): alice (owner) and dave (member);
//   - room B (shared stream): bob (owner) and mallory (member);
//   - room BD (a stream of its own, max_bytes set): bob (owner) and
//     mallory (member);
//   - room C (shared stream): bob (owner) and trudy (member);
//
// with one message of its owner's in each, and a keypair that was never
// registered (ghost).
func setup(t *testing.T, tl tools, eng engine) *env {
	t.Helper()
	e := &env{t: t, tl: tl, engine: eng, dir: t.TempDir(), dedicated: map[string]bool{}, norm: &normalizer{}}
	e.pki = filepath.Join(e.dir, "pki")
	e.home = filepath.Join(e.dir, "home")
	for _, d := range []string{e.pki, e.home} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	e.ca = testpki.NewCA(t, "unibus red team CA")
	e.caCrt = e.ca.WriteCert(t, e.pki, "ca")
	e.other = testpki.NewCA(t, "someone else's CA").WriteCert(t, e.pki, "other-ca")
	e.pool = &tls.Config{RootCAs: e.ca.Pool, MinVersion: tls.VersionTLS12}
	e.cert, e.key = testpki.WriteFiles(t, e.pki, "server", e.ca.Server(t, "membershipd", []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"}))
	if eng == externalEngine {
		e.natsCert, e.natsKey = testpki.WriteFiles(t, e.pki, "nats-server", e.ca.Server(t, "nats-server", []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"}))
	}
	e.bus, e.ext = e.startBus(e.dir, e.cert, e.key, "--store", "kv")
	if !strings.HasPrefix(e.bus.HTTPURL, "https://127.0.0.1:") || !strings.HasPrefix(e.bus.NATSURL, "tls://127.0.0.1:") {
		t.Fatalf("membershipd is not on TLS: %s %s", e.bus.HTTPURL, e.bus.NATSURL)
	}
	e.httpc = &http.Client{Transport: &http.Transport{TLSClientConfig: e.pool}, Timeout: 30 * time.Second}
	e.deployment = e.deploymentOf(e.bus.HTTPURL)
	e.tag = wire.DeploymentTag(e.deployment)

	e.admin = e.loadUser("admin", filepath.Join(e.dir, "local_files", "admin.id"))
	e.internal = e.loadUser("internal", filepath.Join(e.dir, "local_files", "internal.id"))
	e.truth = e.internalJetStream(true)
	e.control = e.internalJetStream(false)

	names := []string{"alice", "bob", "dave", "mallory", "trudy", "ghost"}
	users := make([]*user, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { users[i] = e.newUser(n) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	e.alice, e.bob, e.dave, e.mallory, e.trudy, e.ghost = users[0], users[1], users[2], users[3], users[4], users[5]
	for _, u := range users[:5] {
		wg.Go(func() {
			e.unibus(e.admin, "user", "add", "--handle", u.name, "--sign-pub", u.hex)
			e.unibus(u, "register")
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	e.roomA = e.createRoom(e.alice, "room-a")
	e.roomB = e.createRoom(e.bob, "room-b")
	e.roomC = e.createRoom(e.bob, "room-c")
	e.roomBD = e.createDedicatedRoom(e.bob, "room-bd", 3600, dedicatedMaxBytes)
	e.dedicated[e.roomBD] = true
	e.unibus(e.alice, "room", "add", "room-a", "dave")
	e.unibus(e.bob, "room", "add", "room-b", "mallory")
	e.unibus(e.bob, "room", "add", e.roomBD, "mallory")
	e.unibus(e.bob, "room", "add", "room-c", "trudy")
	e.unibus(e.alice, "send", "room-a", "alice's first message")
	e.unibus(e.bob, "send", "room-b", "bob's first message")
	e.unibus(e.bob, "send", e.roomBD, "bob's first message in BD")
	e.unibus(e.bob, "send", "room-c", "bob's first message in C")
	for _, r := range []string{e.roomA, e.roomB, e.roomBD, e.roomC} {
		if n := len(e.history(r)); n != 1 {
			t.Fatalf("room %s holds %d messages after set-up, want 1", r, n)
		}
	}

	httpHost := strings.TrimPrefix(e.bus.HTTPURL, "https://")
	natsHost := strings.TrimPrefix(e.bus.NATSURL, "tls://")
	e.norm.add(e.roomA, "{A}", e.roomB, "{B}", e.roomBD, "{BD}", e.roomC, "{C}",
		e.alice.hex, "{alice}", e.bob.hex, "{bob}", e.dave.hex, "{dave}", e.mallory.hex, "{mallory}",
		e.trudy.hex, "{trudy}", e.ghost.hex, "{ghost}", e.admin.hex, "{admin}", e.deployment, "{deployment}",
		httpHost, "{http}", natsHost, "{nats}", e.dir, "{dir}")
	return e
}

// deploymentOf reads the deployment id a membershipd announces.
func (e *env) deploymentOf(base string) string {
	e.t.Helper()
	resp, err := e.httpc.Get(base + "/healthz")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var h wire.Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || h.Deployment == "" || h.Protocol != wire.Protocol {
		e.t.Fatalf("/healthz of %s: %v, deployment %q, protocol %q", base, err, h.Deployment, h.Protocol)
	}
	return h.Deployment
}

// internalJetStream logs in as membershipd's internal identity: into the
// bus account (room streams, listeners) or the control account (buckets).
// It is the ground truth every attack is judged by.
func (e *env) internalJetStream(bus bool) jetstream.JetStream {
	e.t.Helper()
	opts := []nats.Option{nats.Nkey(e.internal.id.NKey(), e.internal.id.SignNonce), nats.Secure(e.pool.Clone()), nats.Name("redteam-truth")}
	if bus {
		opts = append(opts, natsnode.BusLogin())
	}
	nc, err := nats.Connect(e.bus.NATSURL, opts...)
	if err != nil {
		e.t.Fatalf("ground-truth connection: %v", err)
	}
	e.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	return js
}

func (e *env) loadUser(name, path string) *user {
	e.t.Helper()
	id, err := identity.Load(path)
	if err != nil {
		e.t.Fatal(err)
	}
	return &user{name: name, idFile: path, id: id, hex: id.SignPub().String()}
}

// newUser makes an identity file with `unibus keygen`.
func (e *env) newUser(name string) *user {
	e.t.Helper()
	path := filepath.Join(e.dir, name+".id")
	r := harness.Run(e.t, e.dir, e.cliEnv(nil), "", "unibus", "keygen", "-o", path)
	if r.Code != 0 {
		e.t.Errorf("keygen %s: %v", name, r)
		return nil
	}
	u := e.loadUser(name, path)
	if strings.TrimSpace(r.Stdout) != u.hex {
		e.t.Errorf("keygen printed %q", r.Stdout)
	}
	return u
}

// cliEnv is the environment of the unibus CLI acting as u.
func (e *env) cliEnv(u *user, extra ...string) []string {
	env := []string{"UNIBUS_SERVER=" + e.bus.HTTPURL, "UNIBUS_NATS=" + e.bus.NATSURL, "UNIBUS_CA=" + e.caCrt}
	if u != nil {
		env = append(env, "UNIBUS_IDENTITY="+u.idFile)
	}
	return append(env, extra...)
}

// unibus runs the CLI as u and fails the test unless it succeeds.
func (e *env) unibus(u *user, args ...string) string {
	e.t.Helper()
	r := harness.Run(e.t, e.dir, e.cliEnv(u), "", "unibus", args...)
	if r.Code != 0 {
		e.t.Fatalf("unibus %v as %s: %v", args, u.name, r)
	}
	return r.Stdout
}

func (e *env) createRoom(u *user, name string) string {
	e.t.Helper()
	var room struct{ ID string }
	if err := json.Unmarshal([]byte(e.unibus(u, "--json", "room", "create", name)), &room); err != nil || len(room.ID) != 32 {
		e.t.Fatalf("room create: %v %q", err, room.ID)
	}
	return room.ID
}

// createDedicatedRoom makes a room with a byte limit, which gets a stream
// of its own: the CLI has no flag for it, so u sends the request itself.
func (e *env) createDedicatedRoom(u *user, name string, maxAge, maxBytes int64) string {
	e.t.Helper()
	rid, err := e2e.NewRoomID()
	if err != nil {
		e.t.Fatal(err)
	}
	body := e.createRoomBody(u, rid.String(), name, maxAge, maxBytes)
	var room wire.Room
	if st, code := e.api(u, "POST", "/v1/rooms", body, &room); st != http.StatusCreated || room.Shared {
		e.t.Fatalf("create room %s: %d %s, shared=%v", name, st, code, room.Shared)
	}
	return room.ID
}

// createRoomBody is a POST /v1/rooms body by u for room id: a fresh key
// for epoch 1, sealed to u.
func (e *env) createRoomBody(u *user, id, name string, maxAge, maxBytes int64) []byte {
	e.t.Helper()
	rid, err := e2e.ParseRoomID(id)
	if err != nil {
		e.t.Fatal(err)
	}
	key, err := e2e.NewRoomKey(rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	sk, err := e2e.SealRoomKey(u.id, rid, 1, u.id.SignPub(), u.id.KEMPub(), key)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := json.Marshal(wire.CreateRoomRequest{ID: id, Name: name, MaxAgeSeconds: maxAge, MaxBytes: maxBytes,
		Key: wire.SealedKey{Room: id, Epoch: 1, Member: u.hex, Sealer: u.hex, Sealed: sk.Sealed, Sig: sk.Sig}})
	return b
}

// toolEnv is the environment of the external tools: no NATS_, UNIBUS_,
// CURL_ or SSL_ settings of the caller, and an empty HOME (no nats
// contexts, no .curlrc).
func (e *env) toolEnv() []string {
	var env []string
	for _, kv := range harness.CleanEnv() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "NATS_") || strings.HasPrefix(k, "CURL_") ||
			strings.HasPrefix(k, "SSL_") || strings.HasPrefix(k, "XDG_") || k == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+e.home, "XDG_CONFIG_HOME="+filepath.Join(e.home, ".config"))
}

// result is a finished tool.
type result struct {
	stdout, stderr string
	code           int // -1: killed by the context
	elapsed        time.Duration
}

func (r result) all() string { return r.stdout + "\n" + r.stderr }

// run runs a tool with a time limit; stdin may be nil.
func (e *env) run(timeout time.Duration, stdin io.Reader, bin string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env, cmd.Stdin = e.dir, e.toolEnv(), stdin
	cmd.WaitDelay = 2 * time.Second
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
	switch ee := err.(type) {
	case nil:
	case *exec.ExitError:
		r.code = ee.ExitCode()
	default:
		r.code = -1
		r.stderr += "\n" + err.Error()
	}
	if ctx.Err() != nil {
		r.code = -1
	}
	return r
}

// normalizer replaces what differs from run to run (room ids, keys,
// ports, listener names) with fixed names, so that the table is stable.
type normalizer struct {
	mu    sync.Mutex
	pairs []string
}

func (n *normalizer) add(oldnew ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pairs = append(n.pairs, oldnew...)
}

// Replace applies every pair added so far.
func (n *normalizer) Replace(s string) string {
	n.mu.Lock()
	r := strings.NewReplacer(n.pairs...)
	n.mu.Unlock()
	return r.Replace(s)
}

// roomStream returns the stream holding a room's messages and the filter
// of its stored subjects.
func (e *env) roomStream(room string) (stream, filter string) {
	if e.dedicated[room] {
		return subjects.Stream(room), subjects.Room(room)
	}
	return subjects.SharedStream, subjects.SharedRoom(room)
}

// history lists a room's stored messages ("seq subject msg-id"), from the
// ground truth. Comparing two histories shows a message added, removed or
// replaced.
func (e *env) history(room string) []string {
	e.t.Helper()
	stream, filter := e.roomStream(room)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := e.truth.Stream(ctx, stream)
	if err != nil {
		e.t.Errorf("stream %s: %v", stream, err)
		return []string{"stream " + stream + ": " + err.Error()}
	}
	var out []string
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if err == jetstream.ErrMsgNotFound {
			return out
		}
		if err != nil {
			e.t.Errorf("read %s of %s: %v", filter, stream, err)
			return append(out, "error: "+err.Error())
		}
		out = append(out, fmt.Sprintf("%d %s %s", m.Sequence, m.Subject, m.Header.Get(e2e.HdrMsgID)))
		seq = m.Sequence + 1
	}
}

// storedOn reports whether a room holds a message on topic.
func (e *env) storedOn(room, topic string) bool {
	_, filter := e.roomStream(room)
	subject := strings.TrimSuffix(filter, ">") + topic
	for _, m := range e.history(room) {
		if strings.Contains(m, " "+subject+" ") {
			return true
		}
	}
	return false
}

// streamConfig is a stream's configuration as JSON ("" if it does not
// exist), from the ground truth.
func (e *env) streamConfig(name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.truth.Stream(ctx, name)
	if err != nil {
		return ""
	}
	b, _ := json.Marshal(s.CachedInfo().Config)
	return string(b)
}

// streamExists reports whether the bus account has a stream of that name.
func (e *env) streamExists(name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := e.truth.Stream(ctx, name)
	return err == nil
}

// consumer is a consumer's state, from the ground truth.
type consumer struct {
	Name, Member, Room, Deliver string
	Stream, Filter              string
	DeliveredConsumer           uint64
	DeliveredStream             uint64
	Pending                     uint64
	Redelivered                 int
}

// consumers lists the consumers of a stream.
func (e *env) consumers(stream string) []consumer {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := e.truth.Stream(ctx, stream)
	if err != nil {
		return nil
	}
	var out []consumer
	l := s.ListConsumers(ctx)
	for info := range l.Info() {
		out = append(out, consumerOf(info))
	}
	if err := l.Err(); err != nil {
		e.t.Errorf("list consumers of %s: %v", stream, err)
	}
	return out
}

// consumerState reads one consumer (ok false: it does not exist).
func (e *env) consumerState(stream, name string) (consumer, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.truth.PushConsumer(ctx, stream, name)
	if err != nil {
		return consumer{}, false
	}
	info, err := c.Info(ctx)
	if err != nil {
		return consumer{}, false
	}
	return consumerOf(info), true
}

func consumerOf(info *jetstream.ConsumerInfo) consumer {
	return consumer{Name: info.Name, Stream: info.Stream, Filter: info.Config.FilterSubject, Member: info.Config.Metadata["unibus_member"], Room: info.Config.Metadata["unibus_room"],
		Deliver: info.Config.DeliverSubject, DeliveredConsumer: info.Delivered.Consumer, DeliveredStream: info.Delivered.Stream,
		Pending: info.NumPending, Redelivered: info.NumRedelivered}
}

// listenersOf lists u's listeners on every stream of a room set.
func (e *env) listenersOf(u *user, streams ...string) []consumer {
	var out []consumer
	for _, s := range streams {
		for _, c := range e.consumers(s) {
			if c.Member == u.hex {
				out = append(out, c)
			}
		}
	}
	return out
}

// waitNewListener waits until u has a listener on room that is not in
// before (names), and reports whether it came.
func (e *env) waitNewListener(u *user, room string, before []consumer) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, _ := e.roomStream(room)
	return harness.Wait(ctx, func() error {
		for _, c := range e.listenersOf(u, stream) {
			if c.Room == room && !slices.ContainsFunc(before, func(b consumer) bool { return b.Name == c.Name }) {
				return nil
			}
		}
		return errNotSeen
	}) == nil
}

// lastOnSubject is the sequence of the last message a control-plane
// stream holds on subject (0: none), from the ground truth.
func (e *env) lastOnSubject(stream, subject string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.control.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return 0
	}
	return m.Sequence
}
