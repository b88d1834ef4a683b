package daemon_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/internal/store"
)

// freePort returns a loopback port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// A cluster node whose peers never come up serves /healthz (503) and
// denies everything while its kv store waits for a quorum; Close during
// that wait stops the open instead of waiting out the bootstrap budget,
// and leaves no goroutine behind.
func TestCloseWhileKVStoreOpens(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := daemon.Config{
		Bind: "127.0.0.1", DataDir: t.TempDir(), Logger: testLogger(t),
		Store: daemon.StoreKV, KVBootstrap: 10 * time.Minute,
		ClusterName: "lonely", NodeName: "n1", ClusterPass: "route-secret",
		Routes: []string{"nats://127.0.0.1:" + strconv.Itoa(freePort(t)), "nats://127.0.0.1:" + strconv.Itoa(freePort(t))},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := daemon.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()
	if _, err := d.Store().GetUser(ctx, "health-check"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("the store before a quorum: %v, want ErrUnavailable", err)
	}
	resp, err := http.Get(d.HTTPURL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/healthz without a quorum: %d, want 503", resp.StatusCode)
	}

	start := time.Now()
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true
	// Close stops the open rather than wait out its ten-minute budget.
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("Close took %v while the kv store was opening", took)
	}
	select {
	case <-d.Done():
	default:
		t.Fatal("Done is not closed after Close")
	}
	if err := d.Err(); err != nil {
		t.Fatalf("Err after Close: %v, want nil (the daemon did not fail on its own)", err)
	}
}

// A cluster node whose store cannot open within its budget stops on its
// own: Done is closed and Err says why; Close then releases the rest.
func TestKVOpenFailureStopsTheDaemon(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := daemon.Config{
		Bind: "127.0.0.1", DataDir: t.TempDir(), Logger: testLogger(t),
		Store: daemon.StoreKV, KVBootstrap: time.Second,
		ClusterName: "lonely", NodeName: "n1", ClusterPass: "route-secret",
		Routes: []string{"nats://127.0.0.1:" + strconv.Itoa(freePort(t))},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := daemon.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.Done():
	case <-ctx.Done():
		d.Close()
		t.Fatal("the daemon kept serving after its store failed to open")
	}
	if err := d.Err(); err == nil {
		t.Error("Err is nil after the daemon stopped on its own")
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close after a failure: %v", err)
	}
}
