package deploytest

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// opensslVerifies reports whether `openssl verify` accepts cert under ca
// alone.
func opensslVerifies(t *testing.T, ca, cert string) bool {
	t.Helper()
	out, err := exec.Command("openssl", "verify", "-no-CApath", "-CAfile", ca, cert).CombinedOutput()
	if err == nil && !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify exited 0 without OK: %s", out)
	}
	return err == nil
}

func parseCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(readFile(t, path)))
	if block == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// checkSANs fails unless cert names every IP and DNS name in want.
func checkSANs(t *testing.T, path string, want ...string) {
	t.Helper()
	c := parseCert(t, path)
	for _, w := range want {
		if ip := net.ParseIP(w); ip != nil {
			if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
				t.Errorf("%s: no IP SAN %s (has %v)", path, w, c.IPAddresses)
			}
		} else if !slices.Contains(c.DNSNames, w) {
			t.Errorf("%s: no DNS SAN %s (has %v)", path, w, c.DNSNames)
		}
	}
}

func checkUsage(t *testing.T, path string, want ...x509.ExtKeyUsage) {
	t.Helper()
	c := parseCert(t, path)
	if c.IsCA || !slices.Equal(c.ExtKeyUsage, want) {
		t.Errorf("%s: IsCA=%v ExtKeyUsage=%v, want a leaf with %v", path, c.IsCA, c.ExtKeyUsage, want)
	}
}

// Must-show 3, single node: the client CA and the server certificate
// verify with openssl, the server names 127.0.0.1 and what it was asked
// for, and a second run never replaces the CA unless --force.
func TestGenerateCerts(t *testing.T) {
	requireTools(t, "openssl")
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "tls")
	args := []string{"--out", out, "--name", "bus1", "--san", "203.0.113.10", "--san", "bus.example.org"}
	r := mustRun(t, dir, nil, "tls/generate-certs.sh", args...)
	ca, crt := filepath.Join(out, "ca.crt"), filepath.Join(out, "server.crt")
	if !opensslVerifies(t, ca, crt) {
		t.Fatalf("server.crt does not verify against ca.crt\n%s", r)
	}
	if c := parseCert(t, ca); !c.IsCA || !c.MaxPathLenZero {
		t.Errorf("ca.crt: IsCA=%v pathlen0=%v", c.IsCA, c.MaxPathLenZero)
	}
	checkSANs(t, crt, "127.0.0.1", "::1", "localhost", "bus1", "203.0.113.10", "bus.example.org")
	checkUsage(t, crt, x509.ExtKeyUsageServerAuth)
	for _, key := range []string{"ca.key", "server.key"} {
		if m := mode(t, filepath.Join(out, key)); m != 0o600 {
			t.Errorf("%s is mode %o, want 600", key, m)
		}
	}

	caBefore, crtBefore := readFile(t, ca), readFile(t, crt)
	r = mustRun(t, dir, nil, "tls/generate-certs.sh", args...)
	if readFile(t, ca) != caBefore || readFile(t, crt) != crtBefore {
		t.Fatalf("a second run changed the CA or a current server certificate\n%s", r)
	}
	if !strings.Contains(r.Stdout, "keeping the client CA") {
		t.Errorf("a second run does not say it keeps the CA:\n%s", r)
	}
	// New names: a new server certificate, the same CA.
	r = mustRun(t, dir, nil, "tls/generate-certs.sh", append(args, "--san", "198.51.100.7")...)
	if readFile(t, ca) != caBefore || readFile(t, crt) == crtBefore {
		t.Fatalf("adding a --san must re-issue the server certificate under the same CA\n%s", r)
	}
	checkSANs(t, crt, "198.51.100.7", "203.0.113.10")

	// --force replaces the CA, keeps the old one aside, re-issues.
	r = mustRun(t, dir, nil, "tls/generate-certs.sh", append(args, "--force")...)
	if readFile(t, ca) == caBefore {
		t.Fatalf("--force kept the CA\n%s", r)
	}
	if !opensslVerifies(t, ca, crt) {
		t.Fatalf("after --force the server certificate does not verify against the new CA\n%s", r)
	}
	old, _ := filepath.Glob(filepath.Join(out, "ca.crt.*"))
	if len(old) != 1 || readFile(t, old[0]) != caBefore || opensslVerifies(t, old[0], crt) {
		t.Errorf("the old CA is not kept aside, or still signs the new certificate: %v", old)
	}
}

