package deploytest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// material is what deploy-cluster.sh needs, made in a temporary directory
// the way the runbook makes it.
type material struct {
	dir, nodesEnv, tls, out, secrets, build, pass, secret string
}

// newMaterial runs tls/generate-certs.sh and
// cluster/generate-cluster-certs.sh for top and writes the route secret.
func newMaterial(t *testing.T, top topology, edit func(string) string) material {
	t.Helper()
	dir := t.TempDir()
	m := material{dir: dir, nodesEnv: filepath.Join(dir, "nodes.env"), tls: filepath.Join(dir, "tls"),
		out: filepath.Join(dir, "out"), secrets: filepath.Join(dir, "secrets"), build: filepath.Join(dir, "build")}
	m.pass = filepath.Join(m.secrets, "cluster.pass")
	m.secret = randomHex(t)
	nodes := top.fill(t, readFile(t, filepath.Join(deployDir(t), "cluster", "nodes.env")))
	if edit != nil {
		nodes = edit(nodes)
	}
	writeFile(t, m.nodesEnv, nodes, 0o644)
	writeFile(t, m.pass, m.secret+"\n", 0o600)
	mustRun(t, dir, nil, "tls/generate-certs.sh", "--out", m.tls, "--no-host-names", "--name", "operator")
	mustRun(t, dir, nil, "cluster/generate-cluster-certs.sh", "--nodes", m.nodesEnv, "--out", m.out, "--ca-dir", m.tls)
	return m
}

// args are deploy-cluster.sh's directory flags for m.
func (m material) args(extra ...string) []string {
	return append([]string{"--nodes", m.nodesEnv, "--out", m.out, "--secrets", m.secrets, "--build", m.build}, extra...)
}

var publicTopology = topology{httpPort: 8470, natsPort: 4250, clusterPort: 6250, routeNetwork: "public", bind: "0.0.0.0", nodes: []node{
	{"magnus", "root@magnus.example.org", "203.0.113.30", "-"},
	{"homer", "homer", "198.51.100.66", "-"},
	{"datardos", "dd", "192.0.2.142", "10.7.0.3"},
}}

// Must-show 2: without --yes, deploy-cluster.sh prints a plan naming every
// node, file and command; it runs no ssh, rsync, go or systemctl, and
// changes nothing on disk outside its out/ directory.
func TestDeployClusterDryRun(t *testing.T) {
	requireTools(t, "openssl")
	t.Parallel()
	m := newMaterial(t, publicTopology, nil)
	unit := readFile(t, filepath.Join(deployDir(t), "cluster", "membershipd-cluster.service"))

	before, beforeRepo := snapshot(t, m.dir, m.out), snapshot(t, deployDir(t))
	path, log := stubTools(t, 1, "ssh", "rsync", "go", "scp", "sudo", "systemctl")
	r := mustRun(t, m.dir, []string{path}, "cluster/deploy-cluster.sh", m.args()...)
	if c := calls(t, log); c != "" {
		t.Errorf("the dry run ran commands:\n%s", c)
	}
	if d := diffSnapshots(before, snapshot(t, m.dir, m.out)); len(d) > 0 {
		t.Errorf("the dry run changed files outside out/: %v", d)
	}
	if d := diffSnapshots(beforeRepo, snapshot(t, deployDir(t))); len(d) > 0 {
		t.Errorf("the dry run changed files in the repository: %v", d)
	}
	if _, err := os.Stat(m.build); !os.IsNotExist(err) {
		t.Errorf("the dry run made the build directory: %v", err)
	}

	plan := r.Stdout
	for _, want := range []string{"DRY RUN", "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "go build", "./cmd/membershipd",
		filepath.Join(m.build, "membershipd"), m.pass, "systemctl daemon-reload", "/etc/systemd/system/membershipd-cluster.service",
		"useradd", "nothing is built, copied or installed"} {
		if !strings.Contains(plan, want) {
			t.Errorf("the plan does not mention %q", want)
		}
	}
	for i, n := range publicTopology.nodes {
		for _, want := range []string{"== node " + n.name, n.public, "ssh " + n.ssh + " mkdir -p /opt/unibus/secrets",
			"ssh " + n.ssh + " sh -s < " + filepath.Join(m.out, n.name, "install-node.sh"),
			n.ssh + ":/opt/unibus/", "ssh " + n.ssh + " systemctl enable --now membershipd-cluster.service"} {
			if !strings.Contains(plan, want) {
				t.Errorf("the plan does not mention %q for %s", want, n.name)
			}
		}
		for _, f := range []string{"cluster.env", "membershipd-cluster.service", "tls/ca.crt", "tls/server.crt", "tls/server.key",
			"tls/route-ca.crt", "tls/route.crt", "tls/route.key"} {
			if !strings.Contains(plan, filepath.Join(m.out, n.name, f)+" -> "+f) {
				t.Errorf("the plan does not name %s of %s", f, n.name)
			}
		}
		if !regexp.MustCompile(`rsync -rlpt .*` + regexp.QuoteMeta(filepath.Join(m.out, n.name, "cluster.env"))).MatchString(plan) {
			t.Errorf("the plan does not rsync %s's files", n.name)
		}

		// The staged cluster.env: this node's name, the routes to the
		// others only, the persisted internal identity, and every
		// variable the unit uses.
		env := parseEnvFile(t, filepath.Join(m.out, n.name, "cluster.env"))
		var routes []string
		for j, o := range publicTopology.nodes {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://%s:6250", o.public))
			}
		}
		want := map[string]string{"NODE_NAME": n.name, "ROUTES": strings.Join(routes, ","), "INTERNAL_ID_FILE": "/opt/unibus/secrets/internal.id",
			"KV_REPLICAS": "3", "BIND": "0.0.0.0", "CLUSTER_NAME": "unibus", "DATA_DIR": "/opt/unibus/local_files",
			"CLUSTER_PASS_FILE": "/opt/unibus/secrets/cluster.pass", "CA_CERT": "/opt/unibus/tls/ca.crt"}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("%s cluster.env %s=%q, want %q", n.name, k, env[k], v)
			}
		}
		execStart(t, unit, env)
		rw := strings.Fields(strings.Join(unitDirective(t, unit, "ReadWritePaths"), " "))
		for _, p := range []string{env["DATA_DIR"], filepath.Dir(env["INTERNAL_ID_FILE"])} {
			if !slices.Contains(rw, p) {
				t.Errorf("the unit cannot write %s (ReadWritePaths %v)", p, rw)
			}
		}
		if readFile(t, filepath.Join(m.out, n.name, "membershipd-cluster.service")) != unit {
			t.Errorf("%s: the staged unit differs from the repository's", n.name)
		}
	}
	if strings.Contains(plan+r.Stderr, m.secret) {
		t.Error("the plan prints the route secret")
	}
}

