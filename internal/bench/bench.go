// Package bench measures unibus against the raw engine it is built on, side
// by side in one run on one machine, so that every figure comes with the
// ratio and the bound that explain it:
//
//   - room messages, raw JetStream publish→consume on the stream the
//     room's messages are stored in, against the SDK's end to end path
//     (encrypt+sign, membershipd's relay, a listener, verify+decrypt), per
//     payload size: msgs/s, latency, CPU and allocations per message;
//   - the CPU ceilings of the crypto on this machine (ed25519, XChaCha20-
//     Poly1305, the e2e codec, RFC 9421 verification), one core and all;
//   - signed control-plane requests per second, read and write, against the
//     server's unsigned baseline and the signature-verify ceiling, for each
//     store;
//   - data-plane logins per second against a plain nats-server;
//   - blob upload and download MB/s against a plain HTTP file server.
//
// It starts its own membershipd processes (random loopback ports, temporary
// data directories) or measures a deployment it is pointed at. It reports;
// it never judges a timing: only an error makes a run fail.
// cmd/unibus-bench is its command line.
package bench

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/unibus/unibus/identity"
)

// Scenario names.
const (
	ScenarioCeilings = "ceilings"
	ScenarioRooms    = "rooms"
	ScenarioControl  = "control"
	ScenarioConnect  = "connect"
	ScenarioBlobs    = "blobs"
)

// AllScenarios lists every scenario in run order.
var AllScenarios = []string{ScenarioCeilings, ScenarioRooms, ScenarioControl, ScenarioConnect, ScenarioBlobs}

// Options configures a run. Zero values take the defaults in Defaults.
type Options struct {
	// Membershipd is the membershipd binary the bench starts; required
	// unless Target is set.
	Membershipd string
	// Target, if set, is an existing deployment to measure instead.
	Target *Target
	// Stores are the control-plane stores to start membershipd with
	// (sqlite, kv). The first one also carries the room, login and blob
	// scenarios. A store membershipd does not implement is skipped.
	Stores []string
	// JSSync are the JetStream sync policies the room scenario runs under
	// (membershipd --js-sync): "always" is the durable default.
	JSSync []string
	// Sizes are the room message payload sizes in bytes (at least 16).
	Sizes []int
	// Duration is the length of each timed measurement.
	Duration time.Duration
	// BlobSize is the size of the blob moved up and down.
	BlobSize int64
	// Workers is the concurrency of the control-plane and login scenarios.
	Workers int
	// Scenarios selects what runs (default all, in AllScenarios order).
	Scenarios []string
	// Progress receives one line per step; nil discards.
	Progress io.Writer
	// Self is an executable that serves a raw login baseline when run
	// with --serve-raw-nats (unibus-bench itself), so that the baseline
	// server runs in a process of its own, as membershipd does. Empty:
	// the baselines run in the bench process.
	Self string
}

// Target is an existing deployment. Its identity must be an admin: the
// bench registers a receiving user, creates rooms and adds users named
// bench-…; point it at a scratch deployment.
type Target struct {
	Servers  []string
	NATS     []string
	Identity *identity.Identity
	RootCAs  *x509.CertPool
	// Internal, if set, is the deployment's internal identity: the raw
	// room baseline publishes and consumes on the room streams with it
	// (members have no JetStream). Without it the raw rows are skipped.
	Internal *identity.Identity
}

// memSettle is how long a started membershipd is left alone before its
// idle RSS is read (at most ten measurement durations).
const memSettle = 2 * time.Second

// Defaults of a full run (under three minutes on a 2-core machine).
const (
	DefaultDuration = 2 * time.Second
	DefaultBlobSize = 64 << 20
	DefaultWorkers  = 4
)

// DefaultSizes are the room message sizes of a full run.
var DefaultSizes = []int{256, 1024, 16384}

