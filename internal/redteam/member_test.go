package redteam

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// What a member can do by hand, without the SDK: a raw nats.go
// connection logged in with its nkey, signed control-plane requests, its
// own listeners, envelopes sealed with room keys it holds.

// rawConn is a member's own data-plane connection through nats.go, with
// the server's asynchronous refusals (permission violations) collected.
type rawConn struct {
	u    *user
	nc   *nats.Conn
	mu   sync.Mutex
	errs []string
}

// dialRaw logs u in over TLS with its nkey and its own inbox prefix.
func (e *env) dialRaw(u *user) *rawConn {
	e.t.Helper()
	r := &rawConn{u: u}
	nc, err := nats.Connect(e.bus.NATSURL,
		nats.Nkey(u.id.NKey(), u.id.SignNonce),
		nats.Secure(e.pool.Clone()),
		nats.CustomInboxPrefix(subjects.InboxPrefix(u.hex)),
		nats.Name("redteam-"+u.name),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			r.mu.Lock()
			r.errs = append(r.errs, err.Error())
			r.mu.Unlock()
		}))
	if err != nil {
		e.t.Fatalf("%s's data-plane login: %v", u.name, err)
	}
	r.nc = nc
	e.t.Cleanup(nc.Close)
	return r
}

// refused waits (up to 3 s: the refusal comes at once) for the server's
// permission violation for op ("Publish" or "Subscription") on subject.
func (r *rawConn) refused(op, subject string) bool {
	want := fmt.Sprintf("Permissions Violation for %s to %q", op, subject)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return harness.Wait(ctx, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, e := range r.errs {
			if strings.Contains(e, want) {
				return nil
			}
		}
		return errNotSeen
	}) == nil
}

var errNotSeen = fmt.Errorf("not seen")

// trySubscribe subscribes to subject and reports whether the server
// refused it.
func (r *rawConn) trySubscribe(subject string) (refused bool, s *sink) {
	s, err := r.collect(subject)
	if err != nil {
		return true, nil
	}
	r.nc.Flush()
	return r.refused("Subscription", subject), s
}

// sink collects what a subscription receives. Flow-control requests are
// answered (as the SDK does) and, like idle heartbeats, not counted; nor
// is membershipd's hint that it deleted a listener (no body, the
// wire.HdrListenerEnded header and no message id: the SDK's test of it),
// which it sends on the deleted listener's deliver subject before the API
// answers but which may arrive after.
type sink struct {
	mu     sync.Mutex
	data   []*nats.Msg
	status int
}

// collect subscribes to subject into a new sink.
func (r *rawConn) collect(subject string) (*sink, error) {
	s := &sink{}
	_, err := r.nc.Subscribe(subject, func(m *nats.Msg) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(m.Data) == 0 && m.Header.Get("Status") != "" {
			s.status++
			if m.Reply != "" {
				_ = m.Respond(nil)
			}
			return
		}
		if len(m.Data) == 0 && m.Header.Get(wire.HdrListenerEnded) != "" && m.Header.Get(e2e.HdrMsgID) == "" {
			return
		}
		s.data = append(s.data, m)
	})
	return s, err
}

// count is how many data messages the sink holds.
func (s *sink) count() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.data)
}

// msgs returns the data messages received so far.
func (s *sink) msgs() []*nats.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*nats.Msg(nil), s.data...)
}

// waitCount waits up to d for the sink to hold at least n data messages.
func (s *sink) waitCount(n int, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return harness.Wait(ctx, func() error {
		if s.count() >= n {
			return nil
		}
		return errNotSeen
	}) == nil
}

// api sends a request signed by u for this deployment (Go's net/http;
// the attacks themselves use curl) and decodes a 2xx answer into out. It
// returns the status and, for an error, the API's code.
func (e *env) api(u *user, method, path string, body []byte, out any) (int, string) {
	return e.apiAt(e.bus.HTTPURL, e.tag, u, method, path, body, out)
}

// apiAt is api against another server and deployment tag.
func (e *env) apiAt(base, tag string, u *user, method, path string, body []byte, out any) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	s := &httpsig.Signer{KeyID: u.hex, Key: u.id.SigningKey(), Tag: tag}
	if err := s.Sign(req, body); err != nil {
		e.t.Fatal(err)
	}
	resp, err := e.httpc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		var we wire.Error
		json.Unmarshal(raw, &we)
		return resp.StatusCode, we.Error.Code
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Errorf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, ""
}

// newListener asks the control plane for a listener of u on room.
func (e *env) newListener(u *user, room string, req wire.ListenRequest) (wire.Listener, int, string) {
	body, _ := json.Marshal(req)
	var l wire.Listener
	st, code := e.api(u, "POST", "/v1/rooms/"+room+"/listeners", body, &l)
	return l, st, code
}

// roomKey opens u's sealed key of a room's epoch.
func (e *env) roomKey(u *user, room string, epoch uint64) *e2e.RoomKey {
	e.t.Helper()
	var k wire.Keys
	if st, code := e.api(u, "GET", "/v1/rooms/"+room+"/keys?epoch="+strconv.FormatUint(epoch, 10), nil, &k); st != http.StatusOK || len(k.Keys) != 1 {
		e.t.Fatalf("%s's key of room %s epoch %d: %d %s", u.name, room, epoch, st, code)
	}
	w := k.Keys[0]
	rid, _ := e2e.ParseRoomID(w.Room)
	member, err1 := identity.ParseSignPub(w.Member)
	sealer, err2 := identity.ParseSignPub(w.Sealer)
	if err1 != nil || err2 != nil {
		e.t.Fatalf("sealed key: %v %v", err1, err2)
	}
	key, err := e2e.OpenRoomKey(u.id, e2e.SealedKey{Room: rid, Epoch: w.Epoch, Member: member, Sealer: sealer, Sealed: w.Sealed, Sig: w.Sig})
	if err != nil {
		e.t.Fatalf("open %s's key of room %s: %v", u.name, room, err)
	}
	return key
}

