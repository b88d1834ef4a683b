package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/wire"
)

// RouteSecret is the route secret of every test cluster (in a 0600 file,
// as the deploy script writes it); a test can look for it where it must
// not appear.
const RouteSecret = "route-secret-not-for-logs"

// healthyWait bounds WaitHealthy: a cold start on a loaded two-core
// machine has taken two minutes.
const healthyWait = 4 * time.Minute

// Cluster is a three-node membershipd cluster of real processes on
// loopback: kv store, bus-auth enforce, no bootstrap admin, routes listing
// the other nodes, the route secret in a 0600 file. Every node keeps its
// HTTP, NATS and route ports across restarts, so a client's seed list
// stays valid.
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

// HTTPURL is the node's control-plane URL.
func (n *Node) HTTPURL() string { return fmt.Sprintf("http://127.0.0.1:%d", n.HTTPPort) }

// NATSURL is the node's data-plane URL.
func (n *Node) NATSURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.NATSPort) }

// NewCluster prepares three nodes with --kv-replicas replicas (and extra
// flags on every node): their directories, ports and the route secret. It
// starts none of them (Start does). If the test fails, the end of every
// node's log is shown.
func NewCluster(t TB, replicas int, extra ...string) *Cluster {
	t.Helper()
	base := t.TempDir()
	c := &Cluster{replicas: replicas, pass: filepath.Join(base, "cluster.pass"), extra: extra}
	if err := os.WriteFile(c.pass, []byte(RouteSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ports := FreePorts(t, []string{"127.0.0.1"}, 9)
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		dir := filepath.Join(base, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		c.Nodes = append(c.Nodes, &Node{Name: name, Dir: dir, HTTPPort: ports[3*i], NATSPort: ports[3*i+1], RoutePort: ports[3*i+2]})
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.logTails(t)
		}
	})
	return c
}

// StartCluster starts three nodes together (see NewCluster) and waits
// until every node is healthy.
func StartCluster(t TB, replicas int, extra ...string) *Cluster {
	t.Helper()
	c := NewCluster(t, replicas, extra...)
	for i := range c.Nodes {
		c.Start(t, i)
	}
	c.WaitHealthy(t, 0, 1, 2)
	return c
}

// logTails logs the end of every started node's log, without the route
// retries of nodes waiting for their peers.
func (c *Cluster) logTails(t TB) {
	for _, n := range c.Nodes {
		if n.Bus == nil {
			continue
		}
		var lines []string
		for _, l := range strings.Split(n.Bus.Output(), "\n") {
			if !strings.Contains(l, "Error trying to connect to route") {
				lines = append(lines, l)
			}
		}
		t.Logf("--- %s (last lines of its log, route retries left out):\n%s", n.Name, tail(strings.Join(lines, "\n"), 80))
	}
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

// Start (re)starts node i on its ports and state and waits until it is
// ready; it does not wait for the cluster to be healthy.
func (c *Cluster) Start(t TB, i int) {
	t.Helper()
	c.Nodes[i].Bus = StartBus(t, c.Nodes[i].Dir, c.args(i)...)
}

// Kill SIGKILLs node i and waits until the process is gone.
func (c *Cluster) Kill(i int) { c.Nodes[i].Bus.Kill() }

// Healthy reports whether node i answers /healthz with 200.
func (c *Cluster) Healthy(i int) bool {
	code, _ := Health(c.Nodes[i].HTTPURL())
	return code == http.StatusOK
}

// WaitHealthy waits (up to 4 minutes) until every listed node answers
// /healthz with 200.
func (c *Cluster) WaitHealthy(t TB, nodes ...int) {
	t.Helper()
	EventuallyNoError(t, healthyWait, func() error {
		for _, i := range nodes {
			if !c.Healthy(i) {
				return fmt.Errorf("%s not healthy:\n%s", c.Nodes[i].Name, tail(c.Nodes[i].Bus.Output(), 40))
			}
		}
		return nil
	}, "nodes %v healthy", nodes)
}

// Health reads /healthz of the server at base: its status code (0 when it
// does not answer) and what it reports.
func Health(base string) (int, wire.Health) {
	hc := http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(base + "/healthz")
	if err != nil {
		return 0, wire.Health{}
	}
	defer resp.Body.Close()
	var h wire.Health
	json.NewDecoder(resp.Body).Decode(&h)
	return resp.StatusCode, h
}

// SeedsHTTP is every node's control-plane URL, in node order.
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
// --store kv` (the live path an operator uses for the first admin),
// retrying for up to 90 s while the buckets' leaders are still elected.
func (c *Cluster) AddUser(t TB, i int, handle, role string, id *identity.Identity) {
	t.Helper()
	n := c.Nodes[i]
	EventuallyNoError(t, 90*time.Second, func() error {
		r := Run(t, n.Dir, nil, "", "membershipd", "user", "add", "--store", "kv", "--nats-url", n.NATSURL(),
			"--handle", handle, "--role", role, "--sign-pub", id.SignPub().String())
		if r.Code == 0 || strings.Contains(r.Stderr, "already registered") {
			return nil
		}
		return errors.New(r.String())
	}, "user add %s through %s", handle, n.Name)
}

// InternalConn logs in to node i as that node's internal identity: into
// the control account when account is "", else into the account named
// (natsnode.BusAccount: the room streams).
func (c *Cluster) InternalConn(t TB, i int, account string) *nats.Conn {
	t.Helper()
	n := c.Nodes[i]
	id, err := identity.Load(filepath.Join(n.Dir, "local_files", "internal.id"))
	if err != nil {
		t.Fatal(err)
	}
	opts := []nats.Option{nats.Nkey(id.NKey(), id.SignNonce), nats.Name("test-internal"), nats.Timeout(10 * time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	if account != "" {
		opts = append(opts, nats.UserInfo(account, ""))
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
	req := map[string]any{"user": nkey, "auth": true, "state": 0}
	return WhereConnected(nc, "$SYS.REQ.ACCOUNT.PING.CONNZ", req, nkey, 0, time.Second)
}

// WhereConnected publishes the connection request req (a CONNZ filter) on
// subject through nc and returns the names of the servers whose answer
// lists a connection authorized as nkey. It reads answers until max have
// come (0: no limit) or none came for wait.
func WhereConnected(nc *nats.Conn, subject string, req any, nkey string, max int, wait time.Duration) ([]string, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if err := nc.PublishRequest(subject, inbox, body); err != nil {
		return nil, err
	}
	var where []string
	for n := 0; max == 0 || n < max; n++ {
		m, err := sub.NextMsg(wait)
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
