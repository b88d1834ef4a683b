package natsnode

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/testpki"
)

func TestTLS(t *testing.T) {
	ca, other := testpki.NewCA(t, "client CA"), testpki.NewCA(t, "other CA")
	loop := []net.IP{net.ParseIP("127.0.0.1")}
	leaf := ca.Server(t, "node1", loop, []string{"localhost"})
	tn := startNode(t, func(o *Options) {
		o.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, MinVersion: tls.VersionTLS12}
	})
	url := tn.ClientURL()
	if !strings.HasPrefix(url, "tls://127.0.0.1:") {
		t.Fatalf("ClientURL = %q, want tls://", url)
	}
	alice := newUser(t)
	tn.authz.set(alice, true)

	m, err := connectUser(t, url, alice, nats.Secure(&tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatalf("client trusting the CA: %v", err)
	}
	if _, err := m.nc.TLSConnectionState(); err != nil {
		t.Errorf("connection not TLS: %v", err)
	}
	if _, err := connectUser(t, url, alice, nats.Secure(&tls.Config{RootCAs: other.Pool})); err == nil {
		t.Error("client trusting another CA connected")
	}
	plain := "nats://" + strings.TrimPrefix(url, "tls://")
	if _, err := connectUser(t, plain, alice); err == nil {
		t.Error("plaintext client connected")
	}
	// In-process connections need no TLS.
	if !tn.nc.IsConnected() {
		t.Error("in-process internal connection down")
	}

	expired := ca.Expired(t, "old", loop)
	tx := startNode(t, func(o *Options) { o.TLS = &tls.Config{Certificates: []tls.Certificate{expired.TLS}} })
	tx.authz.set(alice, true)
	if _, err := connectUser(t, tx.ClientURL(), alice, nats.Secure(&tls.Config{RootCAs: ca.Pool})); err == nil {
		t.Error("client accepted an expired server certificate")
	}
}

func TestInternalIdentity(t *testing.T) {
	tn := startNode(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := tn.cjs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "UNIBUS_users"})
	if err != nil {
		t.Fatalf("create KV bucket: %v", err)
	}
	if _, err := kv.Create(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.cjs.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "UNIBUS_blobs"}); err != nil {
		t.Fatalf("create object store: %v", err)
	}
	if _, err := tn.cjs.CreateStream(ctx, jetstream.StreamConfig{Name: "ANY", Subjects: []string{"any.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}

	// Stream deletion is disabled on the node, for everyone.
	short, done := context.WithTimeout(ctx, time.Second)
	defer done()
	if err := tn.cjs.DeleteStream(short, "ANY"); err == nil {
		t.Error("stream delete through the API succeeded")
	}
}

// logRecorder is a slog.Handler keeping every record.
type logRecorder struct {
	mu  sync.Mutex
	got []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	s := rec.Level.String() + " " + rec.Message
	rec.Attrs(func(a slog.Attr) bool { s += " " + a.String(); return true })
	r.mu.Lock()
	r.got = append(r.got, s)
	r.mu.Unlock()
	return nil
}

func TestStartFailureIsReported(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	old := readyTimeout
	readyTimeout = 2 * time.Second
	defer func() { readyTimeout = old }()

	rec := &logRecorder{}
	o := validOptions(t)
	o.Port = ln.Addr().(*net.TCPAddr).Port
	o.Logger = slog.New(rec)
	n, err := Start(context.Background(), o)
	if err == nil {
		n.Shutdown()
		t.Fatal("started on a port in use")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	found := false
	for _, l := range rec.got {
		if strings.Contains(l, "fatal=true") {
			found = true
		}
	}
	if !found {
		t.Errorf("nats-server's fatal message did not reach the logger: %q", rec.got)
	}

	// A store directory that cannot be created.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	o = validOptions(t)
	o.StoreDir = filepath.Join(file, "js")
	o.Logger = slog.New(&logRecorder{})
	if n, err := Start(context.Background(), o); err == nil {
		n.Shutdown()
		t.Error("started with an unusable store directory")
	}

	// A cancelled context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	o = validOptions(t)
	o.Logger = slog.New(&logRecorder{})
	if n, err := Start(ctx, o); err == nil {
		n.Shutdown()
	} else if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled start: %v", err)
	}
}

func TestSyncPolicy(t *testing.T) {
	for name, tc := range map[string]struct {
		always   bool
		interval time.Duration
		want     bool
	}{
		"default": {false, 0, true}, "always": {true, time.Minute, true}, "interval": {false, time.Second, false},
	} {
		tn := startNode(t, func(o *Options) { o.SyncAlways, o.SyncInterval = tc.always, tc.interval })
		cfg := tn.Server().JetStreamConfig()
		if cfg == nil || cfg.SyncAlways != tc.want || (!tc.want && cfg.SyncInterval != tc.interval) {
			t.Errorf("%s: JetStream config %+v, want SyncAlways=%v", name, cfg, tc.want)
		}
	}
}
