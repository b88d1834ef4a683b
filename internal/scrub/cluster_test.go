package scrub

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/natsnode"
)

// denyAll is the Authorizer of nodes no member logs in to.
type denyAll struct{}

func (denyAll) Grant(context.Context, string) (natsnode.Grant, error) { return natsnode.Grant{}, nil }

// testCluster is three real unibus NATS nodes (natsnode, with its
// accounts) clustered over loopback routes, in this process. Each keeps
// its store directory and route port across Stop and Start.
type testCluster struct {
	t        *testing.T
	internal *identity.Identity
	names    []string
	dirs     []string
	routes   []int
	nodes    []*natsnode.Node
	resp     []*nats.Conn // each node's responder connection
}

func startTestCluster(t *testing.T) *testCluster {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, internal: id, routes: harness.FreePorts(t, []string{"127.0.0.1"}, 3)}
	base := t.TempDir()
	for i := range 3 {
		c.names = append(c.names, fmt.Sprintf("n%d", i+1))
		c.dirs = append(c.dirs, filepath.Join(base, c.names[i]))
	}
	c.nodes, c.resp = make([]*natsnode.Node, 3), make([]*nats.Conn, 3)
	errs := make(chan error, 3)
	for i := range 3 {
		go func() { errs <- c.start(i) }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.Stop(i)
		}
	})
	c.waitMeta()
	return c
}

func (c *testCluster) start(i int) error {
	var routes []*url.URL
	for j, p := range c.routes {
		if j != i {
			routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := natsnode.Start(ctx, natsnode.Options{
		Host: "127.0.0.1", Port: -1, ServerName: c.names[i], StoreDir: c.dirs[i],
		InternalNKey: c.internal.NKey(), Authorizer: denyAll{},
		Logger: slog.New(slog.DiscardHandler),
		Cluster: &natsnode.Cluster{Name: "scrub-test", Host: "127.0.0.1", Port: c.routes[i],
			Routes: routes, User: "route", Pass: "route-secret"},
	})
	if err != nil {
		return fmt.Errorf("start %s: %w", c.names[i], err)
	}
	nc, err := n.Connect(c.internal.NKey(), c.internal.SignNonce, nats.Name("scrub-responder"))
	if err != nil {
		n.Shutdown()
		return err
	}
	if _, err := Serve(nc, n.Server(), n.Quorum, NewVerifier(n.Server().StoreDir(), 0), slog.New(slog.DiscardHandler)); err != nil {
		nc.Close()
		n.Shutdown()
		return err
	}
	c.nodes[i], c.resp[i] = n, nc
	return nil
}

// Start restarts node i on its store and route port.
func (c *testCluster) Start(i int) {
	c.t.Helper()
	if err := c.start(i); err != nil {
		c.t.Fatal(err)
	}
	c.waitMeta()
}

// Stop shuts node i down (the store is flushed and closed).
func (c *testCluster) Stop(i int) {
	if c.nodes[i] != nil {
		c.resp[i].Close()
		c.nodes[i].Shutdown()
		c.nodes[i] = nil
	}
}

func (c *testCluster) waitMeta() {
	c.t.Helper()
	harness.EventuallyNoError(c.t, 2*time.Minute, func() error {
		for i, n := range c.nodes {
			if n == nil {
				continue
			}
			if l, _ := n.MetaLeader(); l == "" || !n.Quorum() {
				return fmt.Errorf("%s: no meta leader", c.names[i])
			}
		}
		return nil
	}, "meta leader")
}

// Conn is an in-process connection of the internal identity to node i,
// in the control account (or the bus account with natsnode.BusLogin).
func (c *testCluster) Conn(i int, opts ...nats.Option) *nats.Conn {
	c.t.Helper()
	nc, err := c.nodes[i].Connect(c.internal.NKey(), c.internal.SignNonce, opts...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// blocks lists the message block files of stream in account on node i,
// in order.
func (c *testCluster) blocks(i int, account, stream string) []string {
	c.t.Helper()
	blks, err := filepath.Glob(filepath.Join(c.dirs[i], "jetstream", account, "streams", stream, "msgs", "*.blk"))
	if err != nil || len(blks) == 0 {
		c.t.Fatalf("%s: no message blocks of %s > %s (%v)", c.names[i], account, stream, err)
	}
	sort.Strings(blks)
	return blks
}

// truncateTail cuts n bytes off the end of the last message block of the
// stream on node i (stopped).
func (c *testCluster) truncateTail(i int, account, stream string, n int64) {
	c.t.Helper()
	blks := c.blocks(i, account, stream)
	last := blks[len(blks)-1]
	st, err := os.Stat(last)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := os.Truncate(last, max(st.Size()-n, 0)); err != nil {
		c.t.Fatal(err)
	}
}

// flipBits inverts one byte at each of the offsets (from the end of the
// last message block) of the stream on node i (stopped).
func (c *testCluster) flipBits(i int, account, stream string, fromEnd ...int64) {
	c.t.Helper()
	blks := c.blocks(i, account, stream)
	last := blks[len(blks)-1]
	b, err := os.ReadFile(last)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, off := range fromEnd {
		b[int64(len(b))-off] ^= 0xff
	}
	if err := os.WriteFile(last, b, 0o600); err != nil {
		c.t.Fatal(err)
	}
}
