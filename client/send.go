package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
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

// release gives back the n numbers reserved from first, if no later
// reservation in room followed them: receivers would report numbers never
// sent as a gap.
func (s *sender) release(room string, first uint64, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seqs[room] == first+uint64(n)-1 {
		s.seqs[room] = first - 1
	}
}

// jetStream returns the JetStream context of the data-plane connection.
func (c *Client) jetStream() (jetstream.JetStream, error) {
	nc, err := c.conn()
	if err != nil {
		return nil, err
	}
	s := c.sender
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
// publishes and waits until the room's stream has stored every one; any
// that fail are retried with their message ids, so none is stored twice.
// It returns the message ids in order. Messages are encrypted and signed
// on every core, a chunk at a time, and published in order as each chunk
// is ready.
//
// Messages go to membershipd's relay (docs/DESIGN.md, "The relay"), which
// stores them only under the room's current epoch: a message refused as
// sealed for an older epoch (a rotation happened since this client
// fetched the room) is sealed again under the new one and sent again with
// the same message id.
func (c *Client) SendBatch(ctx context.Context, room, topic string, data [][]byte) ([]string, error) {
	if topic == "" {
		topic = subjects.DefaultTopic
	}
	if !subjects.ValidTopic(topic) {
		return nil, fmt.Errorf("invalid topic %q: dot-separated tokens of [A-Za-z0-9_-]", topic)
	}
	js, err := c.jetStream()
	if err != nil {
		return nil, err
	}
	first := c.sender.next(room, len(data))
	ids := make([]string, len(data))
	for i := range data {
		ids[i] = e2e.MsgID(c.sender.stream, first+uint64(i))
	}
	todo := make([]int, len(data)) // indexes of the messages still to send
	for i := range todo {
		todo[i] = i
	}
	force := false
	for reseal := 0; len(todo) > 0; reseal++ {
		if reseal > 3 {
			return nil, fmt.Errorf("publish to room %s: the room's epoch kept changing while sending", room)
		}
		stale, published, err := c.sendSealed(ctx, js, room, topic, first, ids, data, todo, force)
		if err != nil {
			if reseal == 0 && !published {
				// Nothing was stored (nothing left this client, or the
				// relay refused every attempt outright): its numbers are
				// not a gap in its sequence when it sends again.
				c.sender.release(room, first, len(data))
			}
			return nil, err
		}
		todo, force = stale, true
	}
	return ids, nil
}

// sendSealed seals the messages todo under the room's current epoch,
// publishes them and waits for every acknowledgement, retrying what may
// pass by itself. It returns the messages the relay refused as sealed for
// a stale epoch, and whether it published anything that may have been
// stored (false when every attempt was refused by the relay outright).
func (c *Client) sendSealed(ctx context.Context, js jetstream.JetStream, room, topic string, first uint64, ids []string, data [][]byte, todo []int, force bool) (stale []int, published bool, err error) {
	st, err := c.state(ctx, room, force)
	if err != nil {
		return nil, published, err
	}
	if st.info.Room.RotationPending {
		if err := c.Rotate(ctx, room); err != nil {
			return nil, published, fmt.Errorf("room needs a key rotation before sending: %w", err)
		}
		if st, err = c.state(ctx, room, true); err != nil {
			return nil, published, err
		}
	}
	epoch := st.info.Room.Epoch
	key, ok := st.keys[epoch]
	if !ok {
		return nil, published, fmt.Errorf("you hold no accepted key for the room's current epoch %d", epoch)
	}
	subject := subjects.RoomTopic(room, topic) // what the envelope binds
	ingress := subjects.Ingress(c.id.SignPub().String(), room, topic)
	msgs := make([]*nats.Msg, len(todo))
	index := make(map[*nats.Msg]int, len(todo))
	seal := func(lo, hi int) error {
		nonces := make([]byte, (hi-lo)*e2e.NonceSize)
		if _, err := rand.Read(nonces); err != nil {
			return err
		}
		now := time.Now()
		for k := lo; k < hi; k++ {
			i := todo[k]
			nonce := nonces[(k-lo)*e2e.NonceSize : (k-lo+1)*e2e.NonceSize]
			env, err := e2e.SealMessageAt(c.id, st.id, subject, epoch, key, ids[i], first+uint64(i), now, nonce, data[i])
			if err != nil {
				return err
			}
			msgs[k] = &nats.Msg{Subject: ingress, Header: nats.Header(env.Headers()), Data: env.Payload}
		}
		return nil
	}
	// Sealing (encrypt + sign) is spread over the cores, a chunk at a
	// time, and each chunk is published, in order, as soon as it is
	// sealed: the first publishes are in flight while later messages are
	// still being signed.
	chunks := sealChunks(ctx, len(todo), seal)
	var failed []*nats.Msg
	futures := make([]jetstream.PubAckFuture, 0, len(todo))
	for _, ch := range chunks {
		select {
		case err := <-ch.done:
			if err != nil {
				return nil, published, err
			}
		case <-ctx.Done():
			return nil, published, ctx.Err()
		}
		for k := ch.lo; k < ch.hi; k++ {
			index[msgs[k]] = todo[k]
		}
		published = true
		futures, failed = publishAsync(js, msgs[ch.lo:ch.hi], futures, failed)
	}
	// acked: some message was stored; uncertain: some attempt's outcome is
	// unknown (a timeout, a lost connection). Without either, every
	// attempt was refused by the relay before it published anything, and
	// the caller may give the sequence numbers back.
	acked, uncertain := false, false
	pending, started := msgs, time.Now()
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt > 0 {
			futures, failed = publishAsync(js, pending, futures[:0], nil)
		}
		var lastErr error
		for _, f := range futures {
			select {
			case <-f.Ok():
				acked = true
			case err := <-f.Err():
				if isRelayCode(err, wire.RelayStaleEpoch) {
					stale = append(stale, index[f.Msg()])
					continue
				}
				lastErr = err
				uncertain = uncertain || !refusedOutright(err)
				failed = append(failed, f.Msg())
			case <-ctx.Done():
				return nil, published, ctx.Err()
			}
		}
		if len(failed) == 0 {
			break
		}
		if attempt >= 20 || time.Since(started) > publishRetryFor || (lastErr != nil && !retryable(lastErr)) {
			return nil, published && (acked || uncertain), fmt.Errorf("publish to room %s: %d of %d messages not acknowledged: %w", room, len(failed), len(data), sendError(lastErr))
		}
		select {
		case <-ctx.Done():
			return nil, published, ctx.Err()
		case <-time.After(backoff(attempt)):
		}
		pending, failed = failed, nil
	}
	slices.Sort(stale)
	return stale, published, nil
}

