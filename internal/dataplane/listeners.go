package dataplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// Members never call the JetStream API. To read a room, a member asks the
// control plane for a listener: membershipd checks the membership, makes a
// push consumer on the room's stream that delivers to the member's own
// subject (unibus.dlv.<member>.<token>, which only that member may
// subscribe to) and answers with its name and deliver subject. membershipd
// names, caps and deletes every consumer: a member's consumers are deleted
// when it leaves the room, and any consumer whose member is no longer in
// its room (or no longer active) is deleted by the periodic Sweep, so a
// node that died while a removal was made leaves none delivering.
//
// A listener is an ordered, unacknowledged push consumer in memory with
// one replica: flow control (the member answers each request on
// $JS.FC.>), an idle heartbeat, and an inactivity threshold, so that a
// consumer whose member went away is deleted by the server. The member's
// SDK detects a gap, a lost heartbeat or a lost node and asks for a new
// listener that starts after the last message it handled.

// Listener defaults.
const (
	DefaultHeartbeat = 5 * time.Second
	// DefaultInactive is how long a listener without a receiver lives.
	DefaultInactive = 30 * time.Second
	// DefaultMaxListeners caps the listeners one member has on one node.
	DefaultMaxListeners = 64
	// Metadata keys on every listener's consumer.
	metaMember = "unibus_member"
	metaRoom   = "unibus_room"
)

// Errors of Listeners; the API maps them to statuses.
var (
	ErrTooManyListeners = errors.New("too many listeners")
	ErrBadListen        = errors.New("bad listen request")
	ErrNotYours         = errors.New("no such listener of yours")
)

// ListenersOptions configure Listeners.
type ListenersOptions struct {
	// Bus is the internal identity's JetStream context in the bus account.
	Bus          jetstream.JetStream
	Directory    *Directory
	Heartbeat    time.Duration // 0: DefaultHeartbeat
	Inactive     time.Duration // 0: DefaultInactive
	MaxListeners int           // per member on this node; 0: DefaultMaxListeners
	Logger       *slog.Logger
}

// Listeners makes and deletes the consumers members read rooms with.
type Listeners struct {
	o  ListenersOptions
	mu sync.Mutex
	// mine counts the listeners this node made that may still exist, per
	// member; Sweep forgets the ones that are gone.
	mine map[string]map[string]made // member → name → when and where
}

// made is a listener this node made: when, and on which stream.
type made struct {
	at     time.Time
	stream string
}