// The plan follows ROUTE_NETWORK and REMOTE_SUDO.
func TestDeployClusterRouteNetworkAndSudo(t *testing.T) {
	requireTools(t, "openssl")
	t.Parallel()
	top := publicTopology
	top.routeNetwork = "wg"
	top.nodes = []node{{"a", "ubuntu@a.example.org", "192.0.2.1", "10.7.0.1"}, {"b", "b", "192.0.2.2", "10.7.0.2"}, {"c", "c", "192.0.2.3", "10.7.0.3"}}
	m := newMaterial(t, top, func(s string) string { return strings.Replace(s, "\nREMOTE_SUDO=\n", "\nREMOTE_SUDO=sudo\n", 1) })
	r := mustRun(t, m.dir, nil, "cluster/deploy-cluster.sh", m.args()...)
	if env := parseEnvFile(t, filepath.Join(m.out, "b", "cluster.env")); env["ROUTES"] != "nats://10.7.0.1:6250,nats://10.7.0.3:6250" {
		t.Errorf("ROUTE_NETWORK=wg: b's ROUTES=%q", env["ROUTES"])
	}
	for _, want := range []string{"ssh ubuntu@a.example.org sudo mkdir -p /opt/unibus/secrets", `--rsync-path sudo\ rsync`,
		"ssh ubuntu@a.example.org sudo sh -s <", "ssh b sudo systemctl enable --now"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("REMOTE_SUDO=sudo: the plan lacks %q", want)
		}
	}

	// Missing material is refused, naming what to do; nothing is staged.
	os.Remove(m.pass)
	os.RemoveAll(filepath.Join(m.out, "a"))
	r = runScript(t, m.dir, nil, "cluster/deploy-cluster.sh", m.args()...)
	if r.Code == 0 || !strings.Contains(r.Stderr, m.pass) || !strings.Contains(r.Stderr, "openssl rand") ||
		!strings.Contains(r.Stderr, "generate-cluster-certs.sh") {
		t.Errorf("missing secret and certificates: %s", r)
	}
	// A route secret made as `openssl rand -hex 32 > secrets/cluster.pass`
	// under the usual umask (0644) is set to 0600, with a warning that
	// never prints the secret; the plan goes on.
	mustRun(t, m.dir, nil, "cluster/generate-cluster-certs.sh", "--nodes", m.nodesEnv, "--out", m.out, "--ca-dir", m.tls)
	writeFile(t, m.pass, "s3cret\n", 0o644)
	r = runScript(t, m.dir, nil, "cluster/deploy-cluster.sh", m.args()...)
	if r.Code != 0 || !strings.Contains(r.Stderr, "warning: "+m.pass+" was mode 644") || !strings.Contains(r.Stdout, "DRY RUN") {
		t.Errorf("a route secret readable by others: %s", r)
	}
	if got := mode(t, m.pass); got != 0o600 {
		t.Errorf("cluster.pass left with mode %o, want 600", got)
	}
	if strings.Contains(r.Stdout+r.Stderr, "s3cret") {
		t.Error("the warning prints the route secret")
	}
}

