package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/subjects"
)

// sender numbers this client's messages: a random stream id and, per room,
// a counter from 1. The message id <stream>-<seq> is reused on a retried
// publish, so JetStream de-duplicates it, and lets receivers of a room
// detect gaps in the sender's sequence.
type sender struct {
	stream [8]byte
	mu     sync.Mutex
	seqs   map[string]uint64
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
// It returns the message ids in order.
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
	nc, err := c.conn()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	subject := subjects.RoomTopic(room, topic)
	msgs := make([]*nats.Msg, len(data))
	ids := make([]string, len(data))
	var nonce [e2e.NonceSize]byte
	first := c.sendr.next(room, len(data))
	for i, d := range data {
		seq := first + uint64(i)
		ids[i] = e2e.MsgID(c.sendr.stream, seq)
		if _, err := rand.Read(nonce[:]); err != nil {
			return nil, err
		}
		env, err := e2e.SealMessage(c.id, st.id, subject, epoch, key, ids[i], seq, nonce[:], d)
		if err != nil {
			return nil, err
		}
		msgs[i] = &nats.Msg{Subject: subject, Header: nats.Header(env.Headers()), Data: env.Payload}
	}
	pending := msgs
	for attempt := 0; len(pending) > 0; attempt++ {
		var failed []*nats.Msg
		futures := make([]jetstream.PubAckFuture, 0, len(pending))
		for _, m := range pending {
			f, err := js.PublishMsgAsync(m, jetstream.WithMsgID(m.Header.Get(e2e.HdrMsgID)), jetstream.WithExpectStream(subjects.Stream(room)))
			if err != nil {
				failed = append(failed, m)
				continue
			}
			futures = append(futures, f)
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
		if attempt >= 20 || (lastErr != nil && !retryable(lastErr)) {
			return nil, fmt.Errorf("publish to room %s: %d of %d messages not acknowledged: %w", room, len(failed), len(data), lastErr)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff(attempt)):
		}
		pending = failed
	}
	return ids, nil
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
// fail-over it resumes after the last delivered message.
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
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverNewPolicy}
	if o.FromStart {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	var cons jetstream.Consumer
	for attempt := 0; ; attempt++ {
		cons, err = js.OrderedConsumer(ctx, subjects.Stream(room), cfg)
		if err == nil {
			break
		}
		if ctx.Err() != nil || attempt >= 20 || !retryable(err) {
			return fmt.Errorf("consume room %s: %w", room, err)
		}
		time.Sleep(backoff(attempt))
	}
	v := &verifier{c: c, room: room, fromStart: o.FromStart, last: map[string]uint64{}}
	var mu sync.Mutex // fn is called from one goroutine at a time
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		msg, gap, err := v.check(ctx, m)
		if gap != nil {
			o.OnError(gap) // reported; the message itself is still delivered
		}
		if err != nil {
			o.OnError(err)
			return
		}
		fn(msg)
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		c.log.Debug("consumer", "room", room, "err", err)
	}))
	if err != nil {
		return fmt.Errorf("consume room %s: %w", room, err)
	}
	<-ctx.Done()
	cc.Stop()
	return nil
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

// verifier checks received messages for one Listen.
type verifier struct {
	c         *Client
	room      string
	fromStart bool
	last      map[string]uint64 // sender-stream key -> last seq seen
}

// check returns the message, or the reason it is not delivered; gap is set
// when the message is valid but reveals missing predecessors.
func (v *verifier) check(ctx context.Context, m jetstream.Msg) (msg Message, gap, err error) {
	st, err := v.c.state(ctx, v.room, false)
	if err != nil {
		return Message{}, nil, err
	}
	env, err := e2e.ParseEnvelope(st.id, m.Subject(), m.Headers(), m.Data())
	if err != nil {
		return Message{}, nil, err
	}
	mem, ok := st.members[env.Sender]
	if !ok {
		// Membership may have changed since the cache: refresh once.
		if st, err = v.c.state(ctx, v.room, true); err != nil {
			return Message{}, nil, err
		}
		if mem, ok = st.members[env.Sender]; !ok {
			return Message{}, nil, fmt.Errorf("message %s from %s: %w", env.MsgID, env.Sender.Short(), ErrNotMemberSender)
		}
	}
	if err := env.VerifySignature(); err != nil {
		return Message{}, nil, err
	}
	key, ok := st.keys[env.Epoch]
	if !ok {
		if st, err = v.c.state(ctx, v.room, true); err != nil {
			return Message{}, nil, err
		}
		if key, ok = st.keys[env.Epoch]; !ok {
			return Message{}, nil, fmt.Errorf("message %s epoch %d: %w", env.MsgID, env.Epoch, ErrNoKey)
		}
	}
	pt, err := env.Open(key)
	if err != nil {
		return Message{}, nil, err
	}
	if err := v.sequence(env); err != nil {
		if errors.Is(err, ErrDuplicate) {
			return Message{}, nil, err
		}
		gap = err
	}
	md, _ := m.Metadata()
	out := Message{Room: v.room, Topic: subjects.TopicOf(v.room, env.Subject), Sender: env.Sender.String(), Handle: mem.Handle,
		Epoch: env.Epoch, Seq: env.Seq, MsgID: env.MsgID, Data: pt}
	if md != nil {
		out.Time, out.StreamS = md.Timestamp, md.Sequence.Stream
	}
	return out, gap, nil
}

// sequence tracks the per-sender-stream sequence: a jump is a gap (a message
// lost from the middle of the log), a repeat is a duplicate.
func (v *verifier) sequence(env *e2e.Envelope) error {
	k := env.Sender.String() + "/" + e2e.StreamOf(env.MsgID)
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
