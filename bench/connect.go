package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/identity"
)

// ConnectResult is data-plane logins per second: connect, authenticate,
// first PING/PONG, close, from several concurrent workers.
type ConnectResult struct {
	// Server is what was logged in to: membershipd with --bus-auth enforce
	// (nkey challenge, user lookup in the store, per-room ACL), or a plain
	// nats-server in the bench process with its own static nkey list (the
	// engine's built-in nkey authentication) or no authentication at all.
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
}

// Names of the raw login baselines.
const (
	ServerNATSNoAuth = "nats-server, no auth"
	ServerNATSNKey   = "nats-server, nkey"
	ServerUnibus     = "membershipd, enforce"
)

// connectLoad logs in and out as id on url for d with workers workers.
func connectLoad(ctx context.Context, url string, id *identity.Identity, workers int, d time.Duration, opts ...nats.Option) (ConnectResult, error) {
	ops := make([]func(ctx context.Context) error, workers)
	for i := range ops {
		ops[i] = func(context.Context) error {
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
	}
	n, lat, el, err := load(ctx, d, ops)
	if err != nil {
		return ConnectResult{}, err
	}
	return ConnectResult{Workers: workers, Conns: n, PerSec: float64(n) / el.Seconds(),
		P50Ms: percentile(lat, 50), P99Ms: percentile(lat, 99)}, nil
}

// Connect measures logins to the deployment as its admin user.
func (f *fixture) Connect(ctx context.Context, workers int, d time.Duration) (ConnectResult, error) {
	// natsConnect carries the deployment's options (TLS), so a login
	// costs what it costs any client program.
	op := func(context.Context) error {
		nc, err := f.natsConnect(f.adm, nats.NoReconnect())
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
	_, r.ServerCPUUS, _ = u.since(n)
	return r, nil
}

// RawConnect measures logins to a plain nats-server started in this
// process on a random loopback port, without authentication and with
// nats-server's own nkey authentication of the same user key.
func RawConnect(ctx context.Context, workers int, d time.Duration) ([]ConnectResult, error) {
	id, err := identity.Generate()
	if err != nil {
		return nil, err
	}
	var out []ConnectResult
	for _, auth := range []string{ServerNATSNoAuth, ServerNATSNKey} {
		o := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, MaxConn: 1 << 16}
		var login *identity.Identity
		if auth == ServerNATSNKey {
			o.Nkeys = []*server.NkeyUser{{Nkey: id.NKey()}}
			login = id
		}
		s, err := server.NewServer(o)
		if err != nil {
			return out, err
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			s.Shutdown()
			return out, fmt.Errorf("nats-server did not start")
		}
		r, err := connectLoad(ctx, s.ClientURL(), login, workers, d)
		s.Shutdown()
		s.WaitForShutdown()
		if err != nil {
			return out, fmt.Errorf("%s: %w", auth, err)
		}
		r.Server = auth
		out = append(out, r)
	}
	return out, nil
}