// Quick returns options for a short smoke run (seconds, not minutes):
// the same scenarios, with short measurements and a small blob.
func Quick(o Options) Options {
	o.Duration = 150 * time.Millisecond
	o.BlobSize = 4 << 20
	o.Workers = 2
	if len(o.JSSync) == 0 {
		o.JSSync = []string{"always"}
	}
	return o
}

// Defaults fills unset fields.
func (o *Options) Defaults() {
	if len(o.Stores) == 0 {
		o.Stores = []string{"sqlite", "kv"}
	}
	if len(o.JSSync) == 0 {
		o.JSSync = []string{"always", "2m"}
	}
	if len(o.Sizes) == 0 {
		o.Sizes = DefaultSizes
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.BlobSize == 0 {
		o.BlobSize = DefaultBlobSize
	}
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if len(o.Scenarios) == 0 {
		o.Scenarios = AllScenarios
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// Validate returns every problem at once.
func (o *Options) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if o.Target == nil && o.Membershipd == "" {
		add("a membershipd binary is required (or a target deployment)")
	}
	if o.Target != nil && (len(o.Target.Servers) == 0 || len(o.Target.NATS) == 0 || o.Target.Identity == nil) {
		add("a target needs its control-plane URLs, data-plane URLs and an admin identity")
	}
	for _, s := range o.Stores {
		if s != "sqlite" && s != "kv" {
			add("store must be sqlite or kv, not %q", s)
		}
	}
	for _, s := range o.JSSync {
		if s != "always" {
			if d, err := time.ParseDuration(s); err != nil || d <= 0 {
				add("js-sync must be 'always' or a duration such as 2m, not %q", s)
			}
		}
	}
	for _, n := range o.Sizes {
		if n < 16 || n > 1<<20-4096 {
			add("message size %d is out of range (16 B .. 1 MiB minus headers)", n)
		}
	}
	if o.Duration < 10*time.Millisecond {
		add("duration must be at least 10ms")
	}
	if o.BlobSize < 1 {
		add("blob size must be positive")
	}
	if o.Workers < 1 {
		add("workers must be at least 1")
	}
	for _, s := range o.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			add("unknown scenario %q (known: %s)", s, strings.Join(AllScenarios, ", "))
		}
	}
	return errors.Join(errs...)
}

// Report is the result of a run.
type Report struct {
	Machine  Machine         `json:"machine"`
	Options  ReportOptions   `json:"options"`
	Started  time.Time       `json:"started"`
	Elapsed  float64         `json:"elapsed_s"`
	Ceilings []Ceiling       `json:"ceilings,omitempty"`
	Rooms    []RoomResult    `json:"rooms,omitempty"`
	Targets  []TargetCheck   `json:"targets,omitempty"`
	Control  []ControlResult `json:"control,omitempty"`
	Connect  []ConnectResult `json:"connect,omitempty"`
	Blobs    []BlobResult    `json:"blobs,omitempty"`
	Memory   []MemoryResult  `json:"memory,omitempty"`
	Skipped  []Skip          `json:"skipped,omitempty"`
	Errors   []string        `json:"errors,omitempty"`
}

// ReportOptions records what the run measured.
type ReportOptions struct {
	Target     bool     `json:"target"`
	Stores     []string `json:"stores"`
	JSSync     []string `json:"js_sync"`
	Sizes      []int    `json:"sizes"`
	DurationMs int64    `json:"duration_ms"`
	BlobSize   int64    `json:"blob_size"`
	Workers    int      `json:"workers"`
	Scenarios  []string `json:"scenarios"`
}

// Skip is a scenario that did not run, and why.
type Skip struct {
	What   string `json:"what"`
	Reason string `json:"reason"`
}