// NewListeners returns a Listeners.
func NewListeners(o ListenersOptions) *Listeners {
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Inactive <= 0 {
		o.Inactive = DefaultInactive
	}
	if o.MaxListeners <= 0 {
		o.MaxListeners = DefaultMaxListeners
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Listeners{o: o, mine: map[string]map[string]made{}}
}

// ListenRequest asks for a listener for Member on Room. The caller (the
// API) has checked that Member is an active member of Room.
type ListenRequest struct {
	Room, Member string
	Dedicated    bool   // the room has a stream of its own
	Topic        string // filter; "" = every topic
	Deliver      string // wire.DeliverNew (default), DeliverAll, DeliverSeq
	StartSeq     uint64
}

// Create makes a listener.
func (l *Listeners) Create(ctx context.Context, req ListenRequest) (wire.Listener, error) {
	if !validRoom(req.Room) || !validSignPub(req.Member) {
		return wire.Listener{}, fmt.Errorf("%w: room or member id", ErrBadListen)
	}
	stream, prefix := streamOf(req.Room, req.Dedicated)
	filter := prefix + ">"
	if req.Topic != "" {
		if !ValidTopicFilter(req.Topic) {
			return wire.Listener{}, fmt.Errorf("%w: topic filter %q: dot-separated tokens of [A-Za-z0-9_-], \"*\", or a final \">\"", ErrBadListen, req.Topic)
		}
		filter = prefix + req.Topic
	}
	cfg := jetstream.ConsumerConfig{
		Name:              listenerName(req.Member),
		DeliverSubject:    subjects.Deliver(req.Member, randomHex(8)),
		FilterSubject:     filter,
		AckPolicy:         jetstream.AckNonePolicy,
		FlowControl:       true,
		IdleHeartbeat:     l.o.Heartbeat,
		InactiveThreshold: l.o.Inactive,
		MemoryStorage:     true,
		Replicas:          1,
		Metadata:          map[string]string{metaMember: req.Member, metaRoom: req.Room},
	}
	switch req.Deliver {
	case "", wire.DeliverNew:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	case wire.DeliverAll:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case wire.DeliverSeq:
		if req.StartSeq == 0 {
			return wire.Listener{}, fmt.Errorf("%w: deliver %q needs start_seq >= 1", ErrBadListen, wire.DeliverSeq)
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, req.StartSeq
	default:
		return wire.Listener{}, fmt.Errorf("%w: deliver must be %q, %q or %q", ErrBadListen, wire.DeliverNew, wire.DeliverAll, wire.DeliverSeq)
	}
	if !l.reserve(req.Member, cfg.Name, stream) {
		return wire.Listener{}, fmt.Errorf("%w: at most %d per member on a node; stop some", ErrTooManyListeners, l.o.MaxListeners)
	}
	c, err := l.o.Bus.CreatePushConsumer(ctx, stream, cfg)
	if err != nil {
		l.release(req.Member, cfg.Name)
		return wire.Listener{}, fmt.Errorf("make listener on %s: %w", stream, err)
	}
	info := c.CachedInfo()
	return wire.Listener{
		Name: cfg.Name, Room: req.Room, Stream: stream, DeliverSubject: cfg.DeliverSubject,
		SubjectPrefix: prefix, Pending: info.NumPending, LastSeq: info.Delivered.Stream,
		HeartbeatSeconds: int(l.o.Heartbeat / time.Second),
	}, nil
}

// Delete deletes one of member's listeners in room. A listener that is
// not the member's, or not in that room, is ErrNotYours.
func (l *Listeners) Delete(ctx context.Context, room, member string, dedicated bool, name string) error {
	if !strings.HasPrefix(name, member[:min(16, len(member))]) || !validRoom(room) {
		return ErrNotYours
	}
	stream, _ := streamOf(room, dedicated)
	c, err := l.o.Bus.PushConsumer(ctx, stream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return ErrNotYours
	}
	if err != nil {
		return fmt.Errorf("listener %s: %w", name, err)
	}
	md := c.CachedInfo().Config.Metadata
	if md[metaMember] != member || md[metaRoom] != room {
		return ErrNotYours
	}
	if err := l.o.Bus.DeleteConsumer(ctx, stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete listener %s: %w", name, err)
	}
	l.release(member, name)
	return nil
}

// DeleteMember deletes every listener of member in room, on every node:
// called when the member leaves the room (or is revoked), before the API
// answers.
func (l *Listeners) DeleteMember(ctx context.Context, room, member string, dedicated bool) (int, error) {
	stream, _ := streamOf(room, dedicated)
	return l.deleteWhere(ctx, stream, member[:min(16, len(member))], func(md map[string]string) bool {
		return md[metaMember] == member && md[metaRoom] == room
	})
}

// deleteWhere deletes the stream's consumers whose name starts with
// prefix and whose metadata match.
func (l *Listeners) deleteWhere(ctx context.Context, stream, prefix string, match func(map[string]string) bool) (int, error) {
	s, err := l.o.Bus.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("list listeners of %s: %w", stream, err)
	}
	names := s.ConsumerNames(ctx)
	var candidates []string
	for n := range names.Name() {
		if strings.HasPrefix(n, prefix) {
			candidates = append(candidates, n)
		}
	}
	if err := names.Err(); err != nil {
		return 0, fmt.Errorf("list listeners of %s: %w", stream, err)
	}
	deleted := 0
	var errs []error
	for _, n := range candidates {
		c, err := s.PushConsumer(ctx, n)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		md := c.CachedInfo().Config.Metadata
		if !match(md) {
			continue
		}
		if err := s.DeleteConsumer(ctx, n); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			errs = append(errs, err)
			continue
		}
		l.ended(c.CachedInfo().Config.DeliverSubject)
		l.release(md[metaMember], n)
		deleted++
	}
	return deleted, errors.Join(errs...)
}

// ended tells the listener's subscriber that the server deleted it (its
// member left the room or was revoked): a message on its deliver subject
// with the wire.HdrListenerEnded header and no body. It is a hint, sent
// at most once: the SDK then asks for a new listener at once — refused,
// so its Listen ends — instead of after three missed heartbeats. Nothing
// depends on it arriving.
func (l *Listeners) ended(deliver string) {
	if deliver == "" {
		return
	}
	m := nats.NewMsg(deliver)
	m.Header.Set(wire.HdrListenerEnded, "deleted")
	if err := l.o.Bus.Conn().PublishMsg(m); err != nil {
		l.o.Logger.Debug("listener ended: the hint was not sent", "err", err)
	}
}

