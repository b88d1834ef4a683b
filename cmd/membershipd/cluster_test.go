package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/testbin"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// node is one member of a test cluster.
type node struct {
	name, dir string
	routePort int
	bus       *testbin.Bus
}

// clusterArgs are a node's flags: the routes list only the other nodes
// (what the deploy script writes), the secret comes from a 0600 file.
func clusterArgs(t *testing.T, nodes []*node, i int, passFile string) []string {
	var routes []string
	for j, o := range nodes {
		if j != i {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", o.routePort))
		}
	}
	return []string{"--store", "kv", "--kv-replicas", "3", "--no-bootstrap",
		"--cluster-name", "unibus-test", "--node-name", nodes[i].name,
		"--cluster-port", strconv.Itoa(nodes[i].routePort), "--routes", strings.Join(routes, ","),
		"--cluster-pass-file", passFile}
}

func newCluster(t *testing.T) ([]*node, string) {
	base := t.TempDir()
	pass := filepath.Join(base, "cluster.pass")
	if err := os.WriteFile(pass, []byte("route-secret-not-for-logs\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var nodes []*node
	for i := range 3 {
		dir := filepath.Join(base, fmt.Sprintf("n%d", i+1))
		os.MkdirAll(dir, 0o700)
		nodes = append(nodes, &node{name: fmt.Sprintf("n%d", i+1), dir: dir, routePort: freePort(t)})
	}
	return nodes, pass
}

func health(url string) (int, wire.Health) {
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		return 0, wire.Health{}
	}
	defer resp.Body.Close()
	var h wire.Health
	json.NewDecoder(resp.Body).Decode(&h)
	return resp.StatusCode, h
}

func waitHealthy(t *testing.T, nodes ...*node) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for _, n := range nodes {
		for {
			code, h := health(n.bus.HTTPURL)
			if code == 200 {
				break
			}
			if time.Now().After(deadline) {
				for _, o := range nodes {
					t.Logf("--- %s route log:", o.name)
					for _, l := range strings.Split(o.bus.Stderr(), "\n") {
						if strings.Contains(l, "oute") && !strings.Contains(l, "Waiting for routing") {
							t.Log(l)
						}
					}
				}
				t.Fatalf("%s not healthy: %d %+v", n.name, code, h)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// TestClusterColdStartReplayAndRevocation, with real processes on loopback: a lone node of a
// three-node cluster stays 503 (no meta leader), the cluster turns healthy
// once the others start, the first admin is added live with R3 buckets
// reported HA, a request replayed on another node is refused, and a
// revocation taken on node 1 closes the user's connection on node 3.
func TestClusterColdStartReplayAndRevocation(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	nodes, pass := newCluster(t)
	nodes[0].bus = testbin.StartBus(t, nodes[0].dir, clusterArgs(t, nodes, 0, pass)...)
	// Alone, node 1 has no meta leader: 503, with the reason.
	for range 10 {
		code, h := health(nodes[0].bus.HTTPURL)
		if code != http.StatusServiceUnavailable || h.Posture.MetaLeader != "" || !h.Posture.Cluster {
			t.Fatalf("lone node: %d %+v, want 503 without a meta leader", code, h)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i := 1; i < 3; i++ {
		nodes[i].bus = testbin.StartBus(t, nodes[i].dir, clusterArgs(t, nodes, i, pass)...)
	}
	waitHealthy(t, nodes...)
	_, h := health(nodes[2].bus.HTTPURL)
	if h.Posture.Peers != 3 || h.Posture.KVReplicas != 3 || h.Posture.Store != "kv" || h.Posture.BusAuth != "enforce" {
		t.Errorf("posture of node 3: %+v", h.Posture)
	}
	for _, n := range nodes {
		if strings.Contains(n.bus.Stderr(), "route-secret-not-for-logs") {
			t.Errorf("%s logged the route secret", n.name)
		}
	}

	// The first admin, added live through node 1's internal identity.
	root, bob := newID(t, nodes[0].dir, "root"), newID(t, nodes[0].dir, "bob")
	kv1 := []string{"--store", "kv", "--nats-url", nodes[0].bus.NATSURL}
	r := testbin.Run(t, nodes[0].dir, nil, "", "membershipd", append([]string{"user", "add", "--handle", "root", "--role", "admin", "--sign-pub", root.SignPub().String()}, kv1...)...)
	if r.Code != 0 || !regexp.MustCompile(`KV_UNIBUS_users: leader=n\d followers_current=2/2 msgs=\d+ \(replicated, HA\)`).MatchString(r.Stdout) {
		t.Fatalf("user add --store kv on a healthy R3 cluster: %+v", r)
	}
	r = testbin.Run(t, nodes[0].dir, nil, "", "membershipd", append([]string{"user", "add", "--handle", "bob", "--sign-pub", bob.SignPub().String()}, kv1...)...)
	if r.Code != 0 {
		t.Fatalf("add bob: %+v", r)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dial := func(id *identity.Identity, n *node) *client.Client {
		c, err := client.Dial(ctx, client.Config{Identity: id, Servers: []string{n.bus.HTTPURL}, NATS: []string{n.bus.NATSURL}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	admin := dial(root, nodes[1])
	dial(bob, nodes[2])
	room, err := admin.CreateRoom(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.AddMember(ctx, room.ID, "bob", "member"); err != nil {
		t.Fatal(err)
	}

	// A signed request accepted by node 1 is a replay on node 2.
	body := []byte(`{"name":"replayed"}`)
	req := signedRequest(t, nodes[0].bus.HTTPURL, "POST", "/v1/rooms", body, root)
	if _, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	replay, _ := http.NewRequest("POST", nodes[1].bus.HTTPURL+"/v1/rooms", bytes.NewReader(body))
	replay.Header = req.Header.Clone()
	resp, err := http.DefaultClient.Do(replay)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("request replayed on another node: %d, want 409", resp.StatusCode)
	}

	// bob is connected to node 3; node 1 revokes him.
	closed := make(chan time.Time, 4)
	nc, err := nats.Connect(nodes[2].bus.NATSURL, nats.Nkey(bob.NKey(), bob.SignNonce),
		nats.CustomInboxPrefix(subjects.InboxPrefix(bob.SignPub().String())),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { closed <- time.Now() }), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.SubscribeSync(subjects.RoomTopic(room.ID, "x")); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	start := time.Now()
	r = testbin.Run(t, nodes[0].dir, nil, "", "membershipd", append([]string{"user", "revoke", bob.SignPub().String()}, kv1...)...)
	if r.Code != 0 {
		t.Fatalf("revoke on node 1: %+v", r)
	}
	select {
	case at := <-closed:
		t.Logf("revocation on node 1 closed bob's connection on node 3 after %v (including the admin tool's start)", at.Sub(start))
	case <-time.After(10 * time.Second):
		t.Fatal("revocation on node 1 did not close bob's connection on node 3")
	}
	if _, err := nats.Connect(nodes[2].bus.NATSURL, nats.Nkey(bob.NKey(), bob.SignNonce)); err == nil {
		t.Error("revoked bob logged in to node 3")
	}
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

func dialClient(ctx context.Context, t *testing.T, id *identity.Identity, n *node) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, client.Config{Identity: id, Servers: []string{n.bus.HTTPURL}, NATS: []string{n.bus.NATSURL}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func natsConnect(url string, id *identity.Identity) (*nats.Conn, error) {
	nc, err := nats.Connect(url, nats.Nkey(id.NKey(), id.SignNonce), nats.Timeout(15*time.Second))
	if err == nil {
		nc.Close()
	}
	return nc, err
}

// signedRequest signs a request the way the SDK does.
func signedRequest(t *testing.T, base, method, path string, body []byte, id *identity.Identity) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	s := httpsig.Signer{KeyID: id.SignPub().String(), Key: ed25519.PrivateKey(id.SigningKey())}
	if err := s.Sign(req, body); err != nil {
		t.Fatal(err)
	}
	return req
}