// TargetCheck states the performance target of the room scenario: E2E
// 1 KiB msgs/s at least 0.8 × min(raw JetStream msgs/s, the all-cores
// ed25519 verify ceiling). It is reported, never enforced.
type TargetCheck struct {
	// Kind is "publish→consume" (one sender and one receiver at once, the
	// sender's signing on the same machine) or "catch-up read" (the
	// receiving side alone).
	Kind   string  `json:"kind"`
	JSSync string  `json:"js_sync"`
	Size   int     `json:"size"`
	Raw    float64 `json:"raw_msgs_per_s"`
	// Verify is crypto/ed25519's all-cores verify ceiling (the reference).
	Verify   float64 `json:"verify_all_cores_per_s"`
	Goal     float64 `json:"goal_msgs_per_s"`
	E2E      float64 `json:"e2e_msgs_per_s"`
	Fraction float64 `json:"fraction"` // E2E / min(raw, verify)
	Met      bool    `json:"met"`
	// VerifySDK is the all-cores ceiling of the SDK's own verifier
	// (batches of 64), and FractionSDK E2E / min(raw, VerifySDK).
	VerifySDK   float64 `json:"verify_sdk_all_cores_per_s,omitempty"`
	FractionSDK float64 `json:"fraction_sdk,omitempty"`
	// CPUBound is the rate at which this machine's cores would be busy
	// with the measured CPU per e2e message (client and server), when
	// both run on it: cores / (client + server CPU per message).
	CPUBound float64 `json:"cpu_bound_msgs_per_s,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpu_model,omitempty"`
	MemoryGiB  int    `json:"memory_gib,omitempty"`
	Go         string `json:"go"`
	NATSServer string `json:"nats_server"`
	NATSClient string `json:"nats_go"`
	// LoadAvg is /proc/loadavg when the run started: other work on the
	// machine skews CPU-bound figures, and this says how much there was.
	LoadAvg string `json:"loadavg,omitempty"`
}

// Run runs the selected scenarios and returns the report. Failures of a
// scenario are recorded in Report.Errors and the run goes on; the error
// is non-nil when anything failed.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.Defaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	rep := &Report{Machine: machine(), Started: time.Now(), Options: ReportOptions{
		Target: o.Target != nil, Stores: o.Stores, JSSync: o.JSSync, Sizes: o.Sizes,
		DurationMs: o.Duration.Milliseconds(), BlobSize: o.BlobSize, Workers: o.Workers, Scenarios: o.Scenarios,
	}}
	progress := func(s string) { fmt.Fprintf(o.Progress, "[%5.1fs] %s\n", time.Since(rep.Started).Seconds(), s) }
	fail := func(what string, err error) {
		rep.Errors = append(rep.Errors, what+": "+err.Error())
		progress("ERROR " + what + ": " + err.Error())
	}
	want := func(s string) bool { return slices.Contains(o.Scenarios, s) }

	if want(ScenarioCeilings) || want(ScenarioControl) || want(ScenarioRooms) {
		progress("ceilings: ed25519, xchacha20poly1305, e2e codec, httpsig (one core, all cores)")
		c, err := Ceilings(o.Duration/5, o.Sizes)
		rep.Ceilings = c
		if err != nil {
			fail("ceilings", err)
		}
	}
	if o.Target != nil {
		runTarget(ctx, o, rep, progress, fail)
	} else {
		runLocal(ctx, o, rep, progress, fail)
	}
	if want(ScenarioConnect) {
		progress("connect: plain nats-server baselines")
		raw, err := RawConnect(ctx, o.Self, o.Workers, o.Duration)
		if err != nil {
			fail("connect baseline", err)
		}
		rep.Connect = append(raw, rep.Connect...)
		nkey := 0.0
		for _, r := range raw {
			if r.Server == ServerNATSNKey {
				nkey = r.PerSec
			}
		}
		for i := range rep.Connect {
			if s := rep.Connect[i].Server; nkey > 0 && (s == ServerUnibus || s == ServerNATSNKeyACL) {
				rep.Connect[i].Ratio = rep.Connect[i].PerSec / nkey
			}
		}
	}
	rep.Targets = targets(rep)
	rep.Elapsed = time.Since(rep.Started).Seconds()
	progress(fmt.Sprintf("done in %.0f s", rep.Elapsed))
	if len(rep.Errors) > 0 {
		return rep, fmt.Errorf("%d scenario(s) failed; first: %s", len(rep.Errors), rep.Errors[0])
	}
	return rep, nil
}

