package dataplane

import (
	"context"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/testnode"
	"github.com/unibus/unibus/subjects"
)

// fakeSource is the control plane's state, set by the test.
type fakeSource struct {
	mu    sync.Mutex
	rooms map[string]Room
	users map[string]bool
	reads int
}

func newSource() *fakeSource { return &fakeSource{rooms: map[string]Room{}, users: map[string]bool{}} }

func (s *fakeSource) Room(_ context.Context, id string) (Room, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	r, ok := s.rooms[id]
	if !ok {
		return Room{}, ErrNoRoom
	}
	m := make(map[string]bool, len(r.Members))
	for k, v := range r.Members {
		m[k] = v
	}
	r.Members = m
	return r, nil
}

func (s *fakeSource) UserActive(_ context.Context, sp string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	return s.users[sp], nil
}

func (s *fakeSource) setRoom(r Room) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rooms[r.ID] = r
}

func (s *fakeSource) setUser(sp string, active bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[sp] = active
}

// grants is the node's Authorizer: active users of the source log in.
type grants struct{ src *fakeSource }

func (g grants) Grant(ctx context.Context, nkey string) (natsnode.Grant, error) {
	sp, err := identity.SignPubFromNKey(nkey)
	if err != nil {
		return natsnode.Grant{}, err
	}
	active, err := g.src.UserActive(ctx, sp.String())
	return natsnode.Grant{Active: active, SignPubHex: sp.String()}, err
}

// plane is a node with the shared stream, a relay and listeners.
type plane struct {
	node      *testnode.Node
	src       *fakeSource
	dir       *Directory
	bus       jetstream.JetStream
	relay     *Relay
	listeners *Listeners
	ctx       context.Context
}

func startPlane(t *testing.T) *plane { t.Helper(); return startPlaneWith(t, nil) }

// startPlaneWith is startPlane with the relay's options edited by edit.
func startPlaneWith(t *testing.T, edit func(*RelayOptions)) *plane {
	t.Helper()
	p := &plane{src: newSource()}
	p.node = testnode.StartWith(t, "", grants{p.src})
	var cancel context.CancelFunc
	p.ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	var err error
	if p.bus, err = jetstream.New(p.node.Bus(t)); err != nil {
		t.Fatal(err)
	}
	if err := EnsureSharedStream(p.ctx, p.bus, StreamLimits{Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	p.dir = NewDirectory(p.src, 0, nil)
	o := RelayOptions{Members: p.node.Members(t), Bus: p.bus, Directory: p.dir}
	if edit != nil {
		edit(&o)
	}
	if p.relay, err = StartRelay(o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.relay.Close() })
	p.listeners = NewListeners(ListenersOptions{Bus: p.bus, Directory: p.dir, Heartbeat: time.Second, Inactive: 5 * time.Second})
	return p
}

// user is a member's identity and its data-plane connection.
type user struct {
	id  *identity.Identity
	hex string
	nc  *nats.Conn
	// errs receives the connection's asynchronous errors (permission
	// violations).
	errs chan error
}

func (p *plane) newUser(t *testing.T, active bool) *user {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	u := &user{id: id, hex: id.SignPub().String(), errs: make(chan error, 64)}
	p.src.setUser(u.hex, active)
	if !active {
		return u
	}
	u.nc, err = nats.Connect(p.node.ClientURL(), nats.Nkey(id.NKey(), id.SignNonce),
		nats.CustomInboxPrefix(subjects.InboxPrefix(u.hex)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case u.errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.nc.Close)
	return u
}

// room makes a room in the source with these members at epoch 1.
func (p *plane) room(members ...*user) Room {
	r := Room{ID: hex.EncodeToString(randomBytes(16)), Epoch: 1, Members: map[string]bool{}}
	for _, m := range members {
		r.Members[m.hex] = true
	}
	p.src.setRoom(r)
	return r
}

func randomBytes(n int) []byte {
	b, _ := hex.DecodeString(randomHex(n))
	return b
}

// envelope is a well-formed ingress message's headers and payload (the
// relay checks structure, not signatures).
func envelope(u *user, epoch uint64, seq uint64, at time.Time) (nats.Header, []byte) {
	h := nats.Header{}
	h.Set(e2e.HdrVersion, e2e.Version)
	h.Set(e2e.HdrEpoch, strconv.FormatUint(epoch, 10))
	h.Set(e2e.HdrSender, u.hex)
	h.Set(e2e.HdrSeq, strconv.FormatUint(seq, 10))
	h.Set(e2e.HdrSig, strings.Repeat("A", 86))
	h.Set(e2e.HdrTime, strconv.FormatInt(at.UnixMilli(), 10))
	h.Set(e2e.HdrMsgID, "0011223344556677-"+strconv.FormatUint(seq, 10))
	return h, make([]byte, e2e.NonceSize+e2e.TagSize+8)
}

// send publishes through the relay and returns its answer.
func (u *user) send(t *testing.T, room, topic string, h nats.Header, payload []byte) (*jetstream.PubAck, error) {
	t.Helper()
	js, err := jetstream.New(u.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return js.PublishMsg(ctx, &nats.Msg{Subject: subjects.Ingress(u.hex, room, topic), Header: h, Data: payload})
}

// stored returns how many messages a stream holds.
func (p *plane) stored(t *testing.T, stream string) uint64 {
	t.Helper()
	s, err := p.bus.Stream(p.ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(p.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
