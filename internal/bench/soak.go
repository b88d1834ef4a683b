package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
)

// SoakOptions configures a soak: steady mixed load against one membershipd
// the bench starts, with the server's memory sampled at intervals, to show
// whether anything grows. A soak never runs as part of Run.
type SoakOptions struct {
	Membershipd string
	Store       string        // control-plane store (default sqlite)
	JSSync      string        // membershipd --js-sync (default always)
	Duration    time.Duration // how long the load runs
	Interval    time.Duration // between samples (default 10 s)
	Progress    io.Writer     // one line per sample; nil discards
}

// The soak's paced load, per second: about 200 room messages of 1 KiB (a
// batch of 20 every 100 ms, E2E through the SDK, one receiver), 100 signed
// requests (GET /v1/me, GET /v1/rooms, room info), 50 data-plane logins,
// a member added to and removed from a room (with the key rotation) every
// 5 s, and a 1 MiB blob up and down every 30 s.
const (
	soakMsgSize      = 1024
	soakMsgBatch     = 20
	soakMsgEvery     = 100 * time.Millisecond
	soakRequestEvery = 10 * time.Millisecond
	soakLoginEvery   = 20 * time.Millisecond
	soakChurnEvery   = 5 * time.Second
	soakBlobEvery    = 30 * time.Second
	soakBlobSize     = 1 << 20
)

// SoakLoad describes the load in the report.
const SoakLoad = "per second: ~200 E2E room messages of 1 KiB (batches of 20), ~100 signed requests, ~50 data-plane logins; " +
	"a member added and removed (key rotation, kick) every 5 s; a 1 MiB blob up and down every 30 s"

// SoakSample is one reading of the server during a soak. Counts are
// cumulative since the load started.
type SoakSample struct {
	T          float64 `json:"t_s"`
	RSSKiB     int64   `json:"rss_kib"`
	HeapInuse  int64   `json:"heap_inuse_bytes,omitempty"` // from /metrics
	Goroutines int     `json:"goroutines,omitempty"`       // from /metrics
	OpenFDs    int     `json:"open_fds,omitempty"`         // from /metrics
	ServerCPUS float64 `json:"server_cpu_s"`
	Msgs       int64   `json:"msgs_received"`
	Requests   int64   `json:"requests"`
	Logins     int64   `json:"logins"`
	Churns     int64   `json:"member_changes"`
	Blobs      int64   `json:"blobs"`
}

// SoakReport is the curve of a soak and the trend of its second half.
type SoakReport struct {
	Machine   Machine      `json:"machine"`
	Store     string       `json:"store"`
	JSSync    string       `json:"js_sync"`
	Load      string       `json:"load"`
	Started   time.Time    `json:"started"`
	DurationS float64      `json:"duration_s"`
	IntervalS float64      `json:"interval_s"`
	IdleKiB   int64        `json:"idle_rss_kib"` // before the load
	Samples   []SoakSample `json:"samples"`
	// Trends over the second half of the samples (the first half is the
	// warm-up: caches, buffers and the stream's index fill), by least
	// squares, per minute.
	RSSKiBPerMin        float64  `json:"rss_kib_per_min"`
	HeapBytesPerMin     float64  `json:"heap_bytes_per_min"`
	GoroutinesPerMin    float64  `json:"goroutines_per_min"`
	MsgsSent            int64    `json:"msgs_sent"`
	Errors              []string `json:"errors,omitempty"`
	ErrorCount          int64    `json:"error_count,omitempty"`
	LostOrUndeliverable int64    `json:"msgs_lost,omitempty"`
}