// runLocal starts membershipd once per store and per extra sync policy.
func runLocal(ctx context.Context, o Options, rep *Report, progress func(string), fail func(string, error)) {
	want := func(s string) bool { return slices.Contains(o.Scenarios, s) }
	type start struct {
		store, jsSync string
		rooms, other  bool // room scenario; control/connect/blobs
	}
	var starts []start
	for i, st := range o.Stores {
		s := start{store: st, jsSync: o.JSSync[0]}
		s.rooms = i == 0 && want(ScenarioRooms)
		s.other = want(ScenarioControl) || want(ScenarioConnect) || i == 0 && want(ScenarioBlobs)
		if s.rooms || s.other {
			starts = append(starts, s)
		}
	}
	if want(ScenarioRooms) {
		for _, js := range o.JSSync[1:] {
			starts = append(starts, start{store: o.Stores[0], jsSync: js, rooms: true})
		}
	}
	for _, st := range starts {
		what := fmt.Sprintf("membershipd --store %s --js-sync %s", st.store, st.jsSync)
		progress("start " + what)
		srv, err := StartServer(ctx, o.Membershipd, st.store, st.jsSync)
		if errors.Is(err, ErrNotImplemented) {
			rep.Skipped = append(rep.Skipped, Skip{What: "store " + st.store, Reason: err.Error()})
			progress("SKIP store " + st.store + ": " + err.Error())
			continue
		}
		if err != nil {
			fail(what, err)
			continue
		}
		// Idle: membershipd as started, with nothing asked of it yet.
		time.Sleep(min(memSettle, 10*o.Duration))
		mem := func(what string, kib int64) {
			if kib > 0 {
				rep.Memory = append(rep.Memory, MemoryResult{What: what, Store: st.store, JSSync: st.jsSync, KiB: kib})
			}
		}
		mem(MemIdle, procStatusKiB(srv.PID(), "VmRSS"))
		func() {
			defer srv.Stop()
			defer func() { mem(MemPeak, procStatusKiB(srv.PID(), "VmHWM")) }()
			adm, err := identity.Load(srv.AdminIDFile)
			if err != nil {
				fail(what, err)
				return
			}
			internal, err := identity.Load(srv.InternalIDFile)
			if err != nil {
				fail(what, err)
				return
			}
			f, err := newFixture(ctx, []string{srv.HTTPURL}, []string{srv.NATSURL}, nil, adm, internal, srv.PID())
			if err != nil {
				fail(what, err)
				return
			}
			defer f.close()
			f.store, f.jsSync = st.store, st.jsSync
			runFixture(ctx, o, rep, f, st.rooms, st.other, st.store == o.Stores[0], progress, fail)
		}()
	}
}

func runTarget(ctx context.Context, o Options, rep *Report, progress func(string), fail func(string, error)) {
	t := o.Target
	f, err := newFixture(ctx, t.Servers, t.NATS, t.RootCAs, t.Identity, t.Internal, 0)
	if err != nil {
		fail("target", err)
		return
	}
	defer f.close()
	progress(fmt.Sprintf("target %s (store %s, js-sync %s)", t.Servers[0], f.store, f.jsSync))
	if t.Internal == nil && slices.Contains(o.Scenarios, ScenarioRooms) {
		rep.Skipped = append(rep.Skipped, Skip{What: "raw room messages", Reason: "the raw baseline reads and writes the room streams as the deployment's internal identity (members have no JetStream): pass its identity file to measure it"})
	}
	runFixture(ctx, o, rep, f, slices.Contains(o.Scenarios, ScenarioRooms), true, true, progress, fail)
}

