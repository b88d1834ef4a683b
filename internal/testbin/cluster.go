package testbin

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/natsnode"
)

// Cluster is a three-node membershipd cluster of real processes on
// loopback: kv store, bus-auth enforce, routes listing the other nodes, the
// route secret in a 0600 file. Every node keeps its HTTP, NATS and route
// ports across restarts, so a client's seed list stays valid.
type Cluster struct {
	Nodes    []*Node
	replicas int
	pass     string
	extra    []string
}

// Node is one member of a Cluster.
type Node struct {
	Name                          string
	Dir                           string // working directory; state in Dir/local_files
	HTTPPort, NATSPort, RoutePort int
	Bus                           *Bus // the running process (nil before Start)
}

// HTTPURL and NATSURL are the node's fixed addresses.
func (n *Node) HTTPURL() string { return fmt.Sprintf("http://127.0.0.1:%d", n.HTTPPort) }

// NATSURL is the node's data-plane URL.
func (n *Node) NATSURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.NATSPort) }

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// StartCluster starts three nodes together with --kv-replicas replicas
// (and extra flags on every node), and waits until every node is healthy.
func StartCluster(t testing.TB, replicas int, extra ...string) *Cluster {
	t.Helper()
	base := t.TempDir()
	c := &Cluster{replicas: replicas, pass: filepath.Join(base, "cluster.pass"), extra: extra}
	if err := os.WriteFile(c.pass, []byte("route-secret-not-for-logs\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		dir := filepath.Join(base, fmt.Sprintf("n%d", i+1))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		c.Nodes = append(c.Nodes, &Node{Name: fmt.Sprintf("n%d", i+1), Dir: dir,
			HTTPPort: FreePort(t), NATSPort: FreePort(t), RoutePort: FreePort(t)})
	}
	for i := range c.Nodes {
		c.Start(t, i)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range c.Nodes {
			if n.Bus != nil {
				var lines []string
				for _, l := range strings.Split(n.Bus.Stderr(), "\n") {
					if !strings.Contains(l, "Error trying to connect to route") {
						lines = append(lines, l)
					}
				}
				t.Logf("--- %s (last lines of its log, route retries left out):\n%s", n.Name, tail(strings.Join(lines, "\n"), 80))
			}
		}
	})
	c.WaitHealthy(t, 0, 1, 2)
	return c
}

// args are node i's flags: routes to the other nodes, fixed ports.
func (c *Cluster) args(i int) []string {
	var routes []string
	for j, o := range c.Nodes {
		if j != i {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", o.RoutePort))
		}
	}
	n := c.Nodes[i]
	return append([]string{"--store", "kv", "--kv-replicas", strconv.Itoa(c.replicas), "--no-bootstrap",
		"--http-port", strconv.Itoa(n.HTTPPort), "--nats-port", strconv.Itoa(n.NATSPort),
		"--cluster-name", "unibus-test", "--node-name", n.Name,
		"--cluster-port", strconv.Itoa(n.RoutePort), "--routes", strings.Join(routes, ","),
		"--cluster-pass-file", c.pass}, c.extra...)
}

// Start (re)starts node i on its ports and state; it does not wait for
// the cluster to be healthy.
func (c *Cluster) Start(t testing.TB, i int) {
	t.Helper()
	c.Nodes[i].Bus = StartBus(t, c.Nodes[i].Dir, c.args(i)...)
}

// Kill SIGKILLs node i and waits until the process is gone.
func (c *Cluster) Kill(i int) { c.Nodes[i].Bus.Kill() }

// Healthy reports whether node i answers /healthz with 200.
func (c *Cluster) Healthy(i int) bool {
	hc := http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(c.Nodes[i].HTTPURL() + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitHealthy waits (up to 4 minutes: a cold start on a loaded two-core
// machine has taken two) until every listed node answers /healthz with 200.
func (c *Cluster) WaitHealthy(t testing.TB, nodes ...int) {
	t.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	for _, i := range nodes {
		for !c.Healthy(i) {
			if time.Now().After(deadline) {
				t.Fatalf("%s not healthy after 4 minutes:\n%s", c.Nodes[i].Name, tail(c.Nodes[i].Bus.Stderr(), 40))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// SeedsHTTP and SeedsNATS are every node's URLs, in node order.
func (c *Cluster) SeedsHTTP() []string {
	var s []string
	for _, n := range c.Nodes {
		s = append(s, n.HTTPURL())
	}
	return s
}

// SeedsNATS is every node's data-plane URL, in node order.
func (c *Cluster) SeedsNATS() []string {
	var s []string
	for _, n := range c.Nodes {
		s = append(s, n.NATSURL())
	}
	return s
}

// AddUser registers a user through node i with `membershipd user add
// --store kv` (the live path an operator uses for the first admin).
func (c *Cluster) AddUser(t testing.TB, i int, handle, role string, id *identity.Identity) {
	t.Helper()
	n := c.Nodes[i]
	var r Result
	deadline := time.Now().Add(90 * time.Second)
	for {
		r = Run(t, n.Dir, nil, "", "membershipd", "user", "add", "--store", "kv", "--nats-url", n.NATSURL(),
			"--handle", handle, "--role", role, "--sign-pub", id.SignPub().String())
		// Right after a start the buckets' leaders may still be electing.
		if r.Code == 0 || strings.Contains(r.Stderr, "already registered") || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if r.Code != 0 {
		t.Fatalf("user add %s through %s: %+v", handle, n.Name, r)
	}
}

// InternalConn logs in to node i as that node's internal identity: into
// the control account, or with bus into the bus account (room streams).
func (c *Cluster) InternalConn(t testing.TB, i int, bus bool) *nats.Conn {
	t.Helper()
	n := c.Nodes[i]
	id, err := identity.Load(filepath.Join(n.Dir, "local_files", "internal.id"))
	if err != nil {
		t.Fatal(err)
	}
	opts := []nats.Option{nats.Nkey(id.NKey(), id.SignNonce), nats.Name("test-internal"), nats.Timeout(10 * time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	if bus {
		opts = append(opts, natsnode.BusLogin())
	}
	nc, err := nats.Connect(n.NATSURL(), opts...)
	if err != nil {
		t.Fatalf("internal login to %s: %v", n.Name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Where returns the names of the nodes that hold a live data-plane
// connection of the user nkey, asking every node through nc (an internal
// bus-account connection from InternalConn) for its connections in the bus
// account.
func Where(nc *nats.Conn, nkey string) ([]string, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	req, _ := json.Marshal(map[string]any{"user": nkey, "auth": true, "state": 0})
	if err := nc.PublishRequest("$SYS.REQ.ACCOUNT.PING.CONNZ", inbox, req); err != nil {
		return nil, err
	}
	var where []string
	for {
		m, err := sub.NextMsg(time.Second)
		if err != nil {
			break
		}
		var resp struct {
			Server struct {
				Name string `json:"name"`
			} `json:"server"`
			Data struct {
				Conns []struct {
					User string `json:"authorized_user"`
				} `json:"connections"`
			} `json:"data"`
		}
		if json.Unmarshal(m.Data, &resp) != nil {
			continue
		}
		for _, cn := range resp.Data.Conns {
			if cn.User == nkey {
				where = append(where, resp.Server.Name)
				break
			}
		}
	}
	return where, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
