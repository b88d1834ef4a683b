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
		argv[0] = filepath.Join(bin, "membershipd")
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

	// The first admin, then a member, added live on n1 over its internal
	// identity; listed on n2 and n3; the member revoked on n3.
	admin, member := filepath.Join(m.dir, "admin.id"), filepath.Join(m.dir, "alice.id")
	adminPub, memberPub := keygen(t, m.dir, admin), keygen(t, m.dir, member)
	kv := func(i int) []string {
		return []string{"--store", "kv", "--nats-url", fmt.Sprintf("nats://%s:%d", top.nodes[i].public, top.natsPort),
			"--ca", envs[i]["CA_CERT"], "--internal-id-file", envs[i]["INTERNAL_ID_FILE"], "--kv-replicas", envs[i]["KV_REPLICAS"]}
	}
	var cliOut strings.Builder
	admin1 := func(i int, args ...string) harness.Result {
		t.Helper()
		r := harness.Run(t, m.dir, nil, "", "membershipd", append(args, kv(i)...)...)
		cliOut.WriteString(r.Stdout + r.Stderr)
		if r.Code != 0 {
			t.Fatalf("membershipd %v on %s: %+v", args, top.nodes[i].name, r)
		}
		return r
	}
	r := admin1(0, "user", "add", "--handle", "root", "--role", "admin", "--sign-pub", adminPub)
	if !regexp.MustCompile(`KV_UNIBUS_users: leader=n\d followers_current=2/2 msgs=\d+ \(replicated, HA\)`).MatchString(r.Stdout) {
		t.Errorf("user add on an R3 cluster: %s", r.Stdout)
	}
	admin1(0, "user", "add", "--handle", "alice", "--role", "member", "--sign-pub", memberPub)
	for _, i := range []int{1, 2} {
		r := admin1(i, "user", "list", "--json")
		if !strings.Contains(r.Stdout, `"handle":"root","sign_pub":"`+adminPub+`","role":"admin","status":"active"`) ||
			!strings.Contains(r.Stdout, `"handle":"alice"`) {
			t.Errorf("user list on %s does not show the users added on n1: %s", top.nodes[i].name, r.Stdout)
		}
	}
	admin1(2, "user", "revoke", memberPub)
	if r := admin1(0, "user", "list", "--json"); !strings.Contains(r.Stdout, `"handle":"alice","sign_pub":"`+memberPub+`","role":"member","status":"revoked"`) {
		t.Errorf("a revocation on n3 is not seen on n1: %s", r.Stdout)
	}
	// The first admin works over the API on another node, with TLS.
	who := harness.Run(t, m.dir, nil, "", "unibus", "--server", fmt.Sprintf("https://%s:%d", top.nodes[1].public, top.httpPort),
		"--nats", fmt.Sprintf("tls://%s:%d", top.nodes[1].public, top.natsPort), "--ca", envs[1]["CA_CERT"], "--identity", admin, "whoami")
	if who.Code != 0 || !strings.Contains(who.Stdout, "admin") {
		t.Errorf("unibus whoami as the first admin on n2: %+v", who)
	}

	// No secret on any surface: the route secret, every node's internal
	// identity seed, the admin's seed.
	secrets := map[string]string{"route secret": m.secret}
	for name, path := range map[string]string{"admin seed": admin, "n1 internal seed": envs[0]["INTERNAL_ID_FILE"],
		"n2 internal seed": envs[1]["INTERNAL_ID_FILE"], "n3 internal seed": envs[2]["INTERNAL_ID_FILE"]} {
		seed := strings.TrimSpace(readFile(t, path))
		if !strings.HasPrefix(seed, "SU") || len(seed) < 40 {
			t.Fatalf("%s: unexpected identity file format", name)
		}
		secrets[name] = seed
		secrets[name+" (body)"] = seed[2:22]
	}
	surfaces := map[string]string{"deploy-cluster.sh output": staged.Stdout + staged.Stderr, "admin CLI output": cliOut.String()}
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
