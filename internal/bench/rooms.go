package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/client"
)

// RoomResult is one room-message measurement: one sender, one receiver
// (separate connections), one room in the shared stream.
type RoomResult struct {
	Store  string `json:"store"`
	JSSync string `json:"js_sync"`
	Size   int    `json:"size"`
	// Path is "raw" (plaintext published and consumed with nats.go's
	// JetStream API on the room's subject of the shared stream, by the
	// deployment's internal identity: the engine alone) or "e2e" (the
	// SDK: encrypt+sign, publish through membershipd's relay, receive
	// through a listener, verify+decrypt).
	Path       string  `json:"path"`
	Msgs       int     `json:"msgs"`
	MsgsPerSec float64 `json:"msgs_per_s"`
	// Ratio is e2e msgs/s over raw msgs/s of the same size (e2e rows).
	Ratio float64 `json:"ratio,omitempty"`
	// P50Ms and P99Ms are publish-to-delivery latencies with one message
	// in flight; LoadedP50Ms and LoadedP99Ms during the throughput run.
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	LoadedP50Ms float64 `json:"loaded_p50_ms"`
	LoadedP99Ms float64 `json:"loaded_p99_ms"`
	// Per message: CPU time of the bench process (sender and receiver),
	// of the server process (0 for a target), and heap allocations of the
	// bench process, during the throughput run.
	ClientCPUUS  float64 `json:"client_cpu_us_per_msg"`
	ServerCPUUS  float64 `json:"server_cpu_us_per_msg,omitempty"`
	ClientAllocs float64 `json:"client_allocs_per_msg"`
	// The catch-up read: a new reader reads the whole stream (every
	// message above, already stored) from the start. It isolates the
	// receiving side, which is where signatures are verified.
	ReadMsgs        int     `json:"read_msgs"`
	ReadMsgsPerSec  float64 `json:"read_msgs_per_s"`
	ReadRatio       float64 `json:"read_ratio,omitempty"`
	ReadClientCPUUS float64 `json:"read_client_cpu_us_per_msg"`
	ReadServerCPUUS float64 `json:"read_server_cpu_us_per_msg,omitempty"`
	ReadAllocs      float64 `json:"read_client_allocs_per_msg"`
}

// roomBatch is how many messages one publish step sends (pipelined, with
// acknowledgement) in the throughput run, on both paths.
const roomBatch = 500

// warmup messages go through each path before it is measured.
const warmup = 50

// sink receives messages on either path and records latencies from the
// send time stamped in the first 8 bytes of each payload.
type sink struct {
	epoch time.Time
	mu    sync.Mutex
	got   int
	lat   []time.Duration
	last  time.Time
	wake  chan struct{}
	bad   atomic.Int64
	errMu sync.Mutex
	err   error
	fatal atomic.Pointer[error] // the receiver stopped
}

func newSink() *sink { return &sink{epoch: time.Now(), wake: make(chan struct{}, 1)} }

func (s *sink) stamp(b []byte) { binary.BigEndian.PutUint64(b, uint64(time.Since(s.epoch))) }

func (s *sink) receive(data []byte) {
	now := time.Since(s.epoch)
	var sent time.Duration
	if len(data) >= 8 {
		sent = time.Duration(binary.BigEndian.Uint64(data))
	}
	s.mu.Lock()
	s.got++
	s.lat = append(s.lat, now-sent)
	s.last = time.Now()
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *sink) report(err error) {
	s.bad.Add(1)
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.errMu.Unlock()
}

