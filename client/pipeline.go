package client

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// The receive pipeline of Listen. Signature verification costs tens of
// microseconds a message, an order of magnitude more than everything else
// a receiver does, so it runs on every core while delivery stays in stream
// order:
//
//	consumer callback ─→ in ─→ dispatcher ─→ work ─→ workers (GOMAXPROCS):
//	                           │ parse, membership,          batch verify,
//	                           │ sender key (once),          decrypt
//	                           │ chunks of ≤ maxChunk
//	                           └──────→ ordered ─→ delivery (one goroutine):
//	                                               waits for each chunk in
//	                                               turn; refresh-and-retry,
//	                                               sequence check, fn
//
// The dispatcher takes whatever has arrived, up to maxChunk messages, so a
// chunk is one message at low rates (no added latency) and grows under
// load, where a worker verifies it as one ed25519 batch (cheaper per
// signature) against each sender's key prepared once. Every message is
// still verified (signature by the sender it names, sender a member)
// before it is decrypted and before fn sees it; a message that fails is
// reported through OnError and never delivered.

// maxChunk bounds the messages one worker handles at a time.
const maxChunk = 64

// recvJob is one received message on its way through the pipeline.
type recvJob struct {
	m   *nats.Msg
	env e2e.Envelope
	st  *roomState // the room state the checks ran against
	mem wire.Member
	key *e2e.SenderKey
	// retry: the state lacked the sender or the epoch's key; delivery
	// refreshes it and runs the checks again (membership may have changed).
	retry bool
	err   error // final: reported, not delivered
	pt    []byte
	md    *nats.MsgMetadata
}

// recvChunk is a run of consecutive messages.
type recvChunk struct {
	jobs []recvJob
	done chan struct{} // one token when the workers are through
}

var chunkPool = sync.Pool{New: func() any {
	return &recvChunk{jobs: make([]recvJob, 0, maxChunk), done: make(chan struct{}, 1)}
}}

// senderStream identifies one sender stream for the sequence checks.
type senderStream struct {
	sender identity.SignPub
	stream string
}

// pipeline is one Listen's receive path.
type pipeline struct {
	ctx     context.Context
	c       *Client
	room    string
	onError func(error)
	fn      func(Message)

	in      chan *nats.Msg
	work    chan *recvChunk
	ordered chan *recvChunk
	quit    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once

	seq  verifier                            // delivery goroutine only
	keys map[identity.SignPub]*e2e.SenderKey // dispatcher only

	// handled counts the messages delivered or reported, and target, when
	// positive, is the count at which onCaughtUp is called (delivery
	// goroutine only once set).
	handled    uint64
	target     atomic.Uint64
	onCaughtUp func()
}

// maxSenderKeys bounds the prepared keys a Listen keeps (1.5 KiB each);
// past it the cache starts over.
const maxSenderKeys = 4096

// verifier tracks the sequence of each sender stream of one Listen.
type verifier struct {
	fromStart bool
	last      map[string]uint64 // "<sender hex>/<stream>" -> last seq seen
	// keys caches the last map's key of each sender stream, so that a
	// message costs no allocation; nil until first used.
	keys map[senderStream]string
}

func newPipeline(ctx context.Context, c *Client, room string, fromStart bool, onError func(error), fn func(Message)) *pipeline {
	workers := runtime.GOMAXPROCS(0)
	p := &pipeline{
		ctx: ctx, c: c, room: room, onError: onError, fn: fn,
		in:      make(chan *nats.Msg, 4*maxChunk),
		work:    make(chan *recvChunk, workers),
		ordered: make(chan *recvChunk, 2*workers),
		quit:    make(chan struct{}),
		seq:     verifier{fromStart: fromStart, last: map[string]uint64{}},
		keys:    map[identity.SignPub]*e2e.SenderKey{},
	}
	p.wg.Add(2 + workers)
	go p.dispatch()
	for range workers {
		go p.worker()
	}
	go p.deliver()
	return p
}

// caughtUp calls fn once n messages have been delivered or reported (at
// once when n is 0). Call it before the first message can arrive's
// delivery completes: it is set once.
func (p *pipeline) caughtUp(n uint64, fn func()) {
	if n == 0 {
		fn()
		return
	}
	p.onCaughtUp = fn
	p.target.Store(n)
}

// receive is the consumer callback: it only queues the message.
func (p *pipeline) receive(m *nats.Msg) {
	select {
	case p.in <- m:
	case <-p.quit:
	}
}

// stop ends the pipeline: nothing more is delivered, and every goroutine
// has returned when it does.
func (p *pipeline) stop() {
	p.once.Do(func() { close(p.quit) })
	p.wg.Wait()
}

