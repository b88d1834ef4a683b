package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/wire"
)

// ControlResult is one control-plane measurement: requests per second from
// several concurrent clients, each with its own connection pool.
type ControlResult struct {
	Store    string `json:"store"`
	Endpoint string `json:"endpoint"`
	// Signed requests carry an RFC 9421 signature and a single-use nonce
	// (the server verifies it, looks the key up and records the nonce);
	// the unsigned GET /healthz is the same server's HTTP and store-read
	// baseline.
	Signed     bool    `json:"signed"`
	Workers    int     `json:"workers"`
	Reqs       int     `json:"reqs"`
	ReqsPerSec float64 `json:"reqs_per_s"`
	// Ratio is reqs/s over the unsigned baseline of the same store.
	Ratio float64 `json:"ratio,omitempty"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	// VerifyCeiling is this machine's all-cores rate of verifying a
	// request of this shape (httpsig alone, no store): the bound a server
	// that did nothing but check signatures would reach.
	VerifyCeiling float64 `json:"verify_ceiling_per_s,omitempty"`
	// NonceCeiling is this machine's all-cores rate of verifying a request
	// and recording its nonce in the same store (OpHTTPSigNonce for
	// sqlite, OpHTTPSigNonceKV for kv): the bound of the signed-request
	// target.
	NonceCeiling float64 `json:"verify_nonce_ceiling_per_s,omitempty"`
	ServerCPUUS  float64 `json:"server_cpu_us_per_req,omitempty"`
	ClientCPUUS  float64 `json:"client_cpu_us_per_req"`
}

// Control-plane endpoints measured.
const (
	EndpointHealthz = "GET /healthz"
	EndpointRead    = "GET /v1/me"
	EndpointWrite   = "POST /v1/users"
	// EndpointBare is GET /v1/me served by a bare server (BareHTTPSpec):
	// HTTP, the signature check and the nonce write, nothing else.
	EndpointBare = "GET /v1/me, bare server"
)

// load runs op on workers goroutines for d (at least one request each)
// and returns the number of requests, their latencies and the elapsed time.
func load(ctx context.Context, d time.Duration, ops []func(ctx context.Context) error) (int, []time.Duration, time.Duration, error) {
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for _, op := range ops {
		wg.Go(func() {
			var mine []time.Duration
			for len(mine) == 0 || time.Now().Before(deadline) {
				t := time.Now()
				if err := op(ctx); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return len(lat), lat, time.Since(start), firstErr
}

// Control measures the unsigned baseline, one signed read and one signed
// write endpoint with workers concurrent clients, then the signed read
// against a bare server (self run with BareHTTPFlag, or in this process
// when self is empty) with the same kind of store.
func (f *fixture) Control(ctx context.Context, workers int, d time.Duration, ceilings []Ceiling, self string) ([]ControlResult, error) {
	clients := make([]*client.Client, workers)
	for i := range clients {
		c, err := client.Dial(ctx, f.clientConfig(f.adm))
		if err != nil {
			return nil, err
		}
		defer c.Close()
		clients[i] = c
	}
	base := strings.TrimRight(f.servers[0], "/")
	prefix := randHex(3)
	var mu sync.Mutex
	next := 0
	handle := func() string {
		mu.Lock()
		defer mu.Unlock()
		next++
		return fmt.Sprintf("bench-%s-%d", prefix, next)
	}
	rows := []struct {
		endpoint string
		signed   bool
		verify   string
		op       func(i int) func(ctx context.Context) error
	}{
		{EndpointHealthz, false, "", func(int) func(ctx context.Context) error {
			hc := f.httpClient()
			return func(ctx context.Context) error {
				req, err := http.NewRequestWithContext(ctx, "GET", base+"/healthz", nil)
				if err != nil {
					return err
				}
				resp, err := hc.Do(req)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("healthz: %s", resp.Status)
				}
				return nil
			}
		}},
		{EndpointRead, true, OpHTTPSigRead, func(i int) func(ctx context.Context) error {
			c := clients[i]
			return func(ctx context.Context) error { _, err := c.Me(ctx); return err }
		}},
		{EndpointWrite, true, OpHTTPSigPost, func(i int) func(ctx context.Context) error {
			c := clients[i]
			var pub [32]byte
			return func(ctx context.Context) error {
				rand.Read(pub[:])
				_, err := c.AddUser(ctx, handle(), hex.EncodeToString(pub[:]), "member")
				return err
			}
		}},
	}
	var out []ControlResult
	var baseline float64
	measure := func(endpoint string, signed bool, verify string, pid int, ops []func(ctx context.Context) error) error {
		// One request each first, so connections are open when timing starts.
		for _, op := range ops {
			if err := op(ctx); err != nil {
				return fmt.Errorf("%s: %w", endpoint, err)
			}
		}
		u := snapshot(pid)
		n, lat, el, err := load(ctx, d, ops)
		if err != nil {
			return fmt.Errorf("%s: %w", endpoint, err)
		}
		r := ControlResult{Store: f.store, Endpoint: endpoint, Signed: signed, Workers: workers, Reqs: n,
			ReqsPerSec: float64(n) / el.Seconds(), P50Ms: percentile(lat, 50), P99Ms: percentile(lat, 99)}
		r.ClientCPUUS, r.ServerCPUUS, _ = u.since(n)
		if !signed {
			baseline = r.ReqsPerSec
		} else if baseline > 0 {
			r.Ratio = r.ReqsPerSec / baseline
		}
		for _, c := range ceilings {
			if c.Op == verify {
				r.VerifyCeiling = c.AllCores
			}
			if signed && (c.Op == OpHTTPSigNonce && f.store == "sqlite" || c.Op == OpHTTPSigNonceKV && f.store == "kv") {
				r.NonceCeiling = c.AllCores
			}
		}
		out = append(out, r)
		return nil
	}
	for _, row := range rows {
		ops := make([]func(ctx context.Context) error, workers)
		for i := range ops {
			ops[i] = row.op(i)
		}
		if err := measure(row.endpoint, row.signed, row.verify, f.pid, ops); err != nil {
			return out, err
		}
	}
	if f.pid == 0 || f.store != "sqlite" && f.store != "kv" {
		return out, nil // a deployment elsewhere: a bare server here bounds nothing there
	}
	// The bound's HTTP side: the same requests, from the same kind of
	// client, to a bare server that verifies them and records their
	// nonces in the same kind of store, and does nothing else.
	me, err := clients[0].Me(ctx)
	if err != nil {
		return out, fmt.Errorf("%s: %w", EndpointBare, err)
	}
	meJSON, err := json.Marshal(wire.User{SignPub: me.SignPub, Handle: me.Handle, Role: string(me.Role), Status: string(me.Status),
		KEMPub: me.KEMPub, KEMSig: me.KEMSig, CreatedAt: me.CreatedAt}) // the body of GET /v1/me
	if err != nil {
		return out, err
	}
	srv, err := startBare(ctx, self, BareHTTPSpec{Store: f.store, SignPub: f.adm.SignPub().String(), Me: meJSON})
	if err != nil {
		return out, fmt.Errorf("%s: %w", EndpointBare, err)
	}
	defer srv.stop()
	ops := make([]func(ctx context.Context) error, workers)
	for i := range ops {
		cfg := f.clientConfig(f.adm)
		cfg.Servers = []string{srv.url}
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			return out, fmt.Errorf("%s: %w", EndpointBare, err)
		}
		defer c.Close()
		ops[i] = func(ctx context.Context) error { _, err := c.Me(ctx); return err }
	}
	return out, measure(EndpointBare, true, OpHTTPSigRead, srv.pid, ops)
}
