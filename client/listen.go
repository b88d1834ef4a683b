package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
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
	// (bad signature, non-member sender, no key, gap, duplicate, replay).
	// nil logs.
	OnError func(error)

	// caughtUp, if set, is called once every message stored when the
	// first listener was made has been delivered or reported (FindBlob).
	caughtUp func()
}

// Listen delivers the room's messages to fn, in stream order, until ctx is
// done. Each message is verified (signature, sender membership, send
// time), checked for sequence gaps and duplicates per sender stream, and
// decrypted before fn sees it.
//
// Listen asks the control plane for a listener: a consumer membershipd
// makes on the room's stream that delivers only to this identity
// (docs/DESIGN.md, "Listeners"). After a gap in its deliveries, a lost
// heartbeat or a node lost, Listen asks for a new one that starts after
// the last message it handed on, so nothing is lost or repeated. It ends
// with an error when the caller can no longer read the room — matching
// ErrRemoved (no longer a member) or ErrRevoked — and with ErrClosed when
// the client is closed.
//
// Signatures are verified on every core (GOMAXPROCS workers, in batches
// when messages queue up); fn and OnError are still called from a single
// goroutine, one message at a time, in stream order, and never after
// Listen has returned.
func (c *Client) Listen(ctx context.Context, room string, o ListenOptions, fn func(Message)) error {
	if o.Topic != "" && !validFilter(o.Topic) {
		return fmt.Errorf("invalid topic filter %q", o.Topic)
	}
	if o.OnError == nil {
		o.OnError = func(err error) { c.log.Warn("message not delivered", "room", room, "err", err) }
	}
	if err := retryTransient(ctx, firstWait, func() error { _, err := c.state(ctx, room, true); return err }); err != nil {
		if ctx.Err() != nil {
			return nil // ended before it began, as the caller asked
		}
		return err
	}
	nc, err := c.conn()
	if err != nil {
		return err
	}
	// A Listen that ends because the client was closed made its last
	// control-plane requests (deleting its listeners) after Close had
	// closed the idle connections: close them again once it is through.
	defer func() {
		if c.isClosed() {
			c.http.CloseIdleConnections()
		}
	}()
	p := newPipeline(ctx, c, room, o.FromStart, o.OnError, fn)
	defer p.stop()
	l := &listening{c: c, nc: nc, room: room, p: p, topic: o.Topic, restart: make(chan error, 1)}
	defer l.cleanup.Wait()
	req := wire.ListenRequest{Topic: o.Topic, Deliver: wire.DeliverNew}
	if o.FromStart {
		req.Deliver = wire.DeliverAll
	}
	cur, err := l.first(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("listen to room %s: %w", room, cutOff(err))
	}
	if o.caughtUp != nil {
		p.caughtUp(cur.info.Pending, o.caughtUp)
	}
	for {
		select {
		case <-ctx.Done():
			l.stop(cur)
			return nil
		case <-c.closed:
			l.stop(cur)
			return fmt.Errorf("listen to room %s: %w", room, ErrClosed)
		case <-c.cut:
			l.stop(cur)
			return fmt.Errorf("listen to room %s: %w", room, ErrRevoked)
		case why := <-l.restart:
			l.stop(cur)
			// A request the replaced listener made while it was being
			// stopped is about it, not about the next one.
			select {
			case <-l.restart:
			default:
			}
			c.log.Info("listen: asking for a new listener", "room", room, "err", why)
			if cur, err = l.resume(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("listen to room %s: %w", room, cutOff(err))
			}
		}
	}
}

// cutOff marks a refusal of a listener that means the caller can no longer
// read the room: ErrRevoked (matched by the APIError itself), or
// ErrRemoved for a room it is no longer a member of (the server answers
// 404 for a room the caller is not a member of, or that is gone).
func cutOff(err error) error {
	var ae *APIError
	if !errors.Is(err, ErrRevoked) && errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusForbidden) {
		return fmt.Errorf("%w: %w", ErrRemoved, err)
	}
	return err
}