// Must-show 3, cluster: route certificates verify against the route CA
// and not the client CA; data-plane certificates against the client CA and
// not the route CA; --force rotates the route CA (and only the route
// certificates).
func TestGenerateClusterCerts(t *testing.T) {
	requireTools(t, "openssl")
	t.Parallel()
	dir := t.TempDir()
	mustRun(t, dir, nil, "tls/generate-certs.sh", "--out", filepath.Join(dir, "tls"), "--no-host-names", "--name", "ca-host")
	top := topology{httpPort: 8470, natsPort: 4250, clusterPort: 6250, routeNetwork: "wg", bind: "0.0.0.0", nodes: []node{
		{"alpha", "root@alpha.example.org", "192.0.2.10", "10.8.0.1"},
		{"beta", "beta", "192.0.2.11", "10.8.0.2"},
		{"gamma", "ops@192.0.2.12", "192.0.2.12", "10.8.0.3"},
	}}
	nodesEnv := filepath.Join(dir, "nodes.env")
	writeFile(t, nodesEnv, top.fill(t, readFile(t, filepath.Join(deployDir(t), "cluster", "nodes.env"))), 0o644)
	out := filepath.Join(dir, "out")
	gen := []string{"--nodes", nodesEnv, "--out", out, "--ca-dir", filepath.Join(dir, "tls")}
	mustRun(t, dir, nil, "cluster/generate-cluster-certs.sh", gen...)

	clientCA, routeCA := filepath.Join(dir, "tls", "ca.crt"), filepath.Join(out, "ca", "route-ca.crt")
	if readFile(t, clientCA) == readFile(t, routeCA) {
		t.Fatal("the route CA is the client CA")
	}
	check := func(t *testing.T, routeCA string) {
		for _, n := range top.nodes {
			tls := filepath.Join(out, n.name, "tls")
			route, server := filepath.Join(tls, "route.crt"), filepath.Join(tls, "server.crt")
			if !opensslVerifies(t, routeCA, route) {
				t.Errorf("%s: route.crt does not verify against the route CA", n.name)
			}
			if opensslVerifies(t, clientCA, route) {
				t.Errorf("%s: route.crt verifies against the client CA", n.name)
			}
			if !opensslVerifies(t, clientCA, server) {
				t.Errorf("%s: server.crt does not verify against the client CA", n.name)
			}
			if opensslVerifies(t, routeCA, server) {
				t.Errorf("%s: server.crt verifies against the route CA", n.name)
			}
			// The copies each node gets are the CAs themselves.
			if readFile(t, filepath.Join(tls, "route-ca.crt")) != readFile(t, routeCA) || readFile(t, filepath.Join(tls, "ca.crt")) != readFile(t, clientCA) {
				t.Errorf("%s: the CA copies in tls/ differ from the CAs", n.name)
			}
			checkSANs(t, route, n.name, n.public, n.wg)
			checkUsage(t, route, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
			checkSANs(t, server, "127.0.0.1", "::1", "localhost", n.name, n.public, n.wg)
			checkUsage(t, server, x509.ExtKeyUsageServerAuth)
			for _, key := range []string{"route.key", "server.key"} {
				if m := mode(t, filepath.Join(tls, key)); m != 0o600 {
					t.Errorf("%s/%s is mode %o, want 600", n.name, key, m)
				}
			}
		}
	}
	check(t, routeCA)
	checkSANs(t, filepath.Join(out, "alpha", "tls", "server.crt"), "alpha.example.org")

	routeBefore := readFile(t, routeCA)
	alphaServer := readFile(t, filepath.Join(out, "alpha", "tls", "server.crt"))
	alphaRoute := readFile(t, filepath.Join(out, "alpha", "tls", "route.crt"))
	r := mustRun(t, dir, nil, "cluster/generate-cluster-certs.sh", gen...)
	if readFile(t, routeCA) != routeBefore || readFile(t, filepath.Join(out, "alpha", "tls", "route.crt")) != alphaRoute {
		t.Fatalf("a second run changed the route CA or a current certificate\n%s", r)
	}

	r = mustRun(t, dir, nil, "cluster/generate-cluster-certs.sh", append(gen, "--force")...)
	if readFile(t, routeCA) == routeBefore || readFile(t, filepath.Join(out, "alpha", "tls", "route.crt")) == alphaRoute {
		t.Fatalf("--force did not rotate the route CA and its certificates\n%s", r)
	}
	if readFile(t, filepath.Join(out, "alpha", "tls", "server.crt")) != alphaServer {
		t.Errorf("rotating the route CA re-issued a data-plane certificate")
	}
	check(t, routeCA)
	old, _ := filepath.Glob(filepath.Join(out, "ca", "route-ca.crt.*"))
	if len(old) != 1 || opensslVerifies(t, old[0], filepath.Join(out, "beta", "tls", "route.crt")) {
		t.Errorf("the old route CA is not kept aside, or still signs the new route certificates: %v", old)
	}

	// The scripts refuse a missing client CA, naming the step that makes it.
	r = runScript(t, dir, nil, "cluster/generate-cluster-certs.sh", "--nodes", nodesEnv, "--out", filepath.Join(dir, "out2"), "--ca-dir", filepath.Join(dir, "nope"))
	if r.Code == 0 || !strings.Contains(r.Stderr, "generate-certs.sh") {
		t.Errorf("without a client CA: %s", r)
	}
}
