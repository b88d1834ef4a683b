package daemon_test

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/internal/testpki"
	"github.com/unibus/unibus/wire"
)

// TestTLSBothPlanes: with a certificate from a test CA, both planes speak
// TLS only; a client that trusts the CA exchanges messages end to end, one
// that does not is refused, and plaintext is refused.
func TestTLSBothPlanes(t *testing.T) {
	ca := testpki.NewCA(t, "unibus test client CA")
	leaf := ca.Server(t, "membershipd", []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
	dir := t.TempDir()
	cert, key := testpki.WriteFiles(t, dir, "server", leaf)
	b := startBus(t, withConfig(func(c *daemon.Config) { c.TLSCert, c.TLSKey = cert, key }), withRoots(ca.Pool))
	if !strings.HasPrefix(b.d.HTTPURL(), "https://") || !strings.HasPrefix(b.d.NATSURL(), "tls://") {
		t.Fatalf("urls %s %s", b.d.HTTPURL(), b.d.NATSURL())
	}
	ctx := ctxT(t)
	_, alice := b.user(t, "alice")
	room, err := alice.CreateRoom(ctx, "tls")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, room.ID, "", []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	if got := listenN(t, alice, room.ID, 1); string(got[0].Data) != "over tls" {
		t.Fatalf("got %q", got[0].Data)
	}
	// Health reports tls=true.
	var h wire.Health
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	resp, err := hc.Get(b.d.HTTPURL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if h.Status != "ok" || !h.Posture.TLS || h.Posture.BusAuth != "enforce" || !h.Posture.ACL {
		t.Fatalf("health %+v", h)
	}

	// A client that trusts another CA is refused on both planes.
	other := testpki.NewCA(t, "someone else")
	id, _ := identity.Generate()
	cfg := b.clientConfig(id)
	cfg.RootCAs = other.Pool
	if _, err := client.Dial(ctx, cfg); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("HTTP with the wrong CA: %v", err)
	}
	if _, err := nats.Connect(b.d.NATSURL(), nats.Secure(&tls.Config{RootCAs: other.Pool}), nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("NATS with the wrong CA connected")
	}
	// Plaintext on the TLS ports is refused.
	plainHTTP := strings.Replace(b.d.HTTPURL(), "https://", "http://", 1)
	if resp, err := http.Get(plainHTTP + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plaintext HTTP served on the TLS port")
		}
	}
	plainNATS := strings.Replace(b.d.NATSURL(), "tls://", "nats://", 1)
	if nc, err := nats.Connect(plainNATS, nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("plaintext NATS connected to the TLS port")
	}
}