// runFixture runs the scenarios one deployment carries.
func runFixture(ctx context.Context, o Options, rep *Report, f *fixture, rooms, other, first bool, progress func(string), fail func(string, error)) {
	want := func(s string) bool { return slices.Contains(o.Scenarios, s) }
	label := fmt.Sprintf("store=%s js-sync=%s", f.store, f.jsSync)
	if rooms {
		r, err := f.Rooms(ctx, o.Sizes, o.Duration, progress)
		rep.Rooms = append(rep.Rooms, r...)
		if err != nil {
			fail("room messages "+label, err)
		}
	}
	if !other {
		return
	}
	if want(ScenarioControl) {
		progress("control plane: " + label)
		r, err := f.Control(ctx, o.Workers, o.Duration, rep.Ceilings, o.Self)
		rep.Control = append(rep.Control, r...)
		if err != nil {
			fail("control plane "+label, err)
		}
	}
	if want(ScenarioConnect) {
		progress("connect: " + label)
		r, err := f.Connect(ctx, o.Workers, o.Duration)
		if err != nil {
			fail("connect "+label, err)
		} else {
			rep.Connect = append(rep.Connect, r)
		}
	}
	if want(ScenarioBlobs) && first {
		progress(fmt.Sprintf("blobs: %d MiB up and down", o.BlobSize>>20))
		r, err := f.Blobs(ctx, o.BlobSize, o.Duration)
		rep.Blobs = append(rep.Blobs, r...)
		if err != nil {
			fail("blobs", err)
		}
	}
}

// targets evaluates the room scenario's target for 1 KiB messages (or the
// size nearest to it).
func targets(rep *Report) []TargetCheck {
	var out []TargetCheck
	size := 0
	for _, r := range rep.Rooms {
		if size == 0 || abs(r.Size-1024) < abs(size-1024) {
			size = r.Size
		}
	}
	verify, verifySDK := 0.0, 0.0
	for _, c := range rep.Ceilings {
		if c.Op == OpVerify && c.Size == size {
			verify = c.AllCores
		}
		if c.Op == OpVerifyBatch && c.Size == size {
			verifySDK = c.AllCores
		}
	}
	for _, r := range rep.Rooms {
		if r.Size != size || r.Path != "e2e" {
			continue
		}
		var raw *RoomResult
		for i, q := range rep.Rooms {
			if q.Size == size && q.Path == "raw" && q.JSSync == r.JSSync && q.Store == r.Store {
				raw = &rep.Rooms[i]
			}
		}
		if raw == nil {
			continue
		}
		for _, k := range []struct {
			kind     string
			raw, e2e float64
		}{{"publish→consume", raw.MsgsPerSec, r.MsgsPerSec}, {"catch-up read", raw.ReadMsgsPerSec, r.ReadMsgsPerSec}} {
			bound := k.raw
			if verify > 0 && verify < bound {
				bound = verify
			}
			if bound == 0 {
				continue
			}
			t := TargetCheck{Kind: k.kind, JSSync: r.JSSync, Size: size, Raw: k.raw, Verify: verify, Goal: 0.8 * bound,
				E2E: k.e2e, Fraction: k.e2e / bound, VerifySDK: verifySDK}
			t.Met = t.E2E >= t.Goal
			if sdkBound := min(k.raw, verifySDK); sdkBound > 0 {
				t.FractionSDK = k.e2e / sdkBound
			}
			if cpu := r.ClientCPUUS + r.ServerCPUUS; k.kind == "publish→consume" && cpu > 0 && r.ServerCPUUS > 0 {
				t.CPUBound = float64(rep.Machine.CPUs) * 1e6 / cpu
			}
			out = append(out, t)
		}
	}
	return out
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func machine() Machine {
	m := Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemoryGiB = (kb + 1<<19) >> 20
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			switch d.Path {
			case "github.com/nats-io/nats-server/v2":
				m.NATSServer = d.Version
			case "github.com/nats-io/nats.go":
				m.NATSClient = d.Version
			}
		}
	}
	return m
}