// stop records that the receiver stopped with err.
func (s *sink) stop(err error) {
	s.fatal.CompareAndSwap(nil, &err)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// waitFor waits until n messages in all have arrived.
func (s *sink) waitFor(ctx context.Context, n int, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		if err := s.fatal.Load(); err != nil {
			return fmt.Errorf("receiver stopped: %w", *err)
		}
		s.mu.Lock()
		got := s.got
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-s.wake:
		case <-t.C:
			return fmt.Errorf("received %d of %d messages after %s", got, n, timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// take returns the latencies recorded so far and the last arrival, and
// starts a new recording.
func (s *sink) take() ([]time.Duration, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, last := s.lat, s.last
	s.lat = nil
	return l, last
}

// path is one way of moving messages: a pipelined batch publish that
// returns when every message is acknowledged, a single publish, and a
// reader of the whole stream from its start into a sink (stopped by stop).
type path struct {
	batch func(ctx context.Context, msgs [][]byte) error
	one   func(ctx context.Context, msg []byte) error
	read  func(ctx context.Context, s *sink) (stop func() error, err error)
}

// drive measures a path: a warm-up, a throughput run of at least d
// (batches of roomBatch), then up to d/2 of one-in-flight latency samples.
func drive(ctx context.Context, s *sink, p path, size int, d time.Duration, pid int) (RoomResult, error) {
	r := RoomResult{Size: size}
	batch := make([][]byte, roomBatch)
	for i := range batch {
		batch[i] = make([]byte, size)
		rand.Read(batch[i])
	}
	total := 0
	send := func(msgs [][]byte) error {
		for _, m := range msgs {
			s.stamp(m)
		}
		if err := p.batch(ctx, msgs); err != nil {
			return err
		}
		total += len(msgs)
		return nil
	}
	wait := func() error { return s.waitFor(ctx, total, time.Minute) }
	if err := send(batch[:warmup]); err != nil {
		return r, fmt.Errorf("warm-up: %w", err)
	}
	if err := wait(); err != nil {
		return r, fmt.Errorf("warm-up: %w", err)
	}
	s.take()

	u := snapshot(pid)
	start := time.Now()
	sent := 0
	for sent == 0 || time.Since(start) < d {
		if err := send(batch); err != nil {
			return r, err
		}
		sent += len(batch)
	}
	if err := wait(); err != nil {
		return r, err
	}
	loaded, last := s.take()
	r.ClientCPUUS, r.ServerCPUUS, r.ClientAllocs = u.since(sent)
	r.Msgs = sent
	r.MsgsPerSec = float64(sent) / last.Sub(start).Seconds()
	r.LoadedP50Ms, r.LoadedP99Ms = percentile(loaded, 50), percentile(loaded, 99)

	lstart := time.Now()
	for n := 0; n < 1000 && (n < 20 || time.Since(lstart) < d/2); n++ {
		s.stamp(batch[0])
		if err := p.one(ctx, batch[0]); err != nil {
			return r, err
		}
		total++
		if err := wait(); err != nil {
			return r, err
		}
	}
	one, _ := s.take()
	r.P50Ms, r.P99Ms = percentile(one, 50), percentile(one, 99)
	if n := s.bad.Load(); n > 0 {
		return r, fmt.Errorf("%d messages reported and not delivered; first: %w", n, s.err)
	}

	// Catch-up read of everything above.
	rs := newSink()
	u = snapshot(pid)
	start = time.Now()
	stop, err := p.read(ctx, rs)
	if err != nil {
		return r, fmt.Errorf("catch-up read: %w", err)
	}
	werr := rs.waitFor(ctx, total, time.Minute)
	_, last = rs.take()
	if err := errors.Join(werr, stop()); err != nil {
		return r, fmt.Errorf("catch-up read: %w", err)
	}
	r.ReadMsgs = total
	r.ReadMsgsPerSec = float64(total) / last.Sub(start).Seconds()
	r.ReadClientCPUUS, r.ReadServerCPUUS, r.ReadAllocs = u.since(total)
	if n := rs.bad.Load(); n > 0 {
		return r, fmt.Errorf("catch-up read: %d messages reported and not delivered; first: %w", n, rs.err)
	}
	return r, nil
}

// Rooms measures room messages of each size, raw and end to end, on one
// deployment. Without the deployment's internal identity (a target given
// none) only the end-to-end path is measured.
func (f *fixture) Rooms(ctx context.Context, sizes []int, d time.Duration, progress func(string)) ([]RoomResult, error) {
	type pair struct{ raw, e2e client.Room }
	rooms := make([]pair, len(sizes))
	for i := range sizes {
		var err error
		if f.internal != nil {
			if rooms[i].raw, err = f.room(ctx, fmt.Sprintf("bench-raw-%d", sizes[i])); err != nil {
				return nil, err
			}
		}
		if rooms[i].e2e, err = f.room(ctx, fmt.Sprintf("bench-e2e-%d", sizes[i])); err != nil {
			return nil, err
		}
	}
	// The raw path reads and writes the room streams as the engine's own
	// client would: members have no JetStream, so it logs in as the
	// internal identity, with a connection for each side.
	var pubJS, subJS jetstream.JetStream
	if f.internal != nil {
		pubNC, err := f.busConnect()
		if err != nil {
			return nil, err
		}
		defer pubNC.Close()
		subNC, err := f.busConnect()
		if err != nil {
			return nil, err
		}
		defer subNC.Close()
		if pubJS, err = jetstream.New(pubNC); err != nil {
			return nil, err
		}
		if subJS, err = jetstream.New(subNC); err != nil {
			return nil, err
		}
	}
	var out []RoomResult
	for i, size := range sizes {
		var raw RoomResult
		if f.internal != nil {
			progress(fmt.Sprintf("room messages: store=%s js-sync=%s size=%d raw", f.store, f.jsSync, size))
			var err error
			if raw, err = f.rawRoom(ctx, pubJS, subJS, rooms[i].raw, size, d); err != nil {
				return out, fmt.Errorf("raw %d B: %w", size, err)
			}
		}
		progress(fmt.Sprintf("room messages: store=%s js-sync=%s size=%d e2e", f.store, f.jsSync, size))
		e, err := f.e2eRoom(ctx, rooms[i].e2e.ID, size, d)
		if err != nil {
			return out, fmt.Errorf("e2e %d B: %w", size, err)
		}
		if raw.MsgsPerSec > 0 {
			e.Ratio = e.MsgsPerSec / raw.MsgsPerSec
		}
		if raw.ReadMsgsPerSec > 0 {
			e.ReadRatio = e.ReadMsgsPerSec / raw.ReadMsgsPerSec
		}
		if f.internal != nil {
			out = append(out, raw)
		}
		out = append(out, e)
	}
	return out, nil
}

// rawRoom measures the engine alone on the stream and subject the relay
// stores the room's messages on: pipelined JetStream publishes, and an
// ordered consumer of the room's subjects (membershipd's periodic sweep
// deletes a consumer that is not a listener; the ordered consumer then
// makes a new one and goes on after its last message).
func (f *fixture) rawRoom(ctx context.Context, pubJS, subJS jetstream.JetStream, room client.Room, size int, d time.Duration) (RoomResult, error) {
	stream, filter, subj := roomStream(room, "msg")
	s := newSink()
	read := func(ctx context.Context, s *sink) (func() error, error) {
		cons, err := subJS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			return nil, err
		}
		cc, err := cons.Consume(func(m jetstream.Msg) { s.receive(m.Data()) })
		if err != nil {
			return nil, err
		}
		return func() error { cc.Stop(); return nil }, nil
	}
	stop, err := read(ctx, s)
	if err != nil {
		return RoomResult{}, err
	}
	defer stop()
	p := path{
		batch: func(ctx context.Context, msgs [][]byte) error {
			futures := make([]jetstream.PubAckFuture, 0, len(msgs))
			for _, m := range msgs {
				fut, err := pubJS.PublishAsync(subj, m)
				if err != nil {
					return err
				}
				futures = append(futures, fut)
			}
			for _, fut := range futures {
				select {
				case <-fut.Ok():
				case err := <-fut.Err():
					return err
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		},
		one: func(ctx context.Context, m []byte) error {
			_, err := pubJS.Publish(ctx, subj, m)
			return err
		},
		read: read,
	}
	r, err := drive(ctx, s, p, size, d, f.pid)
	r.Store, r.JSSync, r.Path = f.store, f.jsSync, "raw"
	return r, err
}

// e2eRoom measures the SDK end to end in room: the admin sends, the
// receiver listens.
func (f *fixture) e2eRoom(ctx context.Context, room string, size int, d time.Duration) (RoomResult, error) {
	read := func(ctx context.Context, s *sink) (func() error, error) {
		lctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			err := f.rxC.Listen(lctx, room, client.ListenOptions{FromStart: true, OnError: s.report},
				func(m client.Message) { s.receive(m.Data) })
			if err != nil && lctx.Err() == nil {
				s.stop(err)
			}
			done <- err
		}()
		return func() error {
			stop()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("listen: %w", err)
			}
			return nil
		}, nil
	}
	s := newSink()
	stop, _ := read(ctx, s)
	p := path{
		batch: func(ctx context.Context, msgs [][]byte) error {
			_, err := f.admC.SendBatch(ctx, room, "msg", msgs)
			return err
		},
		one: func(ctx context.Context, m []byte) error {
			_, err := f.admC.Send(ctx, room, "msg", m)
			return err
		},
		read: read,
	}
	r, err := drive(ctx, s, p, size, d, f.pid)
	err = errors.Join(err, stop())
	r.Store, r.JSSync, r.Path = f.store, f.jsSync, "e2e"
	return r, err
}
