package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/subjects"
)

// publishAckTimeout bounds the wait for the stream's acknowledgement of one
// publish; the publish is then retried with the same message id, so the
// stream stores it once. Without it a publish in flight to a stream leader
// that dies while the client's own connection stays up would never be
// acknowledged nor failed, and Send would block until its context ended.
// publishRetryFor bounds the retries, well inside the stream's
// de-duplication window (--dedup-window, 2 minutes by default): a message
// retried after the window could be stored twice.
const (
	publishAckTimeout = 5 * time.Second
	publishRetryFor   = time.Minute
)

// sender numbers this client's messages: a random stream id and, per room,
// a counter from 1. The message id <stream>-<seq> is reused on a retried
// publish, so JetStream de-duplicates it, and lets receivers of a room
// detect gaps in the sender's sequence.
type sender struct {
	stream [8]byte
	mu     sync.Mutex
	seqs   map[string]uint64
	// js is the JetStream context of the current connection, made once
	// per connection: each context subscribes its own reply subject for
	// asynchronous publishes, and keeps it until the connection closes.
	js jetstream.JetStream
	nc *nats.Conn
}

// next reserves n sequence numbers in room and returns the first.
func (s *sender) next(room string, n int) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.seqs[room] + 1
	s.seqs[room] += uint64(n)
	return first
}

// conn returns the data-plane connection, connecting on first use.
func (c *Client) conn() (*nats.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil && !c.nc.IsClosed() {
		return c.nc, nil
	}
	if c.sendr == nil {
		c.sendr = &sender{seqs: map[string]uint64{}}
		if _, err := rand.Read(c.sendr.stream[:]); err != nil {
			return nil, err
		}
	}
	opts := []nats.Option{
		nats.Name("unibus-sdk"),
		nats.Nkey(c.id.NKey(), c.id.SignNonce),
		nats.CustomInboxPrefix(subjects.InboxPrefix(c.id.SignPub().String())),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			c.invalidateRooms()
			if err != nil {
				c.log.Info("data plane disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.invalidateRooms()
			c.log.Info("data plane reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.log.Warn("data plane error", "err", err)
		}),
	}
	if c.cfg.RootCAs != nil || hasTLSURL(c.cfg.NATS) {
		opts = append(opts, nats.Secure(&tls.Config{RootCAs: c.cfg.RootCAs, MinVersion: tls.VersionTLS12}))
	}
	nc, err := nats.Connect(strings.Join(c.cfg.NATS, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect data plane (%s): %w", strings.Join(c.cfg.NATS, ", "), err)
	}
	c.nc = nc
	return nc, nil
}

// jetStream returns the JetStream context of the data-plane connection.
func (c *Client) jetStream() (jetstream.JetStream, error) {
	nc, err := c.conn()
	if err != nil {
		return nil, err
	}
	s := c.sendr
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nc != nc {
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(publishAckTimeout))
		if err != nil {
			return nil, err
		}
		s.nc, s.js = nc, js
	}
	return s.js, nil
}

func hasTLSURL(urls []string) bool {
	for _, u := range urls {
		if strings.HasPrefix(u, "tls://") {
			return true
		}
	}
	return false
}

// dropConn closes the data-plane connection so that the next use logs in
// again and gets the ACL for the caller's current rooms.
func (c *Client) dropConn() {
	c.mu.Lock()
	nc := c.nc
	c.nc = nil
	c.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
}

// invalidateRooms makes the next send refresh room state: a reconnect may
// follow a membership change that rotated a room.
func (c *Client) invalidateRooms() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, st := range c.rooms {
		ns := *st
		ns.fetched = time.Time{}
		c.rooms[id] = &ns
	}
}

