package faults

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sys/unix"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/testpki"
	"github.com/unibus/unibus/wire"
)

// netCluster is a three-node cluster whose nodes each run in a network
// namespace of their own, joined by a bridge in the test's namespace:
// unplugging a node's cable (its veth) partitions it while its process
// stays up, which a process kill cannot show.
type netCluster struct {
	sfx    string
	subnet string // "10.77.N"
	nodes  []*netNode
	ca     *testpki.CA
	caFile string
}

type netNode struct {
	name, ns, veth, ip, dir string
	bus                     *harness.Bus
}

const (
	partHTTPPort  = 18471
	partNATSPort  = 14251
	partRoutePort = 16251
)

func (n *netNode) httpURL() string { return fmt.Sprintf("https://%s:%d", n.ip, partHTTPPort) }
func (n *netNode) natsURL() string { return fmt.Sprintf("tls://%s:%d", n.ip, partNATSPort) }

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	run(t, "ip", args...)
}

// newNetCluster makes the namespaces, the bridge, the certificates (a
// data-plane CA and a route CA) and starts the three nodes.
func newNetCluster(t *testing.T) *netCluster {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("partitions need iproute2's ip")
	}
	var b [3]byte
	rand.Read(b[:])
	c := &netCluster{sfx: hex.EncodeToString(b[:2]), subnet: fmt.Sprintf("10.77.%d", 1+int(b[2])%250)}
	br := "ubbr" + c.sfx
	ipCmd(t, "link", "add", br, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "del", br).Run() })
	ipCmd(t, "addr", "add", c.subnet+".1/24", "dev", br)
	ipCmd(t, "link", "set", br, "up")
	work := t.TempDir()
	c.ca = testpki.NewCA(t, "unibus-data")
	rca := testpki.NewCA(t, "unibus-routes")
	c.caFile = c.ca.WriteCert(t, work, "ca")
	rcaFile := rca.WriteCert(t, work, "route-ca")
	pass := filepath.Join(work, "cluster.pass")
	if err := os.WriteFile(pass, []byte("partition-test-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		n := &netNode{name: fmt.Sprintf("n%d", i+1), ns: fmt.Sprintf("ubns%s%d", c.sfx, i+1), veth: fmt.Sprintf("ubv%s%d", c.sfx, i+1),
			ip: fmt.Sprintf("%s.%d", c.subnet, 11+i), dir: filepath.Join(work, fmt.Sprintf("n%d", i+1))}
		ipCmd(t, "netns", "add", n.ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n.ns).Run() })
		ipCmd(t, "link", "add", n.veth, "type", "veth", "peer", "name", "eth0", "netns", n.ns)
		ipCmd(t, "link", "set", n.veth, "master", br, "up")
		ipCmd(t, "-n", n.ns, "addr", "add", n.ip+"/24", "dev", "eth0")
		ipCmd(t, "-n", n.ns, "link", "set", "eth0", "up")
		ipCmd(t, "-n", n.ns, "link", "set", "lo", "up")
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	bin := filepath.Join(harness.Build(t), "membershipd")
	for i, n := range c.nodes {
		cert, key := testpki.WriteFiles(t, n.dir, "tls", c.ca.Server(t, n.name, []net.IP{net.ParseIP(n.ip)}, nil))
		rcert, rkey := testpki.WriteFiles(t, n.dir, "route", rca.Server(t, n.name, []net.IP{net.ParseIP(n.ip)}, nil))
		var routes []string
		for j, o := range c.nodes {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://%s:%d", o.ip, partRoutePort))
			}
		}
		args := []string{"netns", "exec", n.ns, bin,
			"--bind", n.ip, "--http-port", fmt.Sprint(partHTTPPort), "--nats-port", fmt.Sprint(partNATSPort),
			"--cluster-port", fmt.Sprint(partRoutePort), "--cluster-name", "unibus-partition", "--node-name", n.name,
			"--routes", strings.Join(routes, ","), "--cluster-pass-file", pass,
			"--store", "kv", "--kv-replicas", "3", "--no-bootstrap", "--log-format", "json",
			"--tls-cert", cert, "--tls-key", key, "--route-tls-cert", rcert, "--route-tls-key", rkey, "--route-tls-ca", rcaFile}
		n.bus = harness.LaunchBus(t, "ip", n.dir, nil, args...)
	}
	harness.EventuallyNoError(t, 4*time.Minute, func() error {
		for _, n := range c.nodes {
			if code, h := c.health(n); code != http.StatusOK {
				return fmt.Errorf("%s: %d %s", n.name, code, h.Error)
			}
		}
		return nil
	}, "three nodes in namespaces healthy")
	return c
}

