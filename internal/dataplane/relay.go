package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/internal/quota"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// The relay is the only way into a room stream. A member publishes on its
// own ingress subject, unibus.in.<sender>.<room>.<topic>, which nats-server
// lets only <sender> publish on, so the subject names the publisher. The
// relay reads every ingress message (a queue subscription on each node;
// a node's own relay takes its local members' messages, in order), checks
//
//   - the sender is active and a member of the room (the Directory, which
//     is invalidated on every membership or status change);
//   - the envelope's headers are well formed, of this protocol's version,
//     name the publisher as sender, carry the room's current epoch (a
//     message sealed under an epoch that a rotation ended is refused, so
//     a sender that has not yet seen a removal cannot send the removed
//     member anything it could read) and a send time within MaxSkew of
//     the relay's clock (a replay after the stream's duplicate window is
//     refused);
//
// and publishes a copy that carries only the envelope's headers plus its
// own (the expected stream, the room's message TTL) on the room's stored
// subject. It answers on the sender's reply subject, only if that is
// under the sender's own inbox, in JetStream's acknowledgement format.
//
// Receivers verify every signature themselves; the relay does not: what
// it enforces is who may place bytes in which room, which a signature
// cannot tell (a member can replay another member's envelope).

// Defaults of RelayOptions.
const (
	DefaultMaxSkew = 60 * time.Second
	// relayQueue is the queue group of every node's relay.
	relayQueue = "unibus-relay"
	// relayInFlight bounds the publishes awaiting their stream ack.
	relayInFlight = 4096
)

// RelayOptions configure a Relay.
type RelayOptions struct {
	// Members is the internal identity's connection in the members
	// account: it reads the ingress subjects and answers on them.
	Members *nats.Conn
	// Bus is the internal identity's JetStream context in the bus account,
	// where the room streams are.
	Bus       jetstream.JetStream
	Directory *Directory
	// MaxSkew bounds |relay clock - envelope send time|; 0 means
	// DefaultMaxSkew. It must stay below the streams' duplicate window.
	MaxSkew time.Duration
	Now     func() time.Time
	Logger  *slog.Logger
	// DiskLow, if set, reports whether storing need more bytes would take
	// the server's free disk space below its reserve: such a message is
	// refused (507, wire.RelayDiskFull) instead of stored.
	DiskLow func(need int64) bool
	// Quota, if set, bounds the bytes of each sender's messages still
	// kept: a message that would take its sender over it is refused (507,
	// wire.RelayQuotaExceeded); a stored one is charged until its room's
	// age limit removes it (for ever in a room without one).
	Quota *quota.Meter
	// OnResult, if set, is called once per message with "ok" or the
	// refusal's reason; it must not block.
	OnResult func(reason string)
	// Durable, if set, is called before stored messages' acknowledgements
	// are passed on, once for every batch of them that arrived meanwhile:
	// it writes and syncs the file system that holds the streams. An
	// error turns the batch's acknowledgements into "outcome unknown"
	// (503, wire.RelayUnavailable): JetStream's own sync said yes, but the
	// disk failed as they were stored, and a disk that fails then may not
	// keep them (the fault suite saw such acknowledged messages gone).
	Durable func() error
}

// Relay copies members' messages from their ingress into the room streams.
type Relay struct {
	o       RelayOptions
	sub     *nats.Subscription
	pending chan inFlight
	stored  chan storedAck // acknowledgements waiting for Durable
	wg      sync.WaitGroup
	closed  sync.Once
}

// storedAck is a stored message's acknowledgement, to pass on once the
// disk is known to hold it.
type storedAck struct {
	reply string
	ack   wire.PubAck
}

type inFlight struct {
	ack      jetstream.PubAckFuture
	reply    string
	deadline time.Time // when the relay stops waiting for the stream's answer
	charge   charge
}

// charge is what a stored message counts against its sender's quota.
type charge struct {
	sender string
	bytes  int64
	until  time.Time // zero: for ever
}

