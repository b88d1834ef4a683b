package redteam

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/testbin"
	"github.com/unibus/unibus/internal/testpki"
	"github.com/unibus/unibus/subjects"
)

// NATSCLIVersion is the version of the official nats CLI that
// .ci/install-tools installs and docs/SECURITY-ATTACKS.md was made with.
const NATSCLIVersion = "v0.5.1"

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

// env is one membershipd under attack, with its users, rooms and
// certificate authorities.
type env struct {
	t     *testing.T
	tl    tools
	dir   string
	bus   *testbin.Bus
	ca    *testpki.CA
	pki   string // directory of certificates and keys
	caCrt string // the CA that signed the server certificate
	other string // another CA's certificate
	home  string // HOME of the tools (no user configuration, no contexts)

	admin, alice, bob, ghost *user
	roomA, roomB             string
	genuineB                 int // messages bob sent to room B

	truth  jetstream.JetStream // membershipd's internal identity in the bus account: ground truth
	adminC *client.Client
	norm   *strings.Replacer
}

// setup starts membershipd with --bus-auth enforce and TLS, and makes, with
// the unibus CLI, two members in two rooms (alice in A, bob in B) with a
// message each, and a keypair that was never registered (ghost).
func setup(t *testing.T, tl tools) *env {
	t.Helper()
	e := &env{t: t, tl: tl, dir: t.TempDir()}
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
	cert, key := testpki.WriteFiles(t, e.pki, "server", e.ca.Server(t, "membershipd", []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"}))
	e.bus = testbin.StartBus(t, e.dir, "--bus-auth", "enforce", "--tls-cert", cert, "--tls-key", key)
	if !strings.HasPrefix(e.bus.HTTPURL, "https://127.0.0.1:") || !strings.HasPrefix(e.bus.NATSURL, "tls://127.0.0.1:") {
		t.Fatalf("membershipd is not on TLS: %s %s", e.bus.HTTPURL, e.bus.NATSURL)
	}

	e.admin = e.loadUser("admin", filepath.Join(e.dir, "local_files", "admin.id"))
	e.alice, e.bob, e.ghost = e.newUser("alice"), e.newUser("bob"), e.newUser("ghost")
	for _, u := range []*user{e.alice, e.bob} {
		e.unibus(e.admin, "user", "add", "--handle", u.name, "--sign-pub", u.hex)
		e.unibus(u, "register")
	}
	e.roomA = e.createRoom(e.alice, "room-a")
	e.roomB = e.createRoom(e.bob, "room-b")
	e.unibus(e.alice, "send", "room-a", "alice's first message")
	e.unibus(e.bob, "send", "room-b", "bob's first message")

	internal := e.loadUser("internal", filepath.Join(e.dir, "local_files", "internal.id"))
	nc, err := nats.Connect(e.bus.NATSURL, nats.Nkey(internal.id.NKey(), internal.id.SignNonce), natsnode.BusLogin(),
		nats.Secure(&tls.Config{RootCAs: e.ca.Pool, MinVersion: tls.VersionTLS12}), nats.Name("redteam-truth"))
	if err != nil {
		t.Fatalf("ground-truth connection: %v", err)
	}
	t.Cleanup(nc.Close)
	if e.truth, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if e.genuineB = e.msgs(e.streamB()); e.genuineB != 1 {
		t.Fatalf("room B holds %d messages after set-up, want 1", e.genuineB)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if e.adminC, err = client.Dial(ctx, client.Config{Identity: e.admin.id, Servers: []string{e.bus.HTTPURL},
		NATS: []string{e.bus.NATSURL}, RootCAs: e.ca.Pool}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.adminC.Close)

	httpHost := strings.TrimPrefix(e.bus.HTTPURL, "https://")
	natsHost := strings.TrimPrefix(e.bus.NATSURL, "tls://")
	e.norm = strings.NewReplacer(
		e.roomA, "{A}", e.roomB, "{B}",
		e.alice.hex, "{alice}", e.bob.hex, "{bob}", e.ghost.hex, "{ghost}", e.admin.hex, "{admin}",
		httpHost, "{http}", natsHost, "{nats}", e.dir, "{dir}")
	return e
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
	r := testbin.Run(e.t, e.dir, e.cliEnv(nil), "", "unibus", "keygen", "-o", path)
	if r.Code != 0 {
		e.t.Fatalf("keygen %s: %+v", name, r)
	}
	u := e.loadUser(name, path)
	if strings.TrimSpace(r.Stdout) != u.hex {
		e.t.Fatalf("keygen printed %q", r.Stdout)
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
	r := testbin.Run(e.t, e.dir, e.cliEnv(u), "", "unibus", args...)
	if r.Code != 0 {
		e.t.Fatalf("unibus %v as %s: exit %d\n%s%s", args, u.name, r.Code, r.Stdout, r.Stderr)
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

// toolEnv is the environment of the external tools: no NATS_, UNIBUS_,
// CURL_ or SSL_ settings of the caller, and an empty HOME (no nats
// contexts, no .curlrc).
func (e *env) toolEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "NATS_") || strings.HasPrefix(k, "UNIBUS_") || strings.HasPrefix(k, "CURL_") ||
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

// msgs is the number of messages in a stream, from the ground truth (-1:
// the stream does not exist).
func (e *env) msgs(stream string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.truth.Stream(ctx, stream)
	if err != nil {
		return -1
	}
	info, err := s.Info(ctx)
	if err != nil {
		return -1
	}
	return int(info.State.Msgs)
}

// streamSubjects is a stream's configured subjects, from the ground truth.
func (e *env) streamSubjects(stream string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.truth.Stream(ctx, stream)
	if err != nil {
		return nil
	}
	return s.CachedInfo().Config.Subjects
}

// hasConsumer reports whether a consumer exists, from the ground truth.
func (e *env) hasConsumer(stream, name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := e.truth.Consumer(ctx, stream, name)
	return err == nil
}

// hasMsgOn reports whether stream holds a message on subject, from the
// ground truth.
func (e *env) hasMsgOn(stream, subject string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.truth.Stream(ctx, stream)
	if err != nil {
		return false
	}
	_, err = s.GetLastMsgForSubject(ctx, subject)
	return err == nil
}

// streamA and streamB are the room streams' names.
func (e *env) streamA() string { return subjects.Stream(e.roomA) }
func (e *env) streamB() string { return subjects.Stream(e.roomB) }