// Send encrypts data for the room's current epoch, signs it, and publishes
// it with acknowledgement; a publish that times out is retried with the
// same message id, so the stream stores it once. topic "" is the default.
// It returns the message id.
func (c *Client) Send(ctx context.Context, room, topic string, data []byte) (string, error) {
	ids, err := c.SendBatch(ctx, room, topic, [][]byte{data})
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// SendBatch sends several messages with pipelined (asynchronous)
// publishes and waits until the stream has acknowledged every one; any
// that fail are retried with their message ids, so none is stored twice.
// It returns the message ids in order. Messages are encrypted and signed
// on every core, a chunk at a time, and published in order as each chunk
// is ready.
func (c *Client) SendBatch(ctx context.Context, room, topic string, data [][]byte) ([]string, error) {
	if topic == "" {
		topic = subjects.DefaultTopic
	}
	if !subjects.ValidTopic(topic) {
		return nil, fmt.Errorf("invalid topic %q: dot-separated tokens of [A-Za-z0-9_-]", topic)
	}
	st, err := c.state(ctx, room, false)
	if err != nil {
		return nil, err
	}
	if st.info.Room.RotationPending {
		if err := c.Rotate(ctx, room); err != nil {
			return nil, fmt.Errorf("room needs a key rotation before sending: %w", err)
		}
		if st, err = c.state(ctx, room, true); err != nil {
			return nil, err
		}
	}
	epoch := st.info.Room.Epoch
	key, ok := st.keys[epoch]
	if !ok {
		return nil, fmt.Errorf("you hold no accepted key for the room's current epoch %d", epoch)
	}
	js, err := c.jetStream()
	if err != nil {
		return nil, err
	}
	subject := subjects.RoomTopic(room, topic)
	first := c.sendr.next(room, len(data))
	ids := make([]string, len(data))
	msgs := make([]*nats.Msg, len(data))
	expect := []string{subjects.Stream(room)} // shared by every message's headers; never modified
	seal := func(lo, hi int) error {
		nonces := make([]byte, (hi-lo)*e2e.NonceSize)
		if _, err := rand.Read(nonces); err != nil {
			return err
		}
		for i := lo; i < hi; i++ {
			seq := first + uint64(i)
			ids[i] = e2e.MsgID(c.sendr.stream, seq)
			nonce := nonces[(i-lo)*e2e.NonceSize : (i-lo+1)*e2e.NonceSize]
			env, err := e2e.SealMessage(c.id, st.id, subject, epoch, key, ids[i], seq, nonce, data[i])
			if err != nil {
				return err
			}
			h := nats.Header(env.Headers())
			h[jetstream.ExpectedStreamHeader] = expect
			msgs[i] = &nats.Msg{Subject: subject, Header: h, Data: env.Payload}
		}
		return nil
	}
	// Sealing (encrypt + sign) is spread over the cores, a chunk at a
	// time, and each chunk is published, in order, as soon as it is
	// sealed: the first publishes are in flight while later messages are
	// still being signed.
	chunks := sealChunks(ctx, len(data), seal)
	var failed []*nats.Msg
	futures := make([]jetstream.PubAckFuture, 0, len(data))
	for _, ch := range chunks {
		select {
		case err := <-ch.done:
			if err != nil {
				return nil, err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		futures, failed = publishAsync(js, msgs[ch.lo:ch.hi], futures, failed)
	}
	pending, started := msgs, time.Now()
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt > 0 {
			futures, failed = publishAsync(js, pending, futures[:0], nil)
		}
		var lastErr error
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				lastErr = err
				failed = append(failed, f.Msg())
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if len(failed) == 0 {
			break
		}
		if attempt >= 20 || time.Since(started) > publishRetryFor || (lastErr != nil && !retryable(lastErr)) {
			return nil, fmt.Errorf("publish to room %s: %d of %d messages not acknowledged: %w", room, len(failed), len(data), lastErr)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff(attempt)):
		}
		pending, failed = failed, nil
	}
	return ids, nil
}

// publishAsync publishes msgs without waiting; the message id header
// (Nats-Msg-Id) and the expected stream are already in each message's
// headers. Messages that could not even be queued go to failed.
func publishAsync(js jetstream.JetStream, msgs []*nats.Msg, futures []jetstream.PubAckFuture, failed []*nats.Msg) ([]jetstream.PubAckFuture, []*nats.Msg) {
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			failed = append(failed, m)
			continue
		}
		futures = append(futures, f)
	}
	return futures, failed
}

// sealChunk is how many messages one sealing step handles.
const sealChunk = 32

// chunk is a range of a batch being sealed; done receives the result.
type chunk struct {
	lo, hi int
	done   chan error
}

