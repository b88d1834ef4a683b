package deploytest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/extnats/extnatstest"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/testpki"
)

// TestExternalNATSRunbook rehearses deploy/external-nats/README.md with
// the real binaries: step 1 makes the credentials (0600, never
// overwritten) and unibus.conf; the shipped nats-server.conf, with this
// machine's paths, passes `nats-server -t` as a cluster member and serves
// as a single TLS server with unibus.conf included; membershipd starts in
// front of it with the runbook's flags and answers /healthz; and the CLI
// creates a room and sends to it over the external data plane.
func TestExternalNATSRunbook(t *testing.T) {
	bin := harness.Build(t)
	natsServer := extnatstest.Binary(t)
	work := t.TempDir()
	run := func(name string, args ...string) harness.Result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = work
		cmd.Env = harness.CleanEnv()
		return harness.Exec(t, cmd)
	}

	// Step 1.
	creds := filepath.Join(work, "nats.creds")
	r := run(filepath.Join(bin, "membershipd"), "external-nats", "init", "--nats-creds", creds)
	if r.Code != 0 || !strings.Contains(r.Stdout, "auth_callout {") {
		t.Fatalf("external-nats init: %s", r)
	}
	if m := mode(t, creds); m != 0o600 {
		t.Fatalf("nats.creds has mode %v, want 0600", m)
	}
	if strings.Contains(r.Stdout, lastLine(readFile(t, creds))) {
		t.Fatal("unibus.conf contains the seed")
	}
	writeFile(t, filepath.Join(work, "unibus.conf"), r.Stdout, 0o644)
	if again := run(filepath.Join(bin, "membershipd"), "external-nats", "init", "--nats-creds", creds); again.Code == 0 {
		t.Fatal("init overwrote an existing credentials file")
	}
	if cfg := run(filepath.Join(bin, "membershipd"), "external-nats", "config", "--nats-creds", creds); cfg.Stdout != r.Stdout {
		t.Fatalf("config prints another unibus.conf than init:\n%s", cfg)
	}

	// Step 2: the shipped file with this machine's paths and ports.
	ca := testpki.NewCA(t, "nats-ca")
	srvCert, srvKey := testpki.WriteFiles(t, work, "server", ca.Server(t, "nats", []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"}))
	routeCA := testpki.NewCA(t, "route-ca")
	routeCert, routeKey := testpki.WriteFiles(t, work, "route", routeCA.Server(t, "route", []net.IP{net.ParseIP("127.0.0.1")}, nil))
	routeCAFile := routeCA.WriteCert(t, work, "route-ca.crt")
	caFile := ca.WriteCert(t, work, "nats-ca.crt")
	ports := harness.FreePorts(t, []string{"127.0.0.1"}, 3)
	conf := readFile(t, filepath.Join(deployDir(t), "external-nats", "nats-server.conf"))
	conf = strings.NewReplacer(
		`"0.0.0.0:4222"`, fmt.Sprintf(`"127.0.0.1:%d"`, ports[0]),
		`"0.0.0.0:6222"`, fmt.Sprintf(`"127.0.0.1:%d"`, ports[1]),
		"/etc/nats/tls/server.crt", srvCert, "/etc/nats/tls/server.key", srvKey,
		"/etc/nats/tls/route.crt", routeCert, "/etc/nats/tls/route.key", routeKey,
		"/etc/nats/tls/route-ca.crt", routeCAFile,
		"/var/lib/nats/jetstream", filepath.Join(work, "jetstream"),
	).Replace(conf)
	clustered := filepath.Join(work, "nats-server.conf")
	writeFile(t, clustered, conf, 0o644)
	if r := run(natsServer, "-t", "-c", clustered); r.Code != 0 {
		t.Fatalf("nats-server -t on the shipped configuration: %s", r)
	}
	begin, end := strings.Index(conf, "# cluster: begin"), strings.Index(conf, "# cluster: end")
	if begin < 0 || end < begin {
		t.Fatal("nats-server.conf lost its '# cluster: begin/end' markers")
	}
	single := filepath.Join(work, "single.conf")
	writeFile(t, single, conf[:begin]+conf[end:], 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := exec.CommandContext(ctx, natsServer, "-c", single)
	var srvOut harness.LockedBuffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); srv.Wait() })
	harness.Eventually(t, 30*time.Second, func() bool { return strings.Contains(srvOut.String(), "Server is ready") }, "nats-server ready:\n%s", &srvOut)

	// Step 3, on loopback (the control plane's own TLS is the rest of
	// deploy/'s business).
	natsURL := fmt.Sprintf("tls://127.0.0.1:%d", ports[0])
	sctx, scancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer scancel()
	p, err := harness.Start(sctx, filepath.Join(bin, "membershipd"), work, nil, "--log-format", "json",
		"--store", "kv", "--kv-replicas", "1", "--nats-url", natsURL, "--nats-creds", creds, "--nats-ca", caFile,
		"--http-port", fmt.Sprint(ports[2]))
	if err != nil {
		t.Fatalf("membershipd with the runbook's flags: %v\nnats-server:\n%s", err, srvOut.String())
	}
	t.Cleanup(func() { p.Stop() })
	if code, h := harness.Health(p.HTTPURL); code != 200 {
		t.Fatalf("/healthz %d: %+v", code, h)
	}
	if m := mode(t, filepath.Join(work, "local_files", "internal.id")); m != 0o600 {
		t.Fatalf("internal.id written with mode %v", m)
	}

	// Step 4: the CLI, unchanged, over the external data plane.
	cli := func(args ...string) harness.Result {
		t.Helper()
		all := append([]string{"--identity", filepath.Join(work, "local_files", "admin.id"), "--server", p.HTTPURL, "--nats", natsURL, "--ca", caFile}, args...)
		r := run(filepath.Join(bin, "unibus"), all...)
		if r.Code != 0 {
			t.Fatalf("unibus %v: %s\nmembershipd:\n%s", args, r, p.Output())
		}
		return r
	}
	cli("room", "create", "demo")
	cli("send", "demo", "hello over the external NATS")
	if out := p.Output(); strings.Contains(out, strings.TrimSpace(lastLine(readFile(t, creds)))) {
		t.Fatal("membershipd logged the credentials' seed")
	}
	if _, err := os.Stat(filepath.Join(work, "jetstream")); err != nil {
		t.Fatalf("the nats-server's JetStream store is not where the file says: %v", err)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