// listening is one Listen: the listener it reads now, replaced when its
// deliveries stop or skip.
type listening struct {
	c     *Client
	nc    *nats.Conn
	room  string
	topic string
	p     *pipeline
	// last is the stream sequence of the last message handed on, and
	// anchored says whether it is where a new listener resumes (false only
	// while a listener delivering the whole history has not yet been made).
	last     atomic.Uint64
	anchored atomic.Bool
	restart  chan error
	cleanup  sync.WaitGroup // heartbeat watches, deletions of replaced listeners
}

// current is one listener and the subscription that reads it.
type current struct {
	info wire.Listener
	sub  *nats.Subscription
	// cseq is the consumer sequence of the last delivery (the
	// subscription's goroutine only); heard is when the listener last
	// sent anything.
	cseq  uint64
	heard atomic.Int64
	done  chan struct{}
}

// start asks for a listener and subscribes to its deliveries.
func (l *listening) start(ctx context.Context, req wire.ListenRequest) (*current, error) {
	var info wire.Listener
	if err := l.c.do(ctx, "POST", "/v1/rooms/"+url.PathEscape(l.room)+"/listeners", req, &info); err != nil {
		return nil, err
	}
	if !l.anchored.Load() && req.Deliver == wire.DeliverNew {
		// A listener delivering new messages starts after the stream's
		// last sequence when it was made: a replacement starts there too.
		l.last.Store(info.LastSeq)
	}
	l.anchored.Store(true)
	cur := &current{info: info, done: make(chan struct{})}
	cur.heard.Store(time.Now().UnixNano())
	sub, err := l.nc.Subscribe(info.DeliverSubject, func(m *nats.Msg) { l.handle(cur, m) })
	if err != nil {
		l.delete(info.Name)
		return nil, err
	}
	// Flow control bounds what is in flight; the pipeline's own queue
	// bounds the rest.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		l.delete(info.Name)
		return nil, err
	}
	cur.sub = sub
	l.cleanup.Go(func() { l.watch(cur) })
	return cur, nil
}

// firstWait bounds how long Listen retries its first listener while the
// servers answer that they cannot make one now (a room stream electing its
// leader after a restart, say); a refusal ends it at once.
const firstWait = 30 * time.Second

// first asks for the first listener.
func (l *listening) first(ctx context.Context, req wire.ListenRequest) (cur *current, err error) {
	err = retryTransient(ctx, firstWait, func() (err error) { cur, err = l.start(ctx, req); return err })
	return cur, err
}

// retryTransient calls f until it succeeds, fails for good (a refusal), ctx
// ends, or wait has passed.
func retryTransient(ctx context.Context, wait time.Duration, f func() error) error {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || ctx.Err() != nil || !transient(err) || time.Since(start) > wait {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff(attempt)):
		}
	}
}

// resume asks for a listener that starts after the last message handed
// on, retrying while the control plane or the data plane cannot answer;
// a refusal (no longer a member) ends it.
func (l *listening) resume(ctx context.Context) (*current, error) {
	for attempt := 0; ; attempt++ {
		req := wire.ListenRequest{Topic: l.topic, Deliver: wire.DeliverAll}
		if l.anchored.Load() && l.last.Load() > 0 {
			req = wire.ListenRequest{Topic: l.topic, Deliver: wire.DeliverSeq, StartSeq: l.last.Load() + 1}
		}
		cur, err := l.start(ctx, req)
		if err == nil {
			return cur, nil
		}
		if l.c.isClosed() {
			return nil, ErrClosed
		}
		if ctx.Err() != nil || !transient(err) {
			return nil, err
		}
		l.c.log.Debug("listen: new listener", "room", l.room, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.c.closed:
			return nil, ErrClosed
		case <-time.After(backoff(attempt)):
		}
	}
}

