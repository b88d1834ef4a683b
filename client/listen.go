package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/subjects"
)

// Message is a received, verified and decrypted room message.
type Message struct {
	Room  string // the room's id
	Topic string
	// Sender is the sender's sign-pub (64 hex), Handle its handle when the
	// message was received.
	Sender string
	Handle string
	// Epoch is the key epoch the message was encrypted for.
	Epoch uint64
	// Seq numbers the sender's messages in the room (per sender stream),
	// from 1; MsgID is "<sender stream>-<seq>".
	Seq   uint64
	MsgID string
	// Data is the plaintext.
	Data []byte
	// Time is when the room's stream stored the message, and StreamSeq
	// its sequence number in that stream (increasing in delivery order).
	Time      time.Time
	StreamSeq uint64
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