// sealChunks runs seal over [0, n) in chunks of sealChunk on up to
// GOMAXPROCS goroutines and returns the chunks in order; each chunk's done
// receives seal's result exactly once. A batch of one chunk is sealed by
// the caller's goroutine.
func sealChunks(ctx context.Context, n int, seal func(lo, hi int) error) []chunk {
	chunks := make([]chunk, 0, (n+sealChunk-1)/sealChunk)
	for lo := 0; lo < n; lo += sealChunk {
		chunks = append(chunks, chunk{lo: lo, hi: min(lo+sealChunk, n), done: make(chan error, 1)})
	}
	workers := min(runtime.GOMAXPROCS(0), len(chunks))
	if workers <= 1 {
		for _, ch := range chunks {
			ch.done <- seal(ch.lo, ch.hi)
		}
		return chunks
	}
	var next atomic.Int64
	for range workers {
		go func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(chunks) || ctx.Err() != nil {
					for ; i < len(chunks); i = int(next.Add(1) - 1) {
						chunks[i].done <- ctx.Err()
					}
					return
				}
				chunks[i].done <- seal(chunks[i].lo, chunks[i].hi)
			}
		}()
	}
	return chunks
}

func retryable(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, jetstream.ErrTooManyStalledMsgs)
}

func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 5)
	return min(d, time.Second)
}

// Message is a received, verified and decrypted room message.
type Message struct {
	Room    string
	Topic   string
	Sender  string // sign-pub hex
	Handle  string // sender's handle at receive time
	Epoch   uint64
	Seq     uint64
	MsgID   string
	Data    []byte
	Time    time.Time // when the stream stored it
	StreamS uint64    // stream sequence
}

// Sentinel errors reported by Listen for messages that are not delivered.
var (
	ErrNotMemberSender = errors.New("sender is not a member of the room")
	ErrNoKey           = errors.New("no accepted key for the message's epoch")
	ErrGap             = errors.New("messages missing from the sender's sequence")
	ErrDuplicate       = errors.New("duplicate or replayed message")
)

// ListenOptions selects what Listen delivers.
type ListenOptions struct {
	// Topic filters to one topic (subject tokens, may end in ">" or use "*"); "" means all.
	Topic string
	// FromStart replays the room's stored history first.
	FromStart bool
	// OnError receives each message that is reported and not delivered
	// (bad signature, non-member sender, no key, gap, duplicate). nil logs.
	OnError func(error)
}

// Listen delivers the room's messages to fn, in stream order, until ctx is
// done. Each message is verified (signature, sender membership), checked
// for sequence gaps and duplicates per sender stream, and decrypted before
// fn sees it. The consumer is an ordered consumer: after a reconnect or a
// fail-over it resumes after the last delivered message, and one that
// cannot re-create its server-side consumer is replaced by a fresh one
// that resumes there too (docs/CLUSTER.md).
//
// Signatures are verified on every core (GOMAXPROCS workers, in batches
// when messages queue up); fn and OnError are still called from a single
// goroutine, one message at a time, in stream order, and never after
// Listen has returned.
func (c *Client) Listen(ctx context.Context, room string, o ListenOptions, fn func(Message)) error {
	filter := subjects.Room(room)
	if o.Topic != "" {
		if !validFilter(o.Topic) {
			return fmt.Errorf("invalid topic filter %q", o.Topic)
		}
		filter = subjects.RoomTopic(room, o.Topic)
	}
	if o.OnError == nil {
		o.OnError = func(err error) { c.log.Warn("message not delivered", "room", room, "err", err) }
	}
	if _, err := c.state(ctx, room, true); err != nil {
		return err
	}
	nc, err := c.conn()
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverNewPolicy,
		MaxResetAttempts: listenResetAttempts}
	if o.FromStart {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	p := newPipeline(ctx, c, room, o.FromStart, o.OnError, fn)
	defer p.stop()
	l := &listener{c: c, js: js, room: room, p: p, restart: make(chan error, 1)}
	cc, err := l.consume(ctx, cfg, 20)
	if err != nil {
		return fmt.Errorf("consume room %s: %w", room, err)
	}
	for {
		select {
		case <-ctx.Done():
			p.stop()
			cc.Stop()
			return nil
		case why := <-l.restart:
			// The ordered consumer gave up re-creating its server-side
			// consumer. After a node is lost, a consumer created before
			// the cluster marked that node offline can be placed on it and
			// then never answers; re-creating it under the same name waits
			// on it forever. A fresh ordered consumer has a fresh name and
			// is placed again, and it resumes after the last stream
			// sequence delivered, so nothing is lost or repeated.
			cc.Stop()
			c.log.Info("listen: re-creating the room consumer", "room", room, "err", why)
			next := cfg
			if l.anchored.Load() {
				next.DeliverPolicy, next.OptStartSeq = jetstream.DeliverByStartSequencePolicy, l.last.Load()+1
			}
			if cc, err = l.consume(ctx, next, -1); err != nil {
				return nil // ctx is done
			}
		}
	}
}