// handle is the subscription's callback: flow control and heartbeats are
// answered or checked; data messages are handed to the pipeline in order,
// once each. A skipped consumer sequence (a delivery lost between the
// server and here) asks for a new listener.
func (l *listening) handle(cur *current, m *nats.Msg) {
	cur.heard.Store(time.Now().UnixNano())
	if len(m.Data) == 0 && m.Header.Get("Status") != "" {
		l.status(cur, m)
		return
	}
	if len(m.Data) == 0 && m.Header.Get(wire.HdrListenerEnded) != "" {
		// The server deleted the listener: ask for a new one now (it
		// refuses if this member can no longer read the room).
		l.requestRestart(errors.New("the server ended the listener"))
		return
	}
	md, err := m.Metadata()
	if err != nil {
		l.p.receive(m) // the pipeline reports it
		return
	}
	if md.Sequence.Consumer != cur.cseq+1 {
		l.requestRestart(fmt.Errorf("deliveries skipped from %d to %d", cur.cseq, md.Sequence.Consumer))
		return
	}
	cur.cseq = md.Sequence.Consumer
	for {
		last := l.last.Load()
		if md.Sequence.Stream <= last {
			return // a replaced listener's overlap
		}
		if l.last.CompareAndSwap(last, md.Sequence.Stream) {
			break
		}
	}
	l.p.receive(m)
}

// status handles a status message: a flow-control request is answered (on
// its reply subject, $JS.FC.…, which members may publish on); an idle
// heartbeat says what the listener last delivered, and whether it is
// stalled waiting for an answer it missed.
func (l *listening) status(cur *current, m *nats.Msg) {
	if m.Header.Get("Status") != "100" {
		return
	}
	if m.Reply != "" {
		_ = m.Respond(nil)
		return
	}
	if stalled := m.Header.Get("Nats-Consumer-Stalled"); stalled != "" {
		_ = l.nc.Publish(stalled, nil)
	}
	if last, err := strconv.ParseUint(m.Header.Get("Nats-Last-Consumer"), 10, 64); err == nil && last > cur.cseq {
		l.requestRestart(fmt.Errorf("deliveries %d..%d never arrived", cur.cseq+1, last))
	}
}

// watch asks for a new listener when the current one has been silent for
// three heartbeats (its node is gone, or it was deleted).
func (l *listening) watch(cur *current) {
	hb := time.Duration(max(cur.info.HeartbeatSeconds, 1)) * time.Second
	t := time.NewTicker(hb)
	defer t.Stop()
	for {
		select {
		case <-cur.done:
			return
		case <-t.C:
			if silent := time.Since(time.Unix(0, cur.heard.Load())); silent > 3*hb {
				l.requestRestart(fmt.Errorf("no heartbeat for %v", silent.Round(time.Second)))
				return
			}
		}
	}
}

func (l *listening) requestRestart(why error) {
	select {
	case l.restart <- why:
	default:
	}
}

// stop unsubscribes from a listener and deletes it in the background (the
// server would delete it after its inactivity threshold anyway).
func (l *listening) stop(cur *current) {
	close(cur.done)
	_ = cur.sub.Unsubscribe()
	l.delete(cur.info.Name)
}

func (l *listening) delete(name string) {
	l.cleanup.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.c.do(ctx, "DELETE", "/v1/rooms/"+url.PathEscape(l.room)+"/listeners/"+url.PathEscape(name), nil, nil); err != nil {
			l.c.log.Debug("listen: deleting a listener", "room", l.room, "name", name, "err", err)
		}
	})
}

// validFilter reports whether t is a topic filter: dot-separated tokens of
// [A-Za-z0-9_-] or "*", the last of which may be ">".
func validFilter(t string) bool {
	if t == "" || len(t) > 128 {
		return false
	}
	toks := strings.Split(t, ".")
	for i, tok := range toks {
		if tok == "*" || tok == ">" && i == len(toks)-1 {
			continue
		}
		if !subjects.ValidTopic(tok) {
			return false
		}
	}
	return true
}
