package deploytest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/wire"
)

// rehearsalIPs are the three nodes' addresses: Linux routes all of
// 127.0.0.0/8 to the loopback interface.
var rehearsalIPs = []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}

// startUnit runs argv (ExecStart, expanded) in dir (WorkingDirectory) with
// the EnvironmentFile's variables in the environment, as systemd does, and
// stops it at the end of the test.
func startUnit(t *testing.T, dir string, argv []string, env map[string]string) *harness.Bus {
	t.Helper()
	var kv []string
	for k, v := range env {
		kv = append(kv, k+"="+v)
	}
	return harness.LaunchBus(t, argv[0], dir, kv, argv[1:]...)
}

// get fetches an HTTPS URL of a node, trusting only ca.
func get(ctx context.Context, ca *x509.CertPool, url string) (int, []byte, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Must-show 4: a rehearsal of the runbook on three loopback addresses. The
// scripts make the certificates and each node's cluster.env in a temporary
// directory; three membershipd processes start exactly as the unit's
// ExecStart would; every /healthz reports the cluster posture; the first
// admin and a member are added live with `user add --store kv` on one node
// and seen on the others; and no process leaks the route secret or an
// identity seed into its log, /healthz, /metrics, argv or environment.
func TestRehearsal(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	requireTools(t, "openssl", "rsync")
	t.Parallel()
	bin := harness.Build(t)
	requireTools(t, "curl", "nats")
	ports := harness.FreePorts(t, rehearsalIPs, 3)
	top := topology{httpPort: ports[0], natsPort: ports[1], clusterPort: ports[2], routeNetwork: "public", bind: "public"}
	for i, ip := range rehearsalIPs {
		top.nodes = append(top.nodes, node{name: fmt.Sprintf("n%d", i+1), ssh: "unused", public: ip, wg: "-"})
	}
	m := newMaterial(t, top, nil)
	local := filepath.Join(m.dir, "nodes")

	// Stage with --yes --local: the real cross-build on linux/amd64 (where
	// it shares the build cache with harness.Build), a prebuilt binary elsewhere.
	args := m.args("--local", local, "--yes")
	built := runtime.GOOS == "linux" && runtime.GOARCH == "amd64"
	if !built {
		args = append(args, "--binary", filepath.Join(bin, "membershipd"))
	}
	staged := mustRun(t, m.dir, nil, "cluster/deploy-cluster.sh", args...)
	if built {
		f, err := elf.Open(filepath.Join(m.build, "membershipd"))
		if err != nil {
			t.Fatalf("the cross-built binary: %v", err)
		}
		if f.Machine != elf.EM_X86_64 {
			t.Errorf("the cross-built binary is for %v, want x86-64", f.Machine)
		}
		f.Close()
	}

	unit := readFile(t, filepath.Join(deployDir(t), "cluster", "membershipd-cluster.service"))
	if wd := unitDirective(t, unit, "WorkingDirectory"); len(wd) != 1 || wd[0] != "/opt/unibus" {
		t.Fatalf("WorkingDirectory %v: the rehearsal stands in DIR/<node> for /opt/unibus", wd)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(readFile(t, filepath.Join(local, "n1", "tls", "ca.crt"))))

	// As root, n1 is installed as on a real host: install-node.sh sets its
	// owners and modes (and creates the unibus user), and the unit's
	// process runs as unibus.
	app1 := filepath.Join(local, "n1")
	asRoot := os.Geteuid() == 0
	if asRoot {
		requireTools(t, "unshare", "setpriv", "curl")
		opened(t, app1, filepath.Clean(os.TempDir()))
		if r := installNode(t, app1, filepath.Join(m.out, "n1", "install-node.sh")); r.Code != 0 {
			t.Fatalf("install-node.sh for n1: %s", r)
		}
	} else {
		t.Log("not root: n1 is not installed with install-node.sh and runs as this user")
	}

	// The first admin, as the runbook bootstraps it on n1 before the
	// cluster starts: a temporary loopback server and migrate-to-kv, as
	// root. It registers no admin of its own and leaves no identity file
	// behind; migrate-to-kv keeps the seed for the cluster.
	admin, member := filepath.Join(m.dir, "admin.id"), filepath.Join(m.dir, "alice.id")
	adminPub, memberPub := keygen(t, m.dir, admin), keygen(t, m.dir, member)
	boot, bootLog := runFirstAdminBootstrap(t, app1, adminPub)
	if boot.Code != 0 || !strings.Contains(boot.Stdout, `added user "root"`) || !strings.Contains(boot.Stdout, "users: 1 copied") ||
		!strings.Contains(boot.Stdout, "kept a copy as "+filepath.Join(app1, "local_files", "cluster-seed.db")) {
		t.Fatalf("the runbook's first-admin bootstrap: %s\n--- temporary server:\n%s", boot, bootLog)
	}
	if !strings.Contains(bootLog, "no bootstrap admin") || strings.Contains(bootLog, "created and registered an admin identity") {
		t.Errorf("the temporary server on a node made an admin of its own:\n%s", bootLog)
	}
	for _, name := range []string{"admin.id", "seed.db"} {
		if f := findFiles(t, app1, name); len(f) > 0 {
			t.Errorf("the bootstrap left %v behind", f)
		}
	}
	if _, err := os.Stat(filepath.Join(app1, "local_files", "internal.id")); !os.IsNotExist(err) {
		t.Errorf("the bootstrap made a second internal identity in local_files/ (%v)", err)
	}
	started := time.Now()
	procs := make([]*harness.Bus, len(top.nodes))
	envs := make([]map[string]string, len(top.nodes))
	for i, n := range top.nodes {
		app := filepath.Join(local, n.name)
		if m := mode(t, filepath.Join(app, "secrets", "cluster.pass")); m != 0o600 {
			t.Fatalf("%s: cluster.pass staged with mode %o", n.name, m)
		}
		envs[i] = parseEnvFile(t, filepath.Join(app, "cluster.env"))
		argv := execStart(t, unit, envs[i])
		if argv[0] != "/opt/unibus/membershipd" {
			t.Fatalf("ExecStart runs %s", argv[0])
		}
		// The staged binary, beside its cluster.env.
		argv[0] = filepath.Join(app, "membershipd")
		if i == 0 && asRoot {
			// ExecStartPre as root ("+"), then ExecStart as User=unibus,
			// on the store the bootstrap wrote as root.
			pre := unitDirective(t, unit, "ExecStartPre")
			if len(pre) != 1 || !strings.HasPrefix(pre[0], "+") {
				t.Fatalf("ExecStartPre %q: want one command run as root", pre)
			}
			words := strings.Fields(onNode(strings.TrimPrefix(pre[0], "+"), app))
			if out, err := exec.Command(words[0], words[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("ExecStartPre %v: %v\n%s", words, err, out)
			}
			argv = asUser("unibus", "unibus", argv...)
			setpriv, err := exec.LookPath(argv[0])
			if err != nil {
				t.Fatal(err)
			}
			argv[0] = setpriv
		}
		// All three at once: the hardest case for the cold start (every
		// node asks for every bucket at the same moment).
		procs[i] = startUnit(t, app, argv, envs[i])
	}

	// Every node turns healthy once the quorum forms, with the posture.
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	healths := map[string]string{}
	for i, n := range top.nodes {
		url := fmt.Sprintf("https://%s:%d/healthz", n.public, top.httpPort)
		err := harness.Wait(ctx, func() error {
			select {
			case <-procs[i].Exited():
				t.Fatalf("%s exited:\n%s", n.name, procs[i].Output())
			default:
			}
			code, body, err := get(ctx, pool, url)
			if code != http.StatusOK {
				return fmt.Errorf("%d %s %v", code, body, err)
			}
			healths[n.name] = string(body)
			return nil
		})
		if err != nil {
			t.Fatalf("%s not healthy: %v\n%s", n.name, err, procs[i].Output())
		}
		t.Logf("%s healthy %v after the simultaneous start", n.name, time.Since(started).Round(time.Millisecond))
		var h wire.Health
		if err := json.Unmarshal([]byte(healths[n.name]), &h); err != nil {
			t.Fatal(err)
		}
		p := h.Posture
		if h.Node != n.name || p.BusAuth != "enforce" || !p.ACL || !p.TLS || !p.RouteTLS || !p.Cluster || p.Store != "kv" || p.KVReplicas != 3 || p.Peers != 3 {
			t.Errorf("%s posture: %s", n.name, healths[n.name])
		}
	}

	t.Logf("all three nodes healthy %v after they were started", time.Since(started).Round(time.Second))

	// The health poll of the runbook runs as the ssh login (a sudo user,
	// not root), with the node's CA.
	if asRoot {
		url := fmt.Sprintf("https://%s:%d/healthz", top.nodes[0].public, top.httpPort)
		poll := asUser("nobody", "nogroup", "curl", "-fsS", "--cacert", filepath.Join(app1, "tls", "ca.crt"), url)
		out, err := exec.Command(poll[0], poll[1:]...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"status":"ok"`) {
			t.Errorf("the health poll as an unprivileged user: %v\n%s", err, out)
		}
	}

	// The admin commands exactly as the runbook writes them, run as root on
	// a node from the login's home: they take the node's settings from
	// the cluster.env beside the binary.
	var cliOut strings.Builder
	onNodeCLI := func(i int, args ...string) harness.Result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(local, top.nodes[i].name, "membershipd"), args...)
		cmd.Dir, cmd.Env = t.TempDir(), harness.CleanEnv()
		r := harness.Exec(t, cmd)
		cliOut.WriteString(r.Stdout + r.Stderr)
		if r.Code != 0 {
			t.Fatalf("membershipd %v on %s: %+v", args, top.nodes[i].name, r)
		}
		return r
	}
	// The bootstrap's admin arrives once n1 has imported the seed; it is
	// the one admin.
	var users []map[string]any
	harness.EventuallyNoError(t, 90*time.Second, func() error {
		r := onNodeCLI(1, "user", "list", "--store", "kv", "--json")
		users = nil
		if err := json.Unmarshal([]byte(r.Stdout), &users); err != nil {
			return err
		}
		if len(users) == 0 {
			return fmt.Errorf("no users yet")
		}
		return nil
	}, "the bootstrap's admin on n2")
	if len(users) != 1 || users[0]["handle"] != "root" || users[0]["sign_pub"] != adminPub || users[0]["role"] != "admin" || users[0]["status"] != "active" {
		t.Errorf("after the bootstrap the cluster's users are %v, want the operator's admin alone", users)
	}
	if !strings.Contains(procs[0].Output(), "moved aside") || !strings.Contains(procs[0].Output(), "cluster seed imported") {
		t.Errorf("n1 did not set the standalone store aside and import the seed:\n%s", procs[0].Output())
	}

	r := onNodeCLI(0, "user", "add", "--store", "kv", "--handle", "alice", "--role", "member", "--sign-pub", memberPub)
	if !strings.Contains(r.Stdout, `added user "alice" (`+memberPub+`) role=member`) ||
		!regexp.MustCompile(`KV_UNIBUS_users: leader=n\d followers_current=2/2 msgs=\d+ \(replicated, HA\)`).MatchString(r.Stdout) {
		t.Errorf("user add on an R3 cluster: %s", r.Stdout)
	}
	for _, i := range []int{1, 2} {
		r := onNodeCLI(i, "user", "list", "--store", "kv")
		if !regexp.MustCompile(`(?m)^root +admin +active +\S+ +`+adminPub+`$`).MatchString(r.Stdout) ||
			!regexp.MustCompile(`(?m)^alice +member +active +false +`+memberPub+`$`).MatchString(r.Stdout) {
			t.Errorf("user list on %s does not show the users: %s", top.nodes[i].name, r.Stdout)
		}
	}
	onNodeCLI(2, "user", "revoke", "--store", "kv", memberPub)
	// The explicit flags of the runbook's section 5 work too.
	kv := []string{"--store", "kv", "--nats-url", fmt.Sprintf("nats://%s:%d", top.nodes[0].public, top.natsPort),
		"--ca", envs[0]["CA_CERT"], "--internal-id-file", envs[0]["INTERNAL_ID_FILE"], "--kv-replicas", envs[0]["KV_REPLICAS"]}
	if r := onNodeCLI(0, append([]string{"user", "list", "--json"}, kv...)...); !strings.Contains(r.Stdout, `"handle":"alice","sign_pub":"`+memberPub+`","role":"member","status":"revoked"`) {
		t.Errorf("a revocation on n3 is not seen on n1: %s", r.Stdout)
	}
	// The operator credential: `membershipd operator-creds` as root on n1
	// writes and selects a nats context; then the runbook's nats CLI
	// commands, as written, read every node's server and JetStream
	// reports — and nothing of the control plane.
	natsHome := []string{"XDG_CONFIG_HOME=" + t.TempDir()} // root's ~/.config, kept out of the real one
	creds := func() harness.Result {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(app1, "membershipd"), "operator-creds")
		cmd.Dir, cmd.Env = t.TempDir(), append(harness.CleanEnv(), natsHome...)
		return harness.Exec(t, cmd)
	}()
	cliOut.WriteString(creds.Stdout + creds.Stderr)
	if creds.Code != 0 || !strings.Contains(creds.Stdout, `wrote nats context "unibus"`) {
		t.Fatalf("membershipd operator-creds on n1: %s", creds)
	}
	ctxFile := filepath.Join(strings.TrimPrefix(natsHome[0], "XDG_CONFIG_HOME="), "nats", "context", "unibus.json")
	if m := mode(t, ctxFile); m != 0o600 {
		t.Errorf("the nats context holding the operator token is mode %o", m)
	}
	var natsCtx struct{ Token, CA, URL string }
	if err := json.Unmarshal([]byte(readFile(t, ctxFile)), &natsCtx); err != nil || !strings.HasPrefix(natsCtx.Token, "unibus-operator-v1.") ||
		natsCtx.CA != envs[0]["CA_CERT"] {
		t.Fatalf("the nats context: %v %+v", err, natsCtx)
	}
	natsCLI := func(args ...string) harness.Result {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		server := fmt.Sprintf("nats://%s:%d", top.nodes[0].public, top.natsPort) // the runbook's nats://127.0.0.1:4250
		cmd := exec.CommandContext(ctx, "nats", append([]string{"--server", server}, args...)...)
		cmd.Dir, cmd.Env = t.TempDir(), append(harness.CleanEnv(), natsHome...)
		r := harness.Exec(t, cmd)
		cliOut.WriteString(r.Stdout + r.Stderr)
		return r
	}
	if r := natsCLI("server", "list"); r.Code != 0 || !strings.Contains(r.Stdout, "n1") || !strings.Contains(r.Stdout, "n2") || !strings.Contains(r.Stdout, "n3") {
		t.Errorf("nats server list with the operator credential: %s", r)
	}
	harness.EventuallyNoError(t, 30*time.Second, func() error {
		r := natsCLI("server", "report", "jetstream")
		for _, want := range []string{"n1", "n2", "n3"} {
			if r.Code != 0 || !strings.Contains(r.Stdout, want) {
				return fmt.Errorf("%s", r)
			}
		}
		return nil
	}, "nats server report jetstream with the operator credential")
	for _, args := range [][]string{{"stream", "info", "KV_UNIBUS_users"}, {"kv", "get", "UNIBUS_users", "deployment"},
		{"stream", "update", "KV_UNIBUS_users", "--replicas", "1", "-f"}, {"server", "request", "connections"}} {
		// Refused: an error, or (server request) a permissions violation
		// and no answer.
		if r := natsCLI(args...); r.Code == 0 && (!strings.Contains(r.Stderr, "Permissions Violation") || strings.TrimSpace(r.Stdout) != "") {
			t.Errorf("the operator credential allows nats %v: %s", args, r)
		}
	}

	// The first admin works over the API on another node, with TLS.
	who := harness.Run(t, m.dir, nil, "", "unibus", "--server", fmt.Sprintf("https://%s:%d", top.nodes[1].public, top.httpPort),
		"--nats", fmt.Sprintf("tls://%s:%d", top.nodes[1].public, top.natsPort), "--ca", envs[1]["CA_CERT"], "--identity", admin, "whoami")
	if who.Code != 0 || !strings.Contains(who.Stdout, "admin") {
		t.Errorf("unibus whoami as the first admin on n2: %+v", who)
	}

	// No secret on any surface: the route secret, every node's internal
	// identity seed, the admin's seed.
	secrets := map[string]string{"route secret": m.secret, "operator token": natsCtx.Token}
	for name, path := range map[string]string{"admin seed": admin, "n1 internal seed": envs[0]["INTERNAL_ID_FILE"],
		"n2 internal seed": envs[1]["INTERNAL_ID_FILE"], "n3 internal seed": envs[2]["INTERNAL_ID_FILE"]} {
		seed := strings.TrimSpace(readFile(t, path))
		if !strings.HasPrefix(seed, "SU") || len(seed) < 40 {
			t.Fatalf("%s: unexpected identity file format", name)
		}
		secrets[name] = seed
		secrets[name+" (body)"] = seed[2:22]
	}
	surfaces := map[string]string{"deploy-cluster.sh output": staged.Stdout + staged.Stderr, "admin CLI output": cliOut.String(),
		"bootstrap output": boot.Stdout + boot.Stderr, "temporary server log": bootLog}
	for i, n := range top.nodes {
		surfaces[n.name+" log"] = procs[i].Output()
		for _, path := range []string{"/healthz", "/metrics"} {
			_, body, err := get(ctx, pool, fmt.Sprintf("https://%s:%d%s", n.public, top.httpPort, path))
			if err != nil {
				t.Fatal(err)
			}
			surfaces[n.name+" "+path] = string(body)
		}
		argv, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", procs[i].PID()))
		if err != nil {
			t.Fatal(err)
		}
		surfaces[n.name+" argv"] = strings.ReplaceAll(string(argv), "\x00", " ")
		// The environment systemd gives it (cluster.env) holds paths only.
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", procs[i].PID()))
		if err != nil {
			t.Fatal(err)
		}
		surfaces[n.name+" environment"] = strings.ReplaceAll(string(environ), "\x00", " ")
	}
	if !strings.Contains(surfaces["n1 /metrics"], "unibus_") || !strings.Contains(surfaces["n2 argv"], "--cluster-pass-file") ||
		!strings.Contains(surfaces["n3 log"], "membershipd ready") || !strings.Contains(surfaces["n1 environment"], "CLUSTER_PASS_FILE=") {
		t.Fatal("the surfaces were not captured (control)")
	}
	for sname, surface := range surfaces {
		for name, value := range secrets {
			if strings.Contains(surface, value) {
				t.Errorf("%s contains the %s", sname, name)
			}
		}
	}
}

// keygen makes an identity with `unibus keygen` and returns its sign-pub.
func keygen(t *testing.T, dir, path string) string {
	t.Helper()
	r := harness.Run(t, dir, nil, "", "unibus", "keygen", "-o", path)
	pub := regexp.MustCompile(`[0-9a-f]{64}`).FindString(r.Stdout)
	if r.Code != 0 || pub == "" {
		t.Fatalf("unibus keygen: %+v", r)
	}
	return pub
}