// ackWait bounds how long the relay waits for the stream to acknowledge a
// message it passed on. A publish to a stream leader that died after
// receiving it is never answered (nats.go's asynchronous publishes have no
// timeout of their own): without a bound, every later answer, which are
// sent in order, would wait behind it forever. The sender is told 503
// (retry with the same message id); the stream's de-duplication makes the
// retry safe if the message was stored after all.
var ackWait = 5 * time.Second

// StartRelay subscribes to every ingress subject and starts answering.
func StartRelay(o RelayOptions) (*Relay, error) {
	if o.Members == nil || o.Bus == nil || o.Directory == nil {
		return nil, errors.New("relay: a members connection, a bus JetStream context and a directory are required")
	}
	if o.MaxSkew <= 0 {
		o.MaxSkew = DefaultMaxSkew
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Relay{o: o, pending: make(chan inFlight, relayInFlight)}
	sub, err := o.Members.QueueSubscribe(subjects.IngressPrefix+".>", relayQueue, r.handle)
	if err != nil {
		return nil, fmt.Errorf("relay: subscribe to the ingress: %w", err)
	}
	// A burst waits here rather than being dropped: the sender's publish
	// would time out and be retried, at a cost to everyone.
	if err := sub.SetPendingLimits(1<<20, 256<<20); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("relay: %w", err)
	}
	if err := o.Members.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("relay: %w", err)
	}
	r.sub = sub
	r.wg.Add(1)
	if o.Durable != nil {
		r.stored = make(chan storedAck, relayInFlight)
		r.wg.Add(1)
		go r.confirm()
	}
	go r.answer()
	return r, nil
}

// Close stops reading the ingress, lets the messages already read finish
// and waits until every answer is sent.
func (r *Relay) Close() error {
	var err error
	r.closed.Do(func() {
		err = r.sub.Drain()
		// Drain returns at once; wait until the callbacks are done (or the
		// connection is gone, which ends them too).
		for deadline := time.Now().Add(10 * time.Second); r.sub.IsValid() && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		close(r.pending)
		r.wg.Wait()
	})
	return err
}

// refusal is a refused message: an HTTP-like class, a relay code, a text.
type refusal struct {
	code    int
	errCode uint16
	reason  string // for OnResult and metrics
	text    string
}

func refuse(code int, errCode uint16, reason, format string, a ...any) *refusal {
	return &refusal{code: code, errCode: errCode, reason: reason, text: fmt.Sprintf(format, a...)}
}

func (r *Relay) handle(m *nats.Msg) {
	sender, room, topic, ok := subjects.ParseIngress(m.Subject)
	if !ok || !validSignPub(sender) {
		// No sender to answer: nats-server let the publisher use this
		// subject only if it is its own, so this is a malformed subject
		// of some member's, or a message of the relay's own account.
		r.result("bad_subject")
		return
	}
	reply := m.Reply
	if !strings.HasPrefix(reply, subjects.InboxPrefix(sender)+".") {
		reply = "" // never answer outside the sender's own inbox
	}
	out, ch, rf := r.check(m, sender, room, topic)
	if rf != nil {
		r.result(rf.reason)
		r.respond(reply, wire.PubAck{Error: &wire.RelayError{Code: rf.code, ErrCode: rf.errCode, Description: rf.text}})
		return
	}
	f, err := r.o.Bus.PublishMsgAsync(out)
	if err != nil {
		r.result("unavailable")
		r.respond(reply, wire.PubAck{Error: &wire.RelayError{Code: 503, ErrCode: wire.RelayUnavailable, Description: "relay: cannot publish to the room stream now; retry with the same message id"}})
		return
	}
	r.result("ok")
	r.pending <- inFlight{ack: f, reply: reply, deadline: time.Now().Add(ackWait), charge: ch}
}

