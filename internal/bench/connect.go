package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/subjects"
)

// ConnectResult is data-plane logins per second: connect, authenticate,
// first PING/PONG, close, from several concurrent workers.
type ConnectResult struct {
	// Server is what was logged in to: membershipd with --bus-auth enforce
	// (nkey challenge, user lookup in the store, the member permissions),
	// or a plain nats-server with its own static nkey list (the engine's
	// built-in nkey authentication), with membershipd's member permissions
	// too, or with no authentication at all. Each runs in a process of its
	// own. A member's permissions are the same whatever its rooms.
	Server  string  `json:"server"`
	Store   string  `json:"store,omitempty"`
	Workers int     `json:"workers"`
	Conns   int     `json:"conns"`
	PerSec  float64 `json:"conns_per_s"`
	// Ratio is logins/s over the plain nats-server with nkey auth.
	Ratio       float64 `json:"ratio,omitempty"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	ServerCPUUS float64 `json:"server_cpu_us_per_conn,omitempty"`
	// ClientCPUUS is the bench process's CPU per login (nats.go's connect
	// and close, the nonce signature): with ServerCPUUS, what a login
	// costs the machine.
	ClientCPUUS float64 `json:"client_cpu_us_per_conn,omitempty"`
	// InProcess: the raw server ran inside the bench process (a library
	// caller without an executable to start), so it has no CPU figure and
	// shares the bench's Go runtime, which flatters it.
	InProcess bool `json:"in_process,omitempty"`
}

// Names of the login rows.
const (
	ServerNATSNoAuth  = "nats-server, no auth"
	ServerNATSNKey    = "nats-server, nkey"
	ServerNATSNKeyACL = "nats-server, nkey + member ACL"
	ServerUnibus      = "membershipd, enforce"
)

// connectLoad logs in and out as id on url for d with workers workers and
// measures the server process pid (0: none).
func connectLoad(ctx context.Context, url string, pid int, id *identity.Identity, workers int, d time.Duration, opts ...nats.Option) (ConnectResult, error) {
	op := func(context.Context) error {
		o := append([]nats.Option{nats.Name("unibus-bench-login"), nats.NoReconnect(), nats.Timeout(10 * time.Second)}, opts...)
		if id != nil {
			o = append(o, nats.Nkey(id.NKey(), id.SignNonce))
		}
		nc, err := nats.Connect(url, o...)
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	}
	ops := make([]func(ctx context.Context) error, workers)
	for i := range ops {
		ops[i] = op
	}
	if err := op(ctx); err != nil {
		return ConnectResult{}, err
	}
	u := snapshot(pid)
	n, lat, el, err := load(ctx, d, ops)
	if err != nil {
		return ConnectResult{}, err
	}
	r := ConnectResult{Workers: workers, Conns: n, PerSec: float64(n) / el.Seconds(),
		P50Ms: percentile(lat, 50), P99Ms: percentile(lat, 99)}
	r.ClientCPUUS, r.ServerCPUUS, _ = u.since(n)
	return r, nil
}

// Connect measures logins to the deployment as a member of one room (its
// permissions do not depend on its rooms): a user the bench registers,
// which creates the room.
func (f *fixture) Connect(ctx context.Context, workers int, d time.Duration) (ConnectResult, error) {
	id, err := identity.Generate()
	if err != nil {
		return ConnectResult{}, err
	}
	if _, err := f.admC.AddUser(ctx, "bench-login-"+randHex(4), id.SignPub().String(), "member"); err != nil {
		return ConnectResult{}, fmt.Errorf("register the login user: %w", err)
	}
	c, err := client.Dial(ctx, f.clientConfig(id)) // publishes its KEM key
	if err != nil {
		return ConnectResult{}, err
	}
	_, err = c.CreateRoom(ctx, "bench-login-"+randHex(4))
	c.Close()
	if err != nil {
		return ConnectResult{}, fmt.Errorf("create the login user's room: %w", err)
	}
	// natsConnect carries the deployment's options (TLS), so a login
	// costs what it costs any client program.
	op := func(context.Context) error {
		nc, err := f.natsConnect(id, nats.NoReconnect())
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	}
	ops := make([]func(ctx context.Context) error, workers)
	for i := range ops {
		ops[i] = op
	}
	if err := op(ctx); err != nil {
		return ConnectResult{}, err
	}
	u := snapshot(f.pid)
	n, lat, el, err := load(ctx, d, ops)
	if err != nil {
		return ConnectResult{}, err
	}
	r := ConnectResult{Server: ServerUnibus, Store: f.store, Workers: workers, Conns: n, PerSec: float64(n) / el.Seconds(),
		P50Ms: percentile(lat, 50), P99Ms: percentile(lat, 99)}
	r.ClientCPUUS, r.ServerCPUUS, _ = u.since(n)
	return r, nil
}

// RawConnect measures logins to a plain nats-server on a random loopback
// port: without authentication, with nats-server's own nkey
// authentication of one user, and with that user given membershipd's
// member permissions. Each server is self run with RawNATSFlag (a process
// of its own), or runs in this process when self is empty.
func RawConnect(ctx context.Context, self string, workers int, d time.Duration) ([]ConnectResult, error) {
	id, err := identity.Generate()
	if err != nil {
		return nil, err
	}
	var out []ConnectResult
	for _, row := range []struct {
		name string
		spec RawNATSSpec
	}{
		{ServerNATSNoAuth, RawNATSSpec{Auth: RawNoAuth}},
		{ServerNATSNKey, RawNATSSpec{Auth: RawNKey, NKey: id.NKey()}},
		{ServerNATSNKeyACL, RawNATSSpec{Auth: RawNKeyACL, NKey: id.NKey(), SignPubHex: id.SignPub().String()}},
	} {
		srv, err := startRawNATS(ctx, self, row.spec)
		if err != nil {
			return out, fmt.Errorf("%s: %w", row.name, err)
		}
		var login *identity.Identity
		var opts []nats.Option
		if row.spec.Auth != RawNoAuth {
			login = id
			opts = append(opts, nats.CustomInboxPrefix(subjects.InboxPrefix(id.SignPub().String())))
		}
		r, err := connectLoad(ctx, srv.url, srv.pid, login, workers, d, opts...)
		srv.stop()
		if err != nil {
			return out, fmt.Errorf("%s: %w", row.name, err)
		}
		r.Server, r.InProcess = row.name, srv.pid == 0
		out = append(out, r)
	}
	return out, nil
}