// Must-show 2: with placeholders left in nodes.env every script refuses,
// exits non-zero and names every missing value; nothing is written.
func TestNodesEnvPlaceholdersRefused(t *testing.T) {
	requireTools(t)
	t.Parallel()
	dir := t.TempDir()
	template := readFile(t, filepath.Join(deployDir(t), "cluster", "nodes.env"))
	var names []string
	for _, line := range strings.Split(template, "\n") {
		if !strings.HasPrefix(line, "#") {
			names = append(names, regexp.MustCompile(`<[A-Z0-9_]+>`).FindAllString(line, -1)...)
		}
	}
	if len(names) < 12 {
		t.Fatalf("the template has %d placeholders: %v", len(names), names)
	}
	partial := strings.Replace(template, "<NODE1_NAME> <NODE1_SSH_HOST> <NODE1_PUBLIC_IP> <NODE1_WG_IP_OR_DASH>", "n1 n1 192.0.2.1 -", 1)
	writeFile(t, filepath.Join(dir, "partial.env"), partial, 0o644)
	out := filepath.Join(dir, "out")
	for script, extra := range map[string][]string{
		"cluster/generate-cluster-certs.sh": {"--out", out, "--ca-dir", filepath.Join(dir, "tls")},
		"cluster/deploy-cluster.sh":         {"--out", out, "--secrets", filepath.Join(dir, "secrets"), "--build", filepath.Join(dir, "build")},
	} {
		r := runScript(t, dir, nil, script, append([]string{"--nodes", filepath.Join(deployDir(t), "cluster", "nodes.env")}, extra...)...)
		if r.Code == 0 {
			t.Errorf("%s ran with placeholders left: %s", script, r)
		}
		for _, n := range names {
			if !strings.Contains(r.Stderr, n) {
				t.Errorf("%s does not name the missing %s: %s", script, n, r.Stderr)
			}
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s wrote %s before refusing", script, out)
		}
		r = runScript(t, dir, nil, script, append([]string{"--nodes", filepath.Join(dir, "partial.env")}, extra...)...)
		if r.Code == 0 || strings.Contains(r.Stderr, "<NODE1_") || !strings.Contains(r.Stderr, "<NODE3_PUBLIC_IP>") {
			t.Errorf("%s with node 1 filled in: want only the remaining placeholders named: %s", script, r)
		}
	}
}

// nodes.env is parsed, not executed, and every mistake is named at once.
func TestNodesEnvValidation(t *testing.T) {
	requireTools(t)
	t.Parallel()
	dir := t.TempDir()
	good := publicTopology.fill(t, readFile(t, filepath.Join(deployDir(t), "cluster", "nodes.env")))
	cases := []struct {
		name, from, to, want string
	}{
		{"unknown key", "\nBIND=", "\nBINDD=", "unknown key BINDD"},
		{"bad port", "\nHTTP_PORT=8470", "\nHTTP_PORT=84700", "HTTP_PORT must be a port number"},
		{"same ports", "\nNATS_PORT=4250", "\nNATS_PORT=8470", "must differ"},
		{"route network", "\nROUTE_NETWORK=public", "\nROUTE_NETWORK=mesh", "ROUTE_NETWORK must be public or wg"},
		{"wg without a WG IP", "\nROUTE_NETWORK=public", "\nROUTE_NETWORK=wg", "node 'magnus': ROUTE_NETWORK=wg needs a WG_IP"},
		{"replicas above nodes", "\nKV_REPLICAS=3", "\nKV_REPLICAS=5", "needs at least 5 nodes"},
		{"duplicate node", "NODE=homer homer", "NODE=magnus homer", "listed twice"},
		{"not an IP", "198.51.100.66", "homer.example.org", "is not an IP address"},
		{"code is not run", "\nBIND=0.0.0.0", "\nBIND=$(touch " + filepath.Join(dir, "pwned") + ")", "BIND must be"},
		{"ssh option injection", "NODE=homer homer", "NODE=homer -oProxyCommand=x", "SSH_HOST must not start with -"},
		{"missing field", "NODE=homer homer 198.51.100.66 -", "NODE=homer 198.51.100.66 -", "NODE needs four fields"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(good, tc.from) {
				t.Fatalf("the filled template lacks %q", tc.from)
			}
			f := filepath.Join(t.TempDir(), "nodes.env")
			writeFile(t, f, strings.Replace(good, tc.from, tc.to, 1), 0o644)
			r := runScript(t, dir, nil, "cluster/deploy-cluster.sh", "--nodes", f, "--out", filepath.Join(t.TempDir(), "out"))
			if r.Code == 0 || !strings.Contains(r.Stderr, tc.want) {
				t.Errorf("want a refusal naming %q: %s", tc.want, r)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Error("a value in nodes.env was executed")
	}
}