// ErrNotMember is a publish the relay refused because the sender is not a
// member of the room (or the room does not exist).
var ErrNotMember = errors.New("not a member of the room")

// ErrDiskFull is a publish the server refused because its free disk space
// is below its reserve: the message was not stored, and sending it again
// once space is freed is safe.
var ErrDiskFull = errors.New("the server's disk is full; the message was not stored")

// ErrQuotaExceeded is a publish, an upload or a room creation the server
// refused because it would take the user over a per-user quota (messages
// kept, blob bytes, rooms created): nothing was stored. Messages count
// until their room's age limit removes them; blobs and rooms for ever. An
// operator can raise the quota.
var ErrQuotaExceeded = errors.New("over this user's quota; nothing was stored")

// refusedOutright reports whether err is a relay refusal made before the
// relay published anything: the message was certainly not stored. (Its
// "unavailable" may follow a failed write, so it is not one.)
func refusedOutright(err error) bool {
	for _, code := range []uint16{wire.RelayBadSubject, wire.RelayBadEnvelope, wire.RelayNotMember, wire.RelayRevoked,
		wire.RelayStaleEpoch, wire.RelayClockSkew, wire.RelayOldProtocol, wire.RelayDiskFull, wire.RelayQuotaExceeded} {
		if isRelayCode(err, code) {
			return true
		}
	}
	return false
}

// isRelayCode reports whether err is the relay's refusal with this code.
func isRelayCode(err error, code uint16) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && uint16(apiErr.ErrorCode) == code
}

// sendError gives a relay refusal the SDK's sentinel where it has one.
func sendError(err error) error {
	switch {
	case isRelayCode(err, wire.RelayNotMember):
		return fmt.Errorf("%w: %v", ErrNotMember, err)
	case isRelayCode(err, wire.RelayDiskFull):
		return fmt.Errorf("%w: %v", ErrDiskFull, err)
	case isRelayCode(err, wire.RelayQuotaExceeded):
		return fmt.Errorf("%w: %v", ErrQuotaExceeded, err)
	}
	return err
}

// publishAsync publishes msgs without waiting; the message id header
// (Nats-Msg-Id) is already in each message's headers. Messages that could not even be queued go to failed.
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