// seal makes a genuine envelope of sender's, as its SDK would, from a new
// sender stream (sequence 1), sent at sent.
func (e *env) seal(sender *user, room, topic string, epoch uint64, key *e2e.RoomKey, sent time.Time, text string) *e2e.Envelope {
	e.t.Helper()
	var stream [8]byte
	nonce := make([]byte, e2e.NonceSize)
	rand.Read(stream[:])
	rand.Read(nonce)
	rid, _ := e2e.ParseRoomID(room)
	env, err := e2e.SealMessageAt(sender.id, rid, subjects.RoomTopic(room, topic), epoch, key, e2e.MsgID(stream, 1), 1, sent, nonce, []byte(text))
	if err != nil {
		e.t.Fatal(err)
	}
	return env
}

// headerArgs are nats CLI -H flags for headers, in a fixed order.
func headerArgs(h map[string][]string) []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		for _, v := range h[k] {
			out = append(out, "-H", k+":"+v)
		}
	}
	return out
}

// withHeader returns a copy of h with k set to v.
func withHeader(h map[string][]string, k, v string) map[string][]string {
	out := make(map[string][]string, len(h))
	for hk, hv := range h {
		out[hk] = append([]string(nil), hv...)
	}
	out[k] = []string{v}
	return out
}

// relayPublish publishes payload with headers on subject with the nats
// CLI as u, as a request (the relay answers on u's inbox), and returns
// the relay's answer.
func (e *env) relayPublish(u *user, subject string, h map[string][]string, payload []byte) (wire.PubAck, result) {
	args := append([]string{"request", subject, "--force-stdin", "--no-templates", "--raw"}, headerArgs(h)...)
	r := e.run(20*time.Second, bytes.NewReader(payload), e.tl.nats, e.natsArgs(u, append([]string{"--timeout", controlTimeout}, args...)...)...)
	var a wire.PubAck
	if err := json.Unmarshal([]byte(lastLine(r.stdout)), &a); err != nil {
		a.Error = &wire.RelayError{Description: "no relay answer: " + lastLine(r.all())}
	}
	return a, r
}

// answerText renders a relay answer for the table.
func answerText(a wire.PubAck) string {
	switch {
	case a.Error != nil && a.Error.ErrCode != 0:
		return fmt.Sprintf("relay refused %d/%d", a.Error.Code, a.Error.ErrCode)
	case a.Error != nil:
		return a.Error.Description
	case a.Duplicate:
		return "relay: duplicate, not stored again"
	default:
		return "relay stored it in " + a.Stream
	}
}

// sdk dials the SDK as u (the CLI's settings: TLS with the test CA).
func (e *env) sdk(u *user, mod func(*client.Config)) *client.Client {
	e.t.Helper()
	cfg := client.Config{Identity: u.id, Servers: []string{e.bus.HTTPURL}, NATS: []string{e.bus.NATSURL}, RootCAs: e.ca.Pool}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		e.t.Fatalf("%s's SDK: %v", u.name, err)
	}
	e.t.Cleanup(c.Close)
	return c
}

// listening is an SDK Listen running in the background: what it delivered
// and what it reported, until stopped.
type listening struct {
	mu        sync.Mutex
	delivered []client.Message
	refused   []error
	stop      context.CancelFunc
	done      chan error
}

// listenSDK starts c.Listen on room (topic "": every topic).
func listenSDK(c *client.Client, room, topic string, fromStart bool) *listening {
	ctx, cancel := context.WithCancel(context.Background())
	l := &listening{stop: cancel, done: make(chan error, 1)}
	go func() {
		l.done <- c.Listen(ctx, room, client.ListenOptions{Topic: topic, FromStart: fromStart, OnError: func(err error) {
			l.mu.Lock()
			l.refused = append(l.refused, err)
			l.mu.Unlock()
		}}, func(m client.Message) {
			l.mu.Lock()
			l.delivered = append(l.delivered, m)
			l.mu.Unlock()
		})
	}()
	return l
}

// counts returns how many messages were delivered and refused so far.
func (l *listening) counts() (delivered, refused int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.delivered), len(l.refused)
}

// texts returns the delivered messages' texts.
func (l *listening) texts() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, m := range l.delivered {
		out = append(out, string(m.Data))
	}
	return out
}

// waitFor waits up to d for cond on the counts.
func (l *listening) waitFor(d time.Duration, cond func(delivered, refused int) bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return harness.Wait(ctx, func() error {
		if cond(l.counts()) {
			return nil
		}
		return errNotSeen
	}) == nil
}

// end stops the Listen and waits for it to return.
func (l *listening) end() error {
	l.stop()
	select {
	case err := <-l.done:
		return err
	case <-time.After(30 * time.Second):
		return fmt.Errorf("Listen did not return")
	}
}

// listenerPath is a room's listeners resource.
func listenerPath(room string) string { return "/v1/rooms/" + url.PathEscape(room) + "/listeners" }