// dispatch cuts the incoming messages into chunks, runs the cheap checks
// against one room-state snapshot per chunk, and hands each chunk to the
// workers and, in the same order, to delivery.
func (p *pipeline) dispatch() {
	defer p.wg.Done()
	defer close(p.work)
	defer close(p.ordered)
	for {
		var m *nats.Msg
		select {
		case m = <-p.in:
		case <-p.quit:
			return
		}
		ch := chunkPool.Get().(*recvChunk)
		ch.jobs = append(ch.jobs, recvJob{m: m})
	fill:
		for len(ch.jobs) < maxChunk {
			select {
			case m = <-p.in:
				ch.jobs = append(ch.jobs, recvJob{m: m})
			default:
				break fill
			}
		}
		st, err := p.roomState(false)
		for i := range ch.jobs {
			p.prepare(&ch.jobs[i], st, err)
		}
		select {
		case p.ordered <- ch:
		case <-p.quit:
			return
		}
		p.work <- ch // workers drain work until it is closed: never blocks for long
	}
}

// roomState returns the room state the checks run against. A control
// plane that cannot answer now — unreachable, or a 5xx such as the 503 of
// a store that is electing a leader after a node loss — is waited out with
// backoff until the Listen ends: a received message is held, never dropped
// for want of a state that comes a few seconds later. A verdict (403, 404)
// is returned, and the messages waiting for it are reported.
func (p *pipeline) roomState(force bool) (*roomState, error) {
	for attempt := 0; ; attempt++ {
		st, err := p.c.state(p.ctx, p.room, force)
		if err == nil || !transient(err) || p.ctx.Err() != nil {
			return st, err
		}
		if attempt == 0 {
			p.c.log.Warn("room state unavailable; holding received messages until the control plane answers", "room", p.room, "err", err)
		}
		select {
		case <-p.quit:
			return nil, err
		case <-p.ctx.Done():
			return nil, err
		case <-time.After(backoff(attempt)):
		}
	}
}

// transient reports whether a control-plane error may pass by itself: no
// answer at all (unreachable, timed out) or a 5xx answer. A closed client
// never recovers.
func transient(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status >= 500
	}
	return !errors.Is(err, ErrClosed) && !errors.Is(err, nats.ErrConnectionClosed)
}

// prepare parses a message and checks the sender's membership and the
// epoch's key in the snapshot st.
func (p *pipeline) prepare(j *recvJob, st *roomState, stateErr error) {
	if stateErr != nil {
		j.err = stateErr
		return
	}
	j.st = st
	m := j.m
	topic := subjects.TopicOf(p.room, m.Subject)
	if topic == "" {
		j.err = fmt.Errorf("%w: delivered on %q, not a subject of room %s", e2e.ErrMalformed, m.Subject, p.room)
		return
	}
	// The envelope binds the room subject, wherever the stream keeps it. A
	// room's own stream may hold version 1 envelopes stored before the
	// upgrade (nothing stores one since); the shared stream holds none.
	parse := e2e.ParseEnvelopeInto
	if !st.info.Room.Shared {
		parse = e2e.ParseStoredEnvelopeInto
	}
	if err := parse(&j.env, st.id, subjects.RoomTopic(p.room, topic), m.Header, m.Data); err != nil {
		j.err = err
		return
	}
	md, err := m.Metadata()
	if err != nil {
		j.err = fmt.Errorf("message %s: no delivery metadata: %w", j.env.MsgID, err)
		return
	}
	j.md = md
	if err := j.env.CheckStoredAt(md.Timestamp); err != nil {
		j.err = err
		return
	}
	mem, ok := st.members[j.env.Sender]
	_, haveKey := st.keys[j.env.Epoch]
	if !ok || !haveKey {
		j.retry = true
		return
	}
	j.mem = mem
	// Each member's key is prepared once per Listen, not per message.
	k := p.keys[j.env.Sender]
	if k == nil {
		var err error
		if k, err = e2e.NewSenderKey(j.env.Sender); err != nil {
			j.err = fmt.Errorf("message %s from %s: %w", j.env.MsgID, j.env.Sender.Short(), err)
			return
		}
		if len(p.keys) >= maxSenderKeys {
			clear(p.keys)
		}
		p.keys[j.env.Sender] = k
	}
	j.key = k
}

// worker verifies the signatures of a chunk — as one batch when it holds
// several messages — then decrypts the messages that verified.
func (p *pipeline) worker() {
	defer p.wg.Done()
	bv := e2e.NewBatchVerifier()
	idx := make([]int, 0, maxChunk)
	for ch := range p.work {
		idx = idx[:0]
		for i := range ch.jobs {
			if j := &ch.jobs[i]; j.err == nil && !j.retry {
				idx = append(idx, i)
			}
		}
		switch len(idx) {
		case 0:
		case 1:
			j := &ch.jobs[idx[0]]
			j.err = j.env.VerifyWith(j.key)
		default:
			for _, i := range idx {
				bv.Add(ch.jobs[i].key, &ch.jobs[i].env)
			}
			for n, err := range bv.Verify() {
				ch.jobs[idx[n]].err = err
			}
		}
		for _, i := range idx {
			j := &ch.jobs[i]
			if j.err == nil {
				j.pt, j.err = j.env.Open(j.st.keys[j.env.Epoch])
			}
		}
		ch.done <- struct{}{}
	}
}