// Soak runs the mixed load for o.Duration and returns the curve. The error
// is non-nil when the server did not start or the load failed (an error is
// recorded in the report and the load goes on; a lost message is one).
func Soak(ctx context.Context, o SoakOptions) (*SoakReport, error) {
	if o.Store == "" {
		o.Store = "sqlite"
	}
	if o.JSSync == "" {
		o.JSSync = "always"
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Duration < o.Interval || o.Membershipd == "" {
		return nil, errors.New("a soak needs a membershipd binary and a duration of at least one interval")
	}
	rep := &SoakReport{Machine: machine(), Store: o.Store, JSSync: o.JSSync, Load: SoakLoad, Started: time.Now(),
		IntervalS: o.Interval.Seconds()}
	progress := func(format string, args ...any) {
		fmt.Fprintf(o.Progress, "[%6.1fs] %s\n", time.Since(rep.Started).Seconds(), fmt.Sprintf(format, args...))
	}
	progress("start membershipd --store %s --js-sync %s", o.Store, o.JSSync)
	srv, err := StartServer(ctx, o.Membershipd, o.Store, o.JSSync)
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	time.Sleep(memSettle)
	rep.IdleKiB = procStatusKiB(srv.PID(), "VmRSS")
	adm, err := identity.Load(srv.AdminIDFile)
	if err != nil {
		return nil, err
	}
	f, err := newFixture(ctx, []string{srv.HTTPURL}, []string{srv.NATSURL}, nil, adm, nil, srv.PID())
	if err != nil {
		return nil, err
	}
	defer f.close()
	l, err := newSoakLoad(ctx, f)
	if err != nil {
		return nil, err
	}
	progress("idle RSS %.1f MiB; load: %s", float64(rep.IdleKiB)/1024, SoakLoad)

	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	l.start(lctx, &wg)
	start := time.Now()
	hc := f.httpClient() // one connection for every sample
	sample := func() {
		s := SoakSample{T: time.Since(start).Seconds(), RSSKiB: procStatusKiB(srv.PID(), "VmRSS"),
			ServerCPUS: procCPU(srv.PID()).Seconds(), Msgs: l.received.Load(), Requests: l.requests.Load(),
			Logins: l.logins.Load(), Churns: l.churns.Load(), Blobs: l.blobs.Load()}
		s.HeapInuse, s.Goroutines, s.OpenFDs = f.serverMetrics(ctx, hc)
		rep.Samples = append(rep.Samples, s)
		progress("RSS %6.1f MiB  heap %6.1f MiB  goroutines %4d  fds %4d  msgs %8d  requests %7d  logins %6d  member changes %4d  blobs %3d",
			float64(s.RSSKiB)/1024, float64(s.HeapInuse)/(1<<20), s.Goroutines, s.OpenFDs, s.Msgs, s.Requests, s.Logins, s.Churns, s.Blobs)
	}
	tick := time.NewTicker(o.Interval)
	for done := false; !done; {
		select {
		case <-tick.C:
			sample()
			done = time.Since(start) >= o.Duration
		case <-ctx.Done():
			done = true
		}
	}
	tick.Stop()
	stop()
	wg.Wait()
	rep.DurationS = time.Since(start).Seconds()
	rep.MsgsSent = l.sent.Load()
	// Every message sent must arrive.
	if err := l.drain(ctx, 30*time.Second); err != nil {
		l.fail(err)
	}
	rep.LostOrUndeliverable = rep.MsgsSent - l.received.Load()
	rep.Errors, rep.ErrorCount = l.errors()
	rep.trends()
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	if rep.ErrorCount > 0 {
		return rep, fmt.Errorf("%d load errors; first: %s", rep.ErrorCount, rep.Errors[0])
	}
	return rep, nil
}

// trends fits the second half of the samples.
func (r *SoakReport) trends() {
	half := r.Samples[len(r.Samples)/2:]
	if len(half) < 2 {
		return
	}
	fit := func(y func(SoakSample) float64) float64 {
		var n, sx, sy, sxx, sxy float64
		for _, s := range half {
			x := s.T / 60
			n, sx, sy, sxx, sxy = n+1, sx+x, sy+y(s), sxx+x*x, sxy+x*y(s)
		}
		if d := n*sxx - sx*sx; d != 0 {
			return (n*sxy - sx*sy) / d
		}
		return 0
	}
	r.RSSKiBPerMin = fit(func(s SoakSample) float64 { return float64(s.RSSKiB) })
	r.HeapBytesPerMin = fit(func(s SoakSample) float64 { return float64(s.HeapInuse) })
	r.GoroutinesPerMin = fit(func(s SoakSample) float64 { return float64(s.Goroutines) })
}

// soakLoad is the running mixed load and its counters.
type soakLoad struct {
	f         *fixture
	room      string // the message room: the admin sends, the receiver listens
	churnRoom string // the admin adds and removes churn in it
	churn     *identity.Identity
	login     *identity.Identity

	sent, received, requests, logins, churns, blobs atomic.Int64

	errMu  sync.Mutex
	errs   []string
	nerr   int64
	listen chan error
	lstop  context.CancelFunc
}

func newSoakLoad(ctx context.Context, f *fixture) (*soakLoad, error) {
	l := &soakLoad{f: f}
	r, err := f.room(ctx, "bench-soak")
	if err != nil {
		return nil, err
	}
	l.room = r.ID
	churn, err := f.admC.CreateRoom(ctx, "bench-soak-churn")
	if err != nil {
		return nil, fmt.Errorf("create room: %w", err)
	}
	l.churnRoom = churn.ID
	for _, p := range []**identity.Identity{&l.churn, &l.login} {
		id, err := identity.Generate()
		if err != nil {
			return nil, err
		}
		if _, err := f.admC.AddUser(ctx, "bench-soak-"+randHex(4), id.SignPub().String(), "member"); err != nil {
			return nil, fmt.Errorf("register a soak user: %w", err)
		}
		c, err := client.Dial(ctx, f.clientConfig(id)) // publishes its KEM key
		if err != nil {
			return nil, err
		}
		c.Close()
		*p = id
	}
	return l, nil
}

// fail records a load error (the first 20 distinct ones are kept).
func (l *soakLoad) fail(err error) {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	l.nerr++
	if len(l.errs) < 20 {
		l.errs = append(l.errs, err.Error())
	}
}

func (l *soakLoad) errors() ([]string, int64) {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.errs, l.nerr
}

// every runs op every period until ctx ends.
func every(ctx context.Context, wg *sync.WaitGroup, period time.Duration, op func(ctx context.Context)) {
	wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				op(ctx)
			}
		}
	})
}