// health reads a node's /healthz.
func (c *netCluster) health(n *netNode) (int, wire.Health) {
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.ca.Pool}}}
	var h wire.Health
	resp, err := hc.Get(n.httpURL() + "/healthz")
	if err != nil {
		return 0, h
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&h)
	return resp.StatusCode, h
}

// config is a client configuration seeded with the given nodes.
func (c *netCluster) config(id *identity.Identity, nodes ...*netNode) client.Config {
	cfg := client.Config{Identity: id, RootCAs: c.ca.Pool}
	for _, n := range nodes {
		cfg.Servers = append(cfg.Servers, n.httpURL())
		cfg.NATS = append(cfg.NATS, n.natsURL())
	}
	return cfg
}

// inNetns runs f on a thread in the network namespace ns: the sockets it
// makes live there (nats.Connect dials on the caller's goroutine).
func inNetns(t *testing.T, ns string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatalf("enter %s: %v", ns, err)
	}
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			panic(fmt.Sprintf("cannot return to the test's network namespace: %v", err)) // the thread must not be reused
		}
	}()
	f()
}

// unplug and plug take a node's cable out and put it back.
func (c *netCluster) unplug(t *testing.T, n *netNode) { ipCmd(t, "link", "set", n.veth, "down") }
func (c *netCluster) plug(t *testing.T, n *netNode)   { ipCmd(t, "link", "set", n.veth, "up") }

