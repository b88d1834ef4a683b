package redteam

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/unibus/unibus/internal/extnats"
	"github.com/unibus/unibus/internal/extnats/extnatstest"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/natsnode"
)

// startBus starts a membershipd in dir with --bus-auth enforce, TLS from
// cert and key and the extra flags, on the env's engine:
//
//   - embedded: its own NATS node, on TLS from the same certificate;
//   - external: in front of a nats-server of its own (extnatstest: new
//     credentials, unibus's configuration, TLS on the client port from
//     natsCert as deploy/external-nats configures it), with --store kv
//     --nats-url tls://… --nats-creds --nats-ca; that server is returned
//     too (nil on the embedded engine).
//
// Each external membershipd has a nats-server of its own: two in front
// of one NATS would share the relay's and the listeners' work, and the
// suite judges one membershipd's counts and order.
func (e *env) startBus(dir, cert, key string, extra ...string) (*harness.Bus, *extnatstest.Server) {
	e.t.Helper()
	args := append(slices.Clone(extra), "--bus-auth", "enforce", "--tls-cert", cert, "--tls-key", key)
	if e.engine != externalEngine {
		return harness.StartBus(e.t, dir, args...), nil
	}
	srv, url, creds := e.startNATSServer(dir, e.natsCert, e.natsKey)
	if !slices.Contains(args, "--store") {
		args = append(args, "--store", "kv")
	}
	args = append(args, "--nats-url", url, "--nats-creds", creds, "--nats-ca", e.caCrt)
	bus := e.launchExternalBus(dir, args...)
	if bus.NATSURL != url {
		e.t.Fatalf("membershipd in front of %s announces the data plane %s", url, bus.NATSURL)
	}
	return bus, srv
}

// launchExternalBus is harness.StartBus (random HTTP port, JSON logs),
// tried up to three times: membershipd refuses to start in front of a
// NATS that does not answer one of its start checks within 2 s, and a
// nats-server just started on a loaded machine (the suite starts several
// at once) sometimes does not. Each refusal is logged; the third fails
// the test.
func (e *env) launchExternalBus(dir string, args ...string) *harness.Bus {
	e.t.Helper()
	bin := filepath.Join(harness.Build(e.t), "membershipd")
	args = append([]string{"--http-port", "0", "--log-format", "json"}, args...)
	for attempt := 1; ; attempt++ {
		bus := harness.LaunchBus(e.t, bin, dir, nil, args...)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := bus.WaitReady(ctx)
		cancel()
		var nr *harness.NotReadyError
		switch {
		case err == nil:
			return bus
		case attempt < 3 && errors.As(err, &nr) && nr.Exited:
			e.t.Logf("membershipd in front of an external NATS refused to start (attempt %d of 3): %v", attempt, err)
		default:
			e.t.Fatal(err)
		}
	}
}

// startNATSServer starts one nats-server with unibus's part of the
// configuration for new credentials (dir/nats.creds, 0600) and TLS on its
// client port from cert and key, and returns it, its tls:// URL and the
// credentials' path. It is killed at the end of the test.
func (e *env) startNATSServer(dir, cert, key string) (srv *extnatstest.Server, url, creds string) {
	e.t.Helper()
	creds = filepath.Join(dir, "nats.creds")
	keys, err := extnats.WriteNewCreds(creds)
	if err != nil {
		e.t.Fatal(err)
	}
	cl := extnatstest.Start(e.t, 1, extnatstest.Config{Unibus: extnatstest.Unibus(keys), Extra: natsServerTLS(cert, key)})
	srv = cl.Servers[0]
	return srv, "tls://" + net.JoinHostPort(srv.Host, strconv.Itoa(srv.Port)), creds
}

// natsServerTLS is the tls block of a nats-server's client port, as
// deploy/external-nats/nats-server.conf has it.
func natsServerTLS(cert, key string) string {
	return fmt.Sprintf("tls {\n\tcert_file: %q\n\tkey_file: %q\n\ttimeout: 2\n}\n", cert, key)
}

// engineControl (X01, external engine only, after every attack) shows
// that the data plane attacked was the nats-server process and that
// membershipd answered its logins as its auth callout: the ground truth
// is connected to that server at the URL membershipd announces, and
// membershipd's login counts hold the callout's own start probe (only the
// callout makes one), the internal identity's and the members' logins,
// and refusals (N60's and N61's). It lists the reasons counted, so that
// a change in how logins are decided shows in the table.
func (e *env) engineControl() Row {
	nc := e.truth.Conn()
	server, atURL := nc.ConnectedServerName(), nc.ConnectedUrl() == e.bus.NATSURL
	allowed, denied := e.busAuthReasons()
	ok := server == e.ext.Name && atURL && len(denied) > 0
	for _, r := range []string{extnats.ReasonProbe, natsnode.ReasonInternal, natsnode.ReasonMember} {
		ok = ok && slices.Contains(allowed, r)
	}
	v := Pass
	if !ok {
		v = FailControl
	}
	return Row{ID: "X01", Plane: "NATS", Attack: "control: the data plane attacked is the external nats-server, and membershipd its auth callout",
		Tool: "nats.go (membershipd's identity); /metrics",
		Expected: "the ground truth is connected to the nats-server process (server " + e.ext.Name + ") at the URL membershipd announces; " +
			"membershipd's callout counted the logins: its start probe, the internal identity and members allowed; refusals (N60, N61)",
		Observed: fmt.Sprintf("connected to server %s at the announced URL=%v; logins allowed as %s; denied as %s",
			server, atURL, orNone(strings.Join(allowed, ", ")), orNone(strings.Join(denied, ", "))),
		Verdict: v}
}

var busAuthSeries = regexp.MustCompile(`^unibus_bus_auth_total\{reason="([^"]*)",result="(allow|deny)"\} (\S+)$`)

// busAuthReasons lists the reasons of the data-plane logins membershipd
// allowed and denied so far (its /metrics), sorted.
func (e *env) busAuthReasons() (allowed, denied []string) {
	resp, err := e.httpc.Get(e.bus.HTTPURL + "/metrics")
	if err != nil {
		e.t.Errorf("metrics: %v", err)
		return nil, nil
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		m := busAuthSeries.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if n, _ := strconv.ParseFloat(m[3], 64); n <= 0 {
			continue
		}
		if m[2] == "allow" {
			allowed = append(allowed, m[1])
		} else {
			denied = append(denied, m[1])
		}
	}
	slices.Sort(allowed)
	slices.Sort(denied)
	return allowed, denied
}