// start runs every kind of load until ctx ends; the receiver runs until drain.
func (l *soakLoad) start(ctx context.Context, wg *sync.WaitGroup) {
	f := l.f
	lctx, lstop := context.WithCancel(context.Background())
	l.lstop, l.listen = lstop, make(chan error, 1)
	go func() {
		l.listen <- f.rxC.Listen(lctx, l.room, client.ListenOptions{FromStart: true, OnError: func(err error) { l.fail(fmt.Errorf("receive: %w", err)) }},
			func(client.Message) { l.received.Add(1) })
	}()
	batch := make([][]byte, soakMsgBatch)
	for i := range batch {
		batch[i] = make([]byte, soakMsgSize)
		rand.Read(batch[i])
	}
	every(ctx, wg, soakMsgEvery, func(ctx context.Context) {
		// A batch is never cut off by the end of the load: a send
		// interrupted after its messages were published would go
		// uncounted while they arrive, and the count of lost messages
		// would be off (it went negative in CI).
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := f.admC.SendBatch(sctx, l.room, "soak", batch); err != nil {
			l.fail(fmt.Errorf("send: %w", err))
			return
		}
		l.sent.Add(int64(len(batch)))
	})
	reqs := []func(ctx context.Context) error{
		func(ctx context.Context) error { _, err := f.admC.Me(ctx); return err },
		func(ctx context.Context) error { _, err := f.rxC.ListRooms(ctx); return err },
		func(ctx context.Context) error { _, err := f.rxC.RoomInfo(ctx, l.room); return err },
	}
	var n atomic.Int64
	every(ctx, wg, soakRequestEvery, func(ctx context.Context) {
		if err := reqs[n.Add(1)%int64(len(reqs))](ctx); err != nil {
			if ctx.Err() == nil {
				l.fail(fmt.Errorf("signed request: %w", err))
			}
			return
		}
		l.requests.Add(1)
	})
	every(ctx, wg, soakLoginEvery, func(ctx context.Context) {
		nc, err := f.natsConnect(l.login, nats.NoReconnect())
		if err != nil {
			if ctx.Err() == nil {
				l.fail(fmt.Errorf("login: %w", err))
			}
			return
		}
		nc.Close()
		l.logins.Add(1)
	})
	member := l.churn.SignPub().String()
	every(ctx, wg, soakChurnEvery, func(ctx context.Context) {
		if err := f.admC.AddMember(ctx, l.churnRoom, member, "member"); err != nil {
			if ctx.Err() == nil {
				l.fail(fmt.Errorf("add member: %w", err))
			}
			return
		}
		if err := f.admC.RemoveMember(ctx, l.churnRoom, member); err != nil {
			if ctx.Err() == nil {
				l.fail(fmt.Errorf("remove member: %w", err))
			}
			return
		}
		l.churns.Add(2)
	})
	blob := make([]byte, soakBlobSize)
	rand.Read(blob)
	every(ctx, wg, soakBlobEvery, func(ctx context.Context) {
		ann, err := f.admC.PutBlob(ctx, l.room, bytes.NewReader(blob), client.BlobMeta{Name: "soak"}, nil)
		if err == nil {
			var got int64
			if got, err = f.rxC.GetBlob(ctx, l.room, ann, io.Discard, nil); err == nil && got != soakBlobSize {
				err = fmt.Errorf("%d of %d bytes", got, soakBlobSize)
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				l.fail(fmt.Errorf("blob: %w", err))
			}
			return
		}
		l.blobs.Add(1)
	})
}