// TestPartitionRevocation partitions the node a member is connected to
// and revokes the member on the majority. The cut-off node fails closed:
// it closes the member's connection on its own, although it cannot know
// of the revocation; once the cable is back it learns the revocation and
// refuses the member (401) — measured, and bounded by the test.
func TestPartitionRevocation(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("three-node cluster in network namespaces")
	}
	c := newNetCluster(t)
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	root, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	harness.EventuallyNoError(t, 90*time.Second, func() error {
		r := harness.Run(t, n1.dir, nil, "", "membershipd", "user", "add", "--store", "kv", "--nats-url", n1.natsURL(), "--ca", c.caFile,
			"--handle", "root", "--role", "admin", "--sign-pub", root.SignPub().String())
		if r.Code == 0 || strings.Contains(r.Stderr, "already registered") {
			return nil
		}
		return errors.New(r.String())
	}, "add the admin")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin, err := client.Dial(ctx, c.config(root, n1, n2))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	mallory, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddUser(ctx, "mallory", mallory.SignPub().String(), client.RoleMember); err != nil {
		t.Fatal(err)
	}
	// mallory's data-plane connection is on n3, from n3's side of the
	// cable (its socket is made in n3's namespace): it stays up when n3
	// is cut off from the others, so what closes it is n3.
	closed := make(chan time.Time, 1)
	var nc *nats.Conn
	inNetns(t, n3.ns, func() {
		nc, err = nats.Connect(n3.natsURL(), nats.Nkey(mallory.NKey(), mallory.SignNonce), nats.Secure(&tls.Config{RootCAs: c.ca.Pool}),
			nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { closed <- time.Now() }))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	cut := time.Now()
	c.unplug(t, n3)
	// The buckets' leaders may have been on n3: until the majority elects
	// new ones, a change is answered 503 outcome_unknown (it may have been
	// applied), and retried — a revocation is idempotent.
	unknown := 0
	harness.EventuallyNoError(t, time.Minute, func() error {
		_, err := admin.RevokeUser(ctx, "mallory")
		if client.IsCode(err, wire.CodeOutcomeUnknown) {
			unknown++
		}
		return err
	}, "revoke on the majority during the partition")
	revoked := time.Now()
	t.Logf("revocation answered %v after the cable was pulled (%d answers of outcome_unknown before)", revoked.Sub(cut).Round(time.Millisecond), unknown)
	var fenced time.Duration
	select {
	case at := <-closed:
		fenced = at.Sub(cut)
	case <-time.After(60 * time.Second):
		t.Fatal("the cut-off node kept the revoked member's connection open for 60 s")
	}
	t.Logf("partition: n3 closed the member's connection %v after its cable was pulled (the revocation on the majority %v after)", fenced.Round(100*time.Millisecond), revoked.Sub(cut).Round(time.Millisecond))
	// While cut off, n3 lets nobody in: a login of mallory's is refused.
	inNetns(t, n3.ns, func() {
		_, err = nats.Connect(n3.natsURL(), nats.Nkey(mallory.NKey(), mallory.SignNonce), nats.Secure(&tls.Config{RootCAs: c.ca.Pool}), nats.NoReconnect())
	})
	if err == nil {
		t.Error("the cut-off node let the revoked member log in")
	}

	// Cable back: n3 learns the revocation and refuses mallory's signed
	// requests (401, not 503).
	plugged := time.Now()
	c.plug(t, n3)
	// Across the heal — while n3 finds its routes, its quorum and the
	// store again — the revoked member is never let in: every login is
	// refused, first for want of a quorum, then by the store.
	logins := 0
	var healthyAt time.Duration // when n3's /healthz first said 200 after the cable was back
	for time.Since(plugged) < 6*time.Second {
		if code, _ := c.health(n3); code == http.StatusOK && healthyAt == 0 {
			healthyAt = time.Since(plugged)
		}
		var lerr error
		var lnc *nats.Conn
		inNetns(t, n3.ns, func() {
			lnc, lerr = nats.Connect(n3.natsURL(), nats.Nkey(mallory.NKey(), mallory.SignNonce), nats.Secure(&tls.Config{RootCAs: c.ca.Pool}),
				nats.NoReconnect(), nats.Timeout(2*time.Second))
		})
		if lerr == nil {
			lnc.Close()
			t.Fatalf("n3 let the member revoked during the partition log in %v after the cable was back", time.Since(plugged).Round(time.Millisecond))
		}
		logins++
		time.Sleep(100 * time.Millisecond) // the pace of the attempts, not a wait for a state
	}
	t.Logf("healing: %d logins of the revoked member in the 6 s after the cable was back, every one refused", logins)
	tag := ""
	harness.EventuallyNoError(t, 2*time.Minute, func() error {
		code, h := c.health(n3)
		if code != http.StatusOK {
			return fmt.Errorf("n3 %d %s", code, h.Error)
		}
		tag = wire.DeploymentTag(h.Deployment)
		return nil
	}, "n3 healthy after the cable is back")
	if healthyAt == 0 {
		healthyAt = time.Since(plugged)
	}
	harness.EventuallyNoError(t, time.Minute, func() error {
		req, _ := http.NewRequest("GET", n3.httpURL()+"/v1/me", nil)
		s := &httpsig.Signer{KeyID: mallory.SignPub().String(), Key: mallory.SigningKey(), Tag: tag}
		if err := s.Sign(req, nil); err != nil {
			return err
		}
		hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.ca.Pool}}}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			return fmt.Errorf("n3 answered the revoked member %d", resp.StatusCode)
		}
		return nil
	}, "n3 refusing the revoked member after the partition healed")
	t.Logf("healed: n3 healthy %v after the cable was back; its signed requests refused the revoked member (401) %v after", healthyAt.Round(100*time.Millisecond), time.Since(plugged).Round(100*time.Millisecond))
}