// listenResetAttempts bounds how often an ordered consumer re-creates its
// server-side consumer (each attempt waits up to 10 s) before Listen
// replaces it with a fresh one.
const listenResetAttempts = 3

// listener is one Listen's consumer, replaced when it gets stuck.
type listener struct {
	c    *Client
	js   jetstream.JetStream
	room string
	p    *pipeline
	last atomic.Uint64 // stream sequence of the last message handed on
	// anchored: last is where a replacement resumes (false only while a
	// DeliverAll consumer has not been created yet)
	anchored atomic.Bool
	restart  chan error
}

// consume creates an ordered consumer with cfg and starts it, trying up to
// attempts times on transient errors, or (attempts -1) on any error until
// ctx ends: a replacement has no caller to report to. The sequence the
// first consumer starts after is recorded, so a replacement resumes there.
func (l *listener) consume(ctx context.Context, cfg jetstream.OrderedConsumerConfig, attempts int) (jetstream.ConsumeContext, error) {
	for attempt := 0; ; attempt++ {
		cc, err := l.consumeOnce(ctx, cfg)
		if err == nil {
			return cc, nil
		}
		if ctx.Err() != nil || attempts >= 0 && (attempt >= attempts || !retryable(err)) {
			return nil, err
		}
		l.c.log.Debug("listen: consumer", "room", l.room, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff(attempt)):
		}
	}
}

func (l *listener) consumeOnce(ctx context.Context, cfg jetstream.OrderedConsumerConfig) (jetstream.ConsumeContext, error) {
	cons, err := l.js.OrderedConsumer(ctx, subjects.Stream(l.room), cfg)
	if err != nil {
		return nil, err
	}
	cc, err := cons.Consume(l.receive, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		l.c.log.Debug("consumer", "room", l.room, "err", err)
		if stuck(err) {
			select {
			case l.restart <- err:
			default:
			}
		}
	}))
	if err != nil {
		return nil, err
	}
	if !l.anchored.Load() {
		// DeliverNew starts after the stream's last sequence at creation
		// (DeliverAll after 0): a replacement must start there too, not at
		// its own creation.
		if info := cons.CachedInfo(); info != nil {
			l.last.CompareAndSwap(0, info.Delivered.Stream)
			l.anchored.Store(true)
		}
	}
	return cc, nil
}

// receive hands a message on unless a consumer before this one already
// did: a replacement overlaps with nothing, but a stopped consumer may
// still be delivering its last message.
func (l *listener) receive(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		l.p.receive(m) // the pipeline reports it
		return
	}
	for {
		last := l.last.Load()
		if md.Sequence.Stream <= last {
			return
		}
		if l.last.CompareAndSwap(last, md.Sequence.Stream) {
			break
		}
	}
	l.p.receive(m)
}

// stuck tells the errors with which an ordered consumer reports that it
// could not re-create its server-side consumer.
func stuck(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || isAPIError(err)
}

func isAPIError(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr)
}

func validFilter(t string) bool {
	for _, tok := range strings.Split(t, ".") {
		if tok == "*" || tok == ">" {
			continue
		}
		if !subjects.ValidTopic(tok) {
			return false
		}
	}
	return !strings.Contains(strings.TrimSuffix(t, ">"), ">")
}