// drain waits until every message sent has been received (or timeout),
// then stops the receiver.
func (l *soakLoad) drain(ctx context.Context, timeout time.Duration) error {
	defer func() {
		l.lstop()
		if err := <-l.listen; err != nil && !errors.Is(err, context.Canceled) {
			l.fail(fmt.Errorf("listen: %w", err))
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return harness.Wait(ctx, func() error {
		if got, sent := l.received.Load(), l.sent.Load(); got < sent {
			return fmt.Errorf("%d of %d messages arrived", got, sent)
		}
		return nil
	})
}

// serverMetrics reads the Go runtime's gauges from the server's /metrics
// (zeros when it does not expose them).
func (f *fixture) serverMetrics(ctx context.Context, hc *http.Client) (heapInuse int64, goroutines, fds int) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(f.servers[0], "/")+"/metrics", nil)
	if err != nil {
		return
	}
	resp, err := hc.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			heapInuse = int64(x)
		case "go_goroutines":
			goroutines = int(x)
		case "process_open_fds":
			fds = int(x)
		}
	}
	return
}

// WriteTable prints the soak's curve and trends for people.
func (r *SoakReport) WriteTable(w io.Writer) error {
	m := r.Machine
	fmt.Fprintf(w, "unibus-bench soak: %d × %s, %d GiB, %s/%s, %s, nats-server %s; load average at the start %s\n",
		m.CPUs, orDash(m.CPUModel), m.MemoryGiB, m.OS, m.Arch, m.Go, m.NATSServer, orDash(m.LoadAvg))
	fmt.Fprintf(w, "membershipd --store %s --js-sync %s, %.0f s of load, a sample every %.0f s; idle RSS before the load %.1f MiB\n",
		r.Store, r.JSSync, r.DurationS, r.IntervalS, float64(r.IdleKiB)/1024)
	fmt.Fprintf(w, "load, %s\n\n", r.Load)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "t s\tRSS MiB\theap MiB\tgoroutines\tfds\tserver CPU s\tmsgs\trequests\tlogins\tmember changes\tblobs\t\n")
	for _, s := range r.Samples {
		fmt.Fprintf(tw, "%.0f\t%.1f\t%.1f\t%d\t%d\t%.1f\t%d\t%d\t%d\t%d\t%d\t\n", s.T, float64(s.RSSKiB)/1024, float64(s.HeapInuse)/(1<<20),
			s.Goroutines, s.OpenFDs, s.ServerCPUS, s.Msgs, s.Requests, s.Logins, s.Churns, s.Blobs)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nsecond half, least squares: RSS %+.0f KiB/min, heap %+.0f KiB/min, goroutines %+.2f/min\n",
		r.RSSKiBPerMin, r.HeapBytesPerMin/1024, r.GoroutinesPerMin)
	fmt.Fprintf(w, "messages: %d sent, %d not received\n", r.MsgsSent, r.LostOrUndeliverable)
	for _, e := range r.Errors {
		fmt.Fprintf(w, "ERROR %s\n", e)
	}
	if n := r.ErrorCount - int64(len(r.Errors)); n > 0 {
		fmt.Fprintf(w, "ERROR … and %d more\n", n)
	}
	return nil
}
