package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/harness"
)

// TestQuickRun runs every scenario briefly against real membershipd
// processes (sqlite and kv) and checks that the report is complete and
// coherent. It asserts no timing: only that each scenario ran, moved every
// message (a message lost or refused fails the run) and produced its rows.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts membershipd processes")
	}
	bin := filepath.Join(harness.Build(t), "membershipd")
	o := Quick(Options{Membershipd: bin, Sizes: []int{256, 1024}, Stores: []string{"sqlite", "kv"}})
	o.Duration = 50 * time.Millisecond
	var progress bytes.Buffer
	o.Progress = &progress
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
	}
	if len(rep.Errors) > 0 {
		t.Fatalf("errors: %v", rep.Errors)
	}
	ran := map[string]bool{}
	for _, c := range rep.Ceilings {
		ran[c.Op] = true
		if c.OneCore <= 0 || c.AllCores <= 0 || c.Cores < 1 {
			t.Errorf("ceiling %+v", c)
		}
	}
	for _, op := range []string{OpSign, OpVerify, OpVerifySDK, OpVerifyBatch, OpSeal, OpOpen, OpE2ESeal, OpE2EOpen, OpE2EOpenBatch, OpHTTPSigRead, OpHTTPSigPost, OpHTTPSigNonce, OpHTTPSigNonceKV} {
		if !ran[op] {
			t.Errorf("ceiling %q missing", op)
		}
	}
	if len(rep.Rooms) != 2*len(o.Sizes) {
		t.Fatalf("%d room rows, want %d", len(rep.Rooms), 2*len(o.Sizes))
	}
	for _, r := range rep.Rooms {
		if r.Msgs < roomBatch || r.MsgsPerSec <= 0 || r.P50Ms <= 0 || r.P99Ms < r.P50Ms || r.ReadMsgs <= r.Msgs || r.ReadMsgsPerSec <= 0 {
			t.Errorf("room row %+v", r)
		}
		if r.Store != "sqlite" || r.JSSync != "always" {
			t.Errorf("room row on %s/%s", r.Store, r.JSSync)
		}
		if r.Path == "e2e" && (r.Ratio <= 0 || r.ReadRatio <= 0) {
			t.Errorf("e2e row without ratios: %+v", r)
		}
	}
	if len(rep.Targets) != 2 {
		t.Errorf("targets: %+v", rep.Targets)
	}
	stores := map[string]int{}
	for _, c := range rep.Control {
		stores[c.Store]++
		if c.ReqsPerSec <= 0 || c.Reqs < o.Workers || (c.Signed && (c.VerifyCeiling <= 0 || c.Ratio <= 0)) {
			t.Errorf("control row %+v", c)
		}
		if (c.NonceCeiling > 0) != c.Signed {
			t.Errorf("control row %+v: every signed row, and only those, has its store's verify + nonce-write ceiling", c)
		}
	}
	// kv is measured, or skipped with the reason membershipd gave.
	kvSkipped := false
	for _, s := range rep.Skipped {
		if s.What == "store kv" && strings.Contains(s.Reason, "not implemented") {
			kvSkipped = true
		} else {
			t.Errorf("unexpected skip %+v", s)
		}
	}
	// healthz, the signed read and write, and the signed read from a bare
	// server with the same store.
	if stores["sqlite"] != 4 || (stores["kv"] != 4 && !kvSkipped) {
		t.Errorf("control rows per store: %v (kv skipped: %v)", stores, kvSkipped)
	}
	servers := map[string]int{}
	for _, c := range rep.Connect {
		servers[c.Server]++
		if c.PerSec <= 0 || c.Conns < o.Workers {
			t.Errorf("connect row %+v", c)
		}
	}
	if servers[ServerNATSNoAuth] != 1 || servers[ServerNATSNKey] != 1 || servers[ServerNATSNKeyACL] != 1 || servers[ServerUnibus] < 1 {
		t.Errorf("connect rows %v", servers)
	}
	mem := map[string]int{}
	for _, m := range rep.Memory {
		mem[m.What]++
		if m.KiB <= 0 {
			t.Errorf("memory row %+v", m)
		}
	}
	if mem[MemIdle] < 1 || mem[MemIdle] != mem[MemPeak] {
		t.Errorf("memory rows %v", mem)
	}
	paths := map[string]bool{}
	for _, b := range rep.Blobs {
		paths[b.Path] = true
		if b.MBps <= 0 || b.Bytes != o.BlobSize {
			t.Errorf("blob row %+v", b)
		}
	}
	for _, p := range []string{BlobUp, BlobDown, BlobPlainPut, BlobPlainGet, BlobFileWrite, BlobFileRead} {
		if !paths[p] {
			t.Errorf("blob row %q missing", p)
		}
	}

	// The report prints every section and survives JSON.
	var table bytes.Buffer
	rep.WriteTable(&table)
	for _, s := range []string{"CPU ceilings", "publish→consume", "catch-up read", "target, ", "Control plane", "bound, signed requests over HTTP (sqlite)", "against the bare server", "Data-plane logins", "Blobs", "idle RSS"} {
		if !strings.Contains(table.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, table.String())
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || len(back.Rooms) != len(rep.Rooms) {
		t.Fatalf("JSON round trip: %v", err)
	}
}