// check validates one ingress message and returns the copy to store.
func (r *Relay) check(m *nats.Msg, sender, room, topic string) (*nats.Msg, charge, *refusal) {
	if !validRoom(room) || !subjects.ValidTopic(topic) {
		return nil, charge{}, refuse(400, wire.RelayBadSubject, "bad_subject", "relay: subject must be unibus.in.<sender>.<room id>.<topic>")
	}
	h := m.Header
	version, ok := single(h, e2e.HdrVersion)
	switch {
	case !ok:
		return nil, charge{}, refuse(400, wire.RelayBadEnvelope, "bad_envelope", "relay: header %s must appear once", e2e.HdrVersion)
	case version != e2e.Version:
		if version == "1" {
			return nil, charge{}, refuse(400, wire.RelayOldProtocol, "old_protocol", "relay: envelope version 1 is no longer accepted: this server speaks protocol %s; upgrade the client", e2e.Version)
		}
		return nil, charge{}, refuse(400, wire.RelayBadEnvelope, "bad_envelope", "relay: unknown envelope version %q", version)
	}
	if s, ok := single(h, e2e.HdrSender); !ok || s != sender {
		return nil, charge{}, refuse(400, wire.RelayBadEnvelope, "bad_envelope", "relay: header %s must name the publisher", e2e.HdrSender)
	}
	epoch, ok := uintHeader(h, e2e.HdrEpoch)
	if !ok || epoch == 0 {
		return nil, charge{}, refuse(400, wire.RelayBadEnvelope, "bad_envelope", "relay: header %s must be an epoch", e2e.HdrEpoch)
	}
	sent, ok := uintHeader(h, e2e.HdrTime)
	if !ok {
		return nil, charge{}, refuse(400, wire.RelayBadEnvelope, "bad_envelope", "relay: header %s must be the send time in Unix milliseconds", e2e.HdrTime)
	}
	for _, k := range []string{e2e.HdrSeq, e2e.HdrSig, e2e.HdrMsgID} {
		if v, ok := single(h, k); !ok || v == "" || len(v) > 128 {
			return nil, charge{}, refuse(400, wire.RelayBadEnvelope, "bad_envelope", "relay: header %s must appear once", k)
		}
	}
	if len(m.Data) < e2e.NonceSize+e2e.TagSize {
		return nil, charge{}, refuse(400, wire.RelayBadEnvelope, "bad_envelope", "relay: payload shorter than a nonce and a tag")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	active, err := r.o.Directory.UserActive(ctx, sender)
	if err != nil {
		r.o.Logger.Warn("relay: cannot read the sender's status; message refused", "sender", sender, "err", err)
		return nil, charge{}, refuse(503, wire.RelayUnavailable, "unavailable", "relay: control plane unavailable; retry with the same message id")
	}
	if !active {
		return nil, charge{}, refuse(403, wire.RelayRevoked, "revoked", "relay: sender is revoked or unknown")
	}
	rm, err := r.o.Directory.Room(ctx, room)
	switch {
	case errors.Is(err, ErrNoRoom):
		return nil, charge{}, refuse(403, wire.RelayNotMember, "not_member", "relay: not a member of room %s", room)
	case err != nil:
		r.o.Logger.Warn("relay: cannot read the room; message refused", "room", room, "err", err)
		return nil, charge{}, refuse(503, wire.RelayUnavailable, "unavailable", "relay: control plane unavailable; retry with the same message id")
	case !rm.Members[sender]:
		return nil, charge{}, refuse(403, wire.RelayNotMember, "not_member", "relay: not a member of room %s", room)
	case epoch != rm.Epoch:
		return nil, charge{}, refuse(409, wire.RelayStaleEpoch, "stale_epoch", "relay: room %s is at epoch %d, the message is sealed for epoch %d: fetch the room and seal again", room, rm.Epoch, epoch)
	case rm.Pending:
		// An admin removed a member without rotating: the current key is
		// one the removed member holds, so nothing more is sealed with it.
		return nil, charge{}, refuse(409, wire.RelayStaleEpoch, "stale_epoch", "relay: room %s needs a key rotation (a member was removed by an admin): rotate, then seal again", room)
	}
	now := r.o.Now()
	if skew := now.Sub(time.UnixMilli(int64(min(sent, 1<<62)))); skew > r.o.MaxSkew || skew < -r.o.MaxSkew {
		return nil, charge{}, refuse(400, wire.RelayClockSkew, "clock_skew", "relay: send time is %v from the server's clock (at most ±%v): check the sender's clock", skew.Round(time.Second), r.o.MaxSkew)
	}
	if r.o.DiskLow != nil && r.o.DiskLow(int64(len(m.Data)+len(m.Header)*64)) {
		return nil, charge{}, refuse(507, wire.RelayDiskFull, "disk_full", "relay: the server's free disk space is below its reserve; the message was not stored (retry once space is freed)")
	}
	ch := charge{sender: sender, bytes: int64(len(m.Data) + headerBytes(h))}
	if rm.MaxAge > 0 {
		ch.until = now.Add(rm.MaxAge)
	}
	if r.o.Quota != nil {
		switch err := r.o.Quota.Allow(ctx, sender, ch.bytes); {
		case errors.Is(err, quota.ErrExceeded):
			return nil, charge{}, refuse(507, wire.RelayQuotaExceeded, "quota_exceeded", "relay: the sender's messages still kept have reached its quota of %d bytes; the message was not stored (older messages expire with the room's age limit; an operator can raise the quota)", r.o.Quota.Limit())
		case err != nil:
			r.o.Logger.Warn("relay: cannot read the sender's usage; message refused", "sender", sender, "err", err)
			return nil, charge{}, refuse(503, wire.RelayUnavailable, "unavailable", "relay: control plane unavailable; retry with the same message id")
		}
	}
	stream, subject := subjects.SharedStream, subjects.Shared(room, topic)
	if rm.Dedicated {
		stream, subject = subjects.Stream(room), subjects.RoomTopic(room, topic)
	}
	out := &nats.Msg{Subject: subject, Data: m.Data, Header: make(nats.Header, 9)}
	for _, k := range envelopeHeaders {
		out.Header[k] = h[k]
	}
	out.Header[jetstream.ExpectedStreamHeader] = []string{stream}
	// The stream de-duplicates on Nats-Msg-Id, across every room it holds:
	// the relay names a message by its sender, its room and the id the
	// sender gave it, so nobody's id can collide with another sender's (a
	// member could otherwise have another's next message dropped as a
	// duplicate by publishing first with its id), nor one room's with
	// another's.
	out.Header[jetstream.MsgIDHeader] = []string{DedupID(sender, room, h.Get(e2e.HdrMsgID))}
	if !rm.Dedicated && rm.MaxAge >= time.Second {
		out.Header[jetstream.MsgTTLHeader] = []string{strconv.FormatInt(int64(rm.MaxAge/time.Second), 10)}
	}
	return out, ch, nil
}

// headerBytes is the size of h as it is stored: "NATS/1.0\r\n", each
// "key: value\r\n" and the final "\r\n".
func headerBytes(h nats.Header) int {
	n := 12
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// DedupID is the stream's de-duplication id (Nats-Msg-Id) of a message:
// <sender>.<room>.<the envelope's message id>.
func DedupID(sender, room, msgID string) string { return sender + "." + room + "." + msgID }

// envelopeHeaders are the headers the relay copies; every other header a
// sender sets (JetStream's Nats-* controls among them) is dropped.
var envelopeHeaders = []string{e2e.HdrVersion, e2e.HdrEpoch, e2e.HdrSender, e2e.HdrSeq, e2e.HdrSig, e2e.HdrTime, e2e.HdrMsgID}

// single returns the header's only value.
func single(h nats.Header, k string) (string, bool) {
	v := h[k]
	if len(v) != 1 {
		return "", false
	}
	return v[0], true
}

// uintHeader parses a canonical decimal header.
func uintHeader(h nats.Header, k string) (uint64, bool) {
	s, ok := single(h, k)
	if !ok || s == "" || len(s) > 20 || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}

// answer sends each publish's outcome, in the order they were made
// (acknowledgements through confirm, when Durable is set).
func (r *Relay) answer() {
	defer r.wg.Done()
	if r.stored != nil {
		defer close(r.stored)
	}
	for p := range r.pending {
		timer := time.NewTimer(time.Until(p.deadline))
		select {
		case ack := <-p.ack.Ok():
			if r.o.Quota != nil && !ack.Duplicate {
				r.o.Quota.Charge(p.charge.sender, p.charge.bytes, p.charge.until)
			}
			a := wire.PubAck{Stream: ack.Stream, Seq: ack.Sequence, Duplicate: ack.Duplicate}
			if r.stored != nil {
				r.stored <- storedAck{reply: p.reply, ack: a}
			} else {
				r.respond(p.reply, a)
			}
		case err := <-p.ack.Err():
			r.respond(p.reply, wire.PubAck{Error: streamError(err)})
		case <-timer.C:
			r.o.Logger.Warn("relay: the room stream did not acknowledge a message in time; the sender is told to retry", "wait", ackWait)
			r.respond(p.reply, wire.PubAck{Error: &wire.RelayError{Code: 503, ErrCode: wire.RelayUnavailable,
				Description: "relay: the room stream did not acknowledge in time; retry with the same message id"}})
		}
		timer.Stop()
	}
}

// confirm passes acknowledgements on in batches: all that arrived while
// the previous batch's Durable ran, after one Durable of their own (which
// starts after every one of them was stored).
func (r *Relay) confirm() {
	defer r.wg.Done()
	for first := range r.stored {
		batch := []storedAck{first}
	more:
		for {
			select {
			case a, ok := <-r.stored:
				if !ok {
					break more
				}
				batch = append(batch, a)
			default:
				break more
			}
		}
		if err := r.o.Durable(); err != nil {
			r.o.Logger.Error("relay: the disk failed as messages were stored: their senders are told the outcome is unknown", "messages", len(batch), "err", err)
			for _, a := range batch {
				r.respond(a.reply, wire.PubAck{Error: &wire.RelayError{Code: 503, ErrCode: wire.RelayUnavailable,
					Description: "relay: the server's disk failed as the message was stored; whether it is kept is unknown: retry with the same message id"}})
			}
			continue
		}
		for _, a := range batch {
			r.respond(a.reply, a.ack)
		}
	}
}

// streamError passes JetStream's own refusal on, and makes anything else
// a retryable unavailability.
func streamError(err error) *wire.RelayError {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return &wire.RelayError{Code: apiErr.Code, ErrCode: uint16(apiErr.ErrorCode), Description: apiErr.Description}
	}
	return &wire.RelayError{Code: 503, ErrCode: wire.RelayUnavailable, Description: "relay: the room stream did not acknowledge; retry with the same message id"}
}

func (r *Relay) respond(reply string, a wire.PubAck) {
	if reply == "" {
		return
	}
	if err := r.o.Members.Publish(reply, appendPubAck(nil, a)); err != nil {
		r.o.Logger.Debug("relay: answer not sent", "err", err)
	}
}

// appendPubAck encodes a as JSON without reflection (one per message).
func appendPubAck(b []byte, a wire.PubAck) []byte {
	if a.Error != nil {
		j, err := json.Marshal(a)
		if err != nil { // cannot happen: a is plain data
			return append(b, `{"error":{"code":503,"err_code":60007,"description":"relay: internal error"}}`...)
		}
		return append(b, j...)
	}
	b = append(b, `{"stream":`...)
	b = strconv.AppendQuote(b, a.Stream)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, a.Seq, 10)
	if a.Duplicate {
		b = append(b, `,"duplicate":true`...)
	}
	return append(b, '}')
}

func (r *Relay) result(reason string) {
	if r.o.OnResult != nil {
		r.o.OnResult(reason)
	}
}