// deliver hands the messages to fn in the order they arrived.
func (p *pipeline) deliver() {
	defer p.wg.Done()
	for ch := range p.ordered {
		<-ch.done
		for i := range ch.jobs {
			j := &ch.jobs[i]
			if j.retry {
				p.slowCheck(j)
			}
			p.deliverOne(j)
			*j = recvJob{}
		}
		ch.jobs = ch.jobs[:0]
		chunkPool.Put(ch)
	}
}

// slowCheck handles a message whose sender or key the snapshot lacked:
// membership may have changed since it was fetched, so the state is
// refreshed once and the checks run again; a key of another epoch than the
// current one is fetched on its own (a client opens only the epochs it
// reads).
func (p *pipeline) slowCheck(j *recvJob) {
	env := &j.env
	st := j.st
	if _, ok := st.members[env.Sender]; !ok {
		var err error
		if st, err = p.roomState(true); err != nil {
			j.err = err
			return
		}
	}
	mem, ok := st.members[env.Sender]
	if !ok {
		j.err = fmt.Errorf("message %s from %s: %w", env.MsgID, env.Sender.Short(), ErrNotMemberSender)
		return
	}
	if err := env.VerifySignature(); err != nil {
		j.err = err
		return
	}
	key, ok := st.keys[env.Epoch]
	if !ok {
		var err error
		if key, err = p.c.epochKey(p.ctx, p.room, env.Epoch); err != nil {
			j.err = fmt.Errorf("message %s epoch %d: %w: %v", env.MsgID, env.Epoch, ErrNoKey, err)
			return
		}
	}
	j.st, j.mem = st, mem
	j.pt, j.err = env.Open(key)
}

func (p *pipeline) deliverOne(j *recvJob) {
	defer p.count()
	if j.err != nil {
		p.onError(j.err)
		return
	}
	env := &j.env
	if err := p.seq.sequence(env); err != nil {
		if errors.Is(err, ErrDuplicate) {
			p.onError(err)
			return
		}
		p.onError(err) // a gap is reported; the message itself is still delivered
	}
	out := Message{Room: p.room, Topic: topicOf(env.Subject), Sender: j.mem.SignPub, Handle: j.mem.Handle,
		Epoch: env.Epoch, Seq: env.Seq, MsgID: env.MsgID, Data: j.pt}
	if out.Sender == "" {
		out.Sender = env.Sender.String()
	}
	if j.md != nil {
		out.Time, out.StreamSeq = j.md.Timestamp, j.md.Sequence.Stream
	}
	if p.ctx.Err() == nil {
		p.fn(out)
	}
}

// count counts one message delivered or reported, and calls onCaughtUp
// when the target is reached.
func (p *pipeline) count() {
	p.handled++
	if t := p.target.Load(); t > 0 && p.handled == t && p.onCaughtUp != nil {
		p.onCaughtUp()
	}
}

// topicOf returns the topic of a subject already checked to be below the
// room ("unibus.room.<32 hex>.<topic>").
func topicOf(subject string) string {
	const n = len(subjects.RoomPrefix) + 1 + 2*e2e.RoomIDSize + 1
	if len(subject) <= n {
		return ""
	}
	return subject[n:]
}

// sequence tracks the per-sender-stream sequence: a jump is a gap (a message
// lost from the middle of the log), a repeat is a duplicate.
func (v *verifier) sequence(env *e2e.Envelope) error {
	ss := senderStream{env.Sender, e2e.StreamOf(env.MsgID)}
	k, ok := v.keys[ss]
	if !ok {
		if v.keys == nil {
			v.keys = map[senderStream]string{}
		}
		k = env.Sender.String() + "/" + ss.stream
		v.keys[ss] = k
	}
	last, seen := v.last[k]
	switch {
	case seen && env.Seq <= last:
		return fmt.Errorf("message %s from %s: %w (last seen seq %d)", env.MsgID, env.Sender.Short(), ErrDuplicate, last)
	case seen && env.Seq > last+1:
		v.last[k] = env.Seq
		return fmt.Errorf("from %s: %w: seq %d..%d", env.Sender.Short(), ErrGap, last+1, env.Seq-1)
	case !seen && v.fromStart && env.Seq > 1:
		v.last[k] = env.Seq
		return fmt.Errorf("from %s: %w: seq 1..%d (not in the stream: lost or expired)", env.Sender.Short(), ErrGap, env.Seq-1)
	}
	v.last[k] = env.Seq
	return nil
}