// A membershipd that refuses a configuration as not implemented is a skip,
// named with membershipd's own reason; any other failure to start is an
// error.
func TestStartServerRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("starts membershipd processes")
	}
	bin := filepath.Join(harness.Build(t), "membershipd")
	ctx := context.Background()
	// An external NATS without its credentials is refused as a
	// configuration error (the external engine is implemented), naming
	// the flag to add.
	_, err := StartServer(ctx, bin, "sqlite", "always", "--nats-url", "nats://127.0.0.1:1")
	if err == nil || errors.Is(err, ErrNotImplemented) || !strings.Contains(err.Error(), "--nats-creds") {
		t.Fatalf("external NATS without credentials: %v", err)
	}
	_, err = StartServer(ctx, bin, "postgres", "always")
	if err == nil || errors.Is(err, ErrNotImplemented) {
		t.Fatalf("unknown store: %v", err)
	}
	_, err = StartServer(ctx, filepath.Join(t.TempDir(), "no-such-binary"), "sqlite", "always")
	if err == nil {
		t.Fatal("missing binary started")
	}
}

func TestLineWith(t *testing.T) {
	out := `{"time":"x","level":"INFO","msg":"Starting nats-server"}
{"time":"x","level":"ERROR","msg":"start failed","err":"--store kv is not implemented in this version"}
membershipd: --store kv is not implemented in this version; use --store sqlite`
	if got := lineWith(out, "not implemented"); got != "--store kv is not implemented in this version; use --store sqlite" {
		t.Fatalf("plain line: %q", got)
	}
	if got := lineWith(strings.SplitN(out, "\n", 3)[1], "not implemented"); got != "--store kv is not implemented in this version" {
		t.Fatalf("JSON line: %q", got)
	}
	if got := lineWith(out, "absent"); got != "" {
		t.Fatalf("no match: %q", got)
	}
}

func TestOptionsValidate(t *testing.T) {
	ok := Options{Membershipd: "membershipd"}
	ok.Defaults()
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		name string
		mut  func(o *Options)
		want string
	}{
		{"no binary", func(o *Options) { o.Membershipd = "" }, "membershipd binary"},
		{"bad store", func(o *Options) { o.Stores = []string{"sqlite", "mysql"} }, "store must be"},
		{"bad sync", func(o *Options) { o.JSSync = []string{"sometimes"} }, "js-sync"},
		{"tiny size", func(o *Options) { o.Sizes = []int{8} }, "out of range"},
		{"huge size", func(o *Options) { o.Sizes = []int{2 << 20} }, "out of range"},
		{"short duration", func(o *Options) { o.Duration = time.Millisecond }, "duration"},
		{"no workers", func(o *Options) { o.Workers = -1 }, "workers"},
		{"unknown scenario", func(o *Options) { o.Scenarios = []string{"rooms", "speed"} }, "unknown scenario"},
		{"half a target", func(o *Options) { o.Target = &Target{Servers: []string{"http://x"}} }, "target needs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.mut(&o)
			err := o.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
	// Every problem at once.
	o := ok
	o.Stores, o.Workers = []string{"x"}, 0
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "store") || !strings.Contains(err.Error(), "workers") {
		t.Fatalf("joined errors: %v", err)
	}
}

func TestModuleRoot(t *testing.T) {
	wd, _ := os.Getwd()
	root := ModuleRoot(wd)
	if root == "" || filepath.Base(wd) != "bench" || filepath.Dir(filepath.Dir(wd)) != root {
		t.Fatalf("module root of %s: %q", wd, root)
	}
	if got := ModuleRoot(t.TempDir()); got != "" {
		t.Fatalf("outside the module: %q", got)
	}
}

func TestPercentileAndFormat(t *testing.T) {
	ds := []time.Duration{5 * time.Millisecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}
	if p := percentile(ds, 50); p != 3 {
		t.Fatalf("p50 %v", p)
	}
	if p := percentile(ds, 99); p != 4 {
		t.Fatalf("p99 of 5 samples %v", p)
	}
	if p := percentile(nil, 50); p != 0 {
		t.Fatalf("empty %v", p)
	}
	for in, want := range map[float64]string{0: "-", 12.34: "12.3", 1234567.8: "1,234,568", 999.4: "999", 1000: "1,000"} {
		if got := num(in); got != want {
			t.Errorf("num(%v) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[int]string{0: "-", 256: "256 B", 1024: "1 KiB", 16384: "16 KiB", 1000: "1000 B"} {
		if got := size(in); got != want {
			t.Errorf("size(%v) = %q, want %q", in, got, want)
		}
	}
}