// Sweep deletes every listener on the streams whose member is no longer
// an active member of its room, and every consumer on them that is not a
// listener. It returns how many it deleted.
func (l *Listeners) Sweep(ctx context.Context, streams []string) (int, error) {
	deleted := 0
	var errs []error
	for _, stream := range streams {
		s, err := l.o.Bus.Stream(ctx, stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		list := s.ListConsumers(ctx)
		var doomed []*jetstream.ConsumerInfo
		for info := range list.Info() {
			if !l.keep(ctx, info) {
				doomed = append(doomed, info)
			}
		}
		if err := list.Err(); err != nil {
			errs = append(errs, err)
		}
		for _, info := range doomed {
			if err := s.DeleteConsumer(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				errs = append(errs, err)
				continue
			}
			if info.Config.Metadata[metaMember] != "" {
				l.ended(info.Config.DeliverSubject)
			}
			deleted++
		}
	}
	l.forgetOld()
	return deleted, errors.Join(errs...)
}

// keep decides whether a consumer found by Sweep may stay. An error
// reading the control plane keeps it (the next sweep decides): deleting a
// member's listener is an outage for it, keeping a removed member's one
// a few more seconds is bounded by the removal's own deletion.
func (l *Listeners) keep(ctx context.Context, info *jetstream.ConsumerInfo) bool {
	md := info.Config.Metadata
	member, room := md[metaMember], md[metaRoom]
	if member == "" || room == "" {
		return false // not a listener: nothing else may read room streams
	}
	active, err := l.o.Directory.UserActive(ctx, member)
	if err != nil {
		return true
	}
	if !active {
		return false
	}
	rm, err := l.o.Directory.Room(ctx, room)
	if errors.Is(err, ErrNoRoom) {
		return false
	}
	return err != nil || rm.Members[member]
}

// reserve counts a listener against the member's cap on this node.
func (l *Listeners) reserve(member, name, stream string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.mine[member]
	if len(m) >= l.o.MaxListeners {
		l.forgetOldLocked(member)
		if m = l.mine[member]; len(m) >= l.o.MaxListeners {
			return false
		}
	}
	if m == nil {
		m = map[string]made{}
		l.mine[member] = m
	}
	m[name] = made{at: time.Now(), stream: stream}
	return true
}

func (l *Listeners) release(member, name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := l.mine[member]; m != nil {
		delete(m, name)
		if len(m) == 0 {
			delete(l.mine, member)
		}
	}
}

// forgetOld drops counted listeners whose consumer no longer exists.
func (l *Listeners) forgetOld() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for member := range l.mine {
		l.forgetOldLocked(member)
	}
}

// forgetOldLocked checks the member's counted listeners against the
// server, one lookup each; it is called when the cap is reached.
func (l *Listeners) forgetOldLocked(member string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for name, m := range l.mine[member] {
		if time.Since(m.at) < l.o.Inactive {
			continue
		}
		if !l.exists(ctx, m.stream, name) {
			delete(l.mine[member], name)
		}
	}
	if len(l.mine[member]) == 0 {
		delete(l.mine, member)
	}
}

// exists reports whether the consumer is still on its stream; an error
// counts as existing.
func (l *Listeners) exists(ctx context.Context, stream, name string) bool {
	_, err := l.o.Bus.PushConsumer(ctx, stream, name)
	return !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound)
}

// streamOf returns a room's stream and the prefix of its stored subjects.
func streamOf(room string, dedicated bool) (stream, prefix string) {
	if dedicated {
		return subjects.Stream(room), subjects.RoomPrefix + "." + room + "."
	}
	return subjects.SharedStream, subjects.SharedPrefix + "." + room + "."
}

// listenerName is a new listener's consumer name: the member's first 16
// hex digits (so its listeners can be found) and 16 random ones (so that
// nobody else can address its flow-control subject).
func listenerName(member string) string { return member[:16] + randomHex(8) }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error()) // cannot happen (Go 1.24+ never fails)
	}
	return hex.EncodeToString(b)
}

// ValidTopicFilter reports whether f is a topic filter: dot-separated
// tokens of [A-Za-z0-9_-] or "*", the last of which may be ">".
func ValidTopicFilter(f string) bool {
	if f == "" || len(f) > 128 {
		return false
	}
	toks := strings.Split(f, ".")
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
