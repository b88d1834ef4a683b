package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// TestClusterColdStartReplayAndRevocation, with real processes on loopback: a lone node of a
// three-node cluster stays 503 (no meta leader), the cluster turns healthy
// once the others start, the first admin is added live with R3 buckets
// reported HA, a request replayed on another node is refused, and a
// revocation taken on node 1 closes the user's connection on node 3.
func TestClusterColdStartReplayAndRevocation(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	c := harness.NewCluster(t, 3)
	nodes := c.Nodes
	c.Start(t, 0)
	// Alone, node 1 has no meta leader: 503, with the reason — and it
	// stays so: the samples over two seconds are the check.
	for range 10 {
		code, h := harness.Health(nodes[0].HTTPURL())
		if code != http.StatusServiceUnavailable || h.Posture.MetaLeader != "" || !h.Posture.Cluster {
			t.Fatalf("lone node: %d %+v, want 503 without a meta leader", code, h)
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.Start(t, 1)
	c.Start(t, 2)
	c.WaitHealthy(t, 0, 1, 2)
	_, h := harness.Health(nodes[2].HTTPURL())
	if h.Posture.Peers != 3 || h.Posture.KVReplicas != 3 || h.Posture.Store != "kv" || h.Posture.BusAuth != "enforce" {
		t.Errorf("posture of node 3: %+v", h.Posture)
	}
	for _, n := range nodes {
		if strings.Contains(n.Bus.Output(), harness.RouteSecret) {
			t.Errorf("%s logged the route secret", n.Name)
		}
	}

	// The first admin, added live through node 1's internal identity.
	root, bob := newID(t, nodes[0].Dir, "root"), newID(t, nodes[0].Dir, "bob")
	kv1 := []string{"--store", "kv", "--nats-url", nodes[0].NATSURL()}
	r := harness.Run(t, nodes[0].Dir, nil, "", "membershipd", append([]string{"user", "add", "--handle", "root", "--role", "admin", "--sign-pub", root.SignPub().String()}, kv1...)...)
	if r.Code != 0 || !regexp.MustCompile(`KV_UNIBUS_users: leader=n\d followers_current=2/2 msgs=\d+ \(replicated, HA\)`).MatchString(r.Stdout) {
		t.Fatalf("user add --store kv on a healthy R3 cluster: %+v", r)
	}
	r = harness.Run(t, nodes[0].Dir, nil, "", "membershipd", append([]string{"user", "add", "--handle", "bob", "--sign-pub", bob.SignPub().String()}, kv1...)...)
	if r.Code != 0 {
		t.Fatalf("add bob: %+v", r)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admin := dialClient(ctx, t, root, nodes[1])
	dialClient(ctx, t, bob, nodes[2])
	room, err := admin.CreateRoom(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.AddMember(ctx, room.ID, "bob", "member"); err != nil {
		t.Fatal(err)
	}

	// A signed request accepted by node 1 is a replay on node 2: both
	// nodes are one deployment, so the tag node 1 announced is node 2's too.
	sig := signer(t, nodes[0].HTTPURL(), root)
	req := signedRequest(t, nodes[0].HTTPURL(), "GET", "/v1/rooms", nil, sig)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("signed request on node 1: %d, want 200", resp.StatusCode)
	}
	replay, _ := http.NewRequest("GET", nodes[1].HTTPURL()+"/v1/rooms", nil)
	replay.Header = req.Header.Clone()
	resp, err = httpClient.Do(replay)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("request replayed on another node: %d, want 409", resp.StatusCode)
	}

	// bob is connected to node 3 (subscribed to his deliveries, the one
	// subject a member reads); node 1 revokes him.
	closed := make(chan time.Time, 4)
	denied := make(chan error, 4)
	nc, err := nats.Connect(nodes[2].NATSURL(), nats.Nkey(bob.NKey(), bob.SignNonce),
		nats.CustomInboxPrefix(subjects.InboxPrefix(bob.SignPub().String())),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { closed <- time.Now() }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.SubscribeSync(subjects.DeliverOf(bob.SignPub().String())); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-denied:
		t.Fatalf("bob's subscription to his deliveries: %v", err)
	default:
	}
	start := time.Now()
	r = harness.Run(t, nodes[0].Dir, nil, "", "membershipd", append([]string{"user", "revoke", bob.SignPub().String()}, kv1...)...)
	if r.Code != 0 {
		t.Fatalf("revoke on node 1: %+v", r)
	}
	select {
	case at := <-closed:
		t.Logf("revocation on node 1 closed bob's connection on node 3 after %v (including the admin tool's start)", at.Sub(start))
	case <-time.After(10 * time.Second):
		t.Fatal("revocation on node 1 did not close bob's connection on node 3")
	}
	if _, err := nats.Connect(nodes[2].NATSURL(), nats.Nkey(bob.NKey(), bob.SignNonce)); err == nil {
		t.Error("revoked bob logged in to node 3")
	}
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// dialClient dials node n only, as id, until the end of the test.
func dialClient(ctx context.Context, t *testing.T, id *identity.Identity, n *harness.Node) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, client.Config{Identity: id, Servers: []string{n.HTTPURL()}, NATS: []string{n.NATSURL()}})
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

// signer signs as id for the deployment the server at base announces
// (its /healthz), the way the SDK does.
func signer(t *testing.T, base string, id *identity.Identity) *httpsig.Signer {
	t.Helper()
	code, h := harness.Health(base)
	if h.Protocol != wire.Protocol || h.Deployment == "" {
		t.Fatalf("%s/healthz: %d, protocol %q, deployment %q: want protocol %s and a deployment", base, code, h.Protocol, h.Deployment, wire.Protocol)
	}
	return &httpsig.Signer{KeyID: id.SignPub().String(), Key: ed25519.PrivateKey(id.SigningKey()), Tag: wire.DeploymentTag(h.Deployment)}
}

// signedRequest makes a request to base signed by s.
func signedRequest(t *testing.T, base, method, path string, body []byte, s *httpsig.Signer) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := s.Sign(req, body); err != nil {
		t.Fatal(err)
	}
	return req
}
