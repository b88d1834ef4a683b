package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/testpki"
)

// the homogeneous-posture refusals, and a client
// certificate (signed by the client CA) refused on the route port.
func TestClusterPostureRefusals(t *testing.T) {
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("s3cret-route-pass"), 0o600)
	loose := filepath.Join(dir, "loose")
	os.WriteFile(loose, []byte("s3cret-route-pass"), 0o644)
	clientCA, routeCA := testpki.NewCA(t, "client CA"), testpki.NewCA(t, "route CA")
	lo := []net.IP{net.ParseIP("127.0.0.1")}
	dpCert, dpKey := testpki.WriteFiles(t, dir, "dp", clientCA.Server(t, "node", lo, nil))
	rCert, rKey := testpki.WriteFiles(t, dir, "route", routeCA.Server(t, "node", lo, nil))
	badRCert, badRKey := testpki.WriteFiles(t, dir, "route-by-client-ca", clientCA.Server(t, "node", lo, nil))
	clientCAFile, routeCAFile := clientCA.WriteCert(t, dir, "client-ca"), routeCA.WriteCert(t, dir, "route-ca")

	base := []string{"--http-port", "0", "--nats-port", "0", "--cluster-port", "0", "--cluster-name", "c", "--node-name", "n1", "--store", "kv", "--cluster-pass-file", pass,
		"--routes", fmt.Sprintf("nats://127.0.0.1:%d", harness.FreePort(t))}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"bus-auth off", []string{"--bus-auth", "off"}, "cluster mode refuses to start without --bus-auth enforce"},
		{"sqlite store", []string{"--store", "sqlite"}, "cluster mode needs --store kv"},
		{"no secret", []string{"--cluster-pass-file", ""}, "needs a route secret"},
		{"secret file readable by others", []string{"--cluster-pass-file", loose}, "must not be readable by group or others"},
		{"non-loopback route bind without route TLS", []string{"--bind", "0.0.0.0", "--tls-cert", dpCert, "--tls-key", dpKey}, "mutual route TLS is required"},
		{"route CA is the client CA", []string{"--tls-cert", dpCert, "--tls-key", dpKey, "--route-tls-cert", badRCert, "--route-tls-key", badRKey, "--route-tls-ca", clientCAFile}, "also signed the data-plane certificate"},
		{"route TLS half configured", []string{"--route-tls-cert", rCert}, "go together"},
		{"bad route", []string{"--routes", "10.0.0.2"}, "is not a route URL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := harness.Run(t, dir, nil, "", "membershipd", append(append([]string{}, base...), tc.args...)...)
			if r.Code == 0 || !strings.Contains(r.Stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want a refusal mentioning %q", r.Code, r.Stderr, tc.want)
			}
			if strings.Contains(r.Stderr, "s3cret-route-pass") {
				t.Errorf("the route secret appears in the error: %q", r.Stderr)
			}
		})
	}

	r := harness.Run(t, dir, nil, "", "membershipd", "--http-port", "0", "--nats-port", "0", "--cluster-port", "0", "--cluster-name", "c",
		"--node-name", "n1", "--store", "kv", "--cluster-pass-file", pass)
	if r.Code == 0 || !strings.Contains(r.Stderr, "cluster mode needs --routes") {
		t.Errorf("no routes: exit %d, stderr %q", r.Code, r.Stderr)
	}

	// A node with route TLS (alone: it will not get a quorum, but its route
	// port listens) refuses a client certificate of the client CA, and
	// accepts the TLS handshake of a route certificate.
	t.Run("client certificate on the route port", func(t *testing.T) {
		ndir := t.TempDir()
		routePort := harness.FreePort(t)
		b := harness.StartBus(t, ndir, "--store", "kv", "--no-bootstrap", "--cluster-name", "c", "--node-name", "n1",
			"--cluster-port", fmt.Sprint(routePort), "--cluster-pass-file", pass, "--routes", fmt.Sprintf("nats://127.0.0.1:%d", harness.FreePort(t)),
			"--tls-cert", dpCert, "--tls-key", dpKey,
			"--route-tls-cert", rCert, "--route-tls-key", rKey, "--route-tls-ca", routeCAFile)
		_ = b
		addr := fmt.Sprintf("127.0.0.1:%d", routePort)
		handshake := func(cert tls.Certificate) error {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			// Route TLS is handshake-first: no INFO in clear.
			buf := make([]byte, 4096)
			tc := tls.Client(conn, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: routeCA.Pool, ServerName: "127.0.0.1"})
			if err := tc.Handshake(); err != nil {
				return err
			}
			// TLS 1.3 reports a rejected client certificate on the first read.
			_, err = tc.Read(buf)
			return err
		}
		if err := handshake(clientCA.Client(t, "alice").TLS); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("a client certificate signed by the client CA on the route port: %v, want a TLS certificate alert\n%s", err, b.Output())
		}
		// The positive control: a route certificate completes TLS and the
		// server speaks the route protocol (its INFO) over it.
		if err := handshake(routeCA.Server(t, "n2", []net.IP{net.ParseIP("127.0.0.1")}, nil).TLS); err != nil {
			t.Errorf("a route certificate was refused on the route port: %v", err)
		}
	})
}
