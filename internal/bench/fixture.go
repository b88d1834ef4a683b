package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/subjects"
)

// fixture is one deployment under test with its two users: the admin (the
// sender, who creates rooms) and a member the bench registers (the
// receiver), each with its own SDK client, so that sender and receiver have
// separate connections as two programs would. With the deployment's
// internal identity it also reaches the room streams directly, for the raw
// baseline: members have no JetStream.
type fixture struct {
	servers  []string
	nats     []string
	cas      *x509.CertPool
	pid      int // server process, 0 for a target
	store    string
	jsSync   string
	adm      *identity.Identity
	admC     *client.Client
	rx       *identity.Identity
	rxC      *client.Client
	internal *identity.Identity // nil: no raw room baseline
}

func newFixture(ctx context.Context, servers, natsURLs []string, cas *x509.CertPool, adm, internal *identity.Identity, pid int) (*fixture, error) {
	f := &fixture{servers: servers, nats: natsURLs, cas: cas, pid: pid, adm: adm, internal: internal}
	var err error
	if f.admC, err = client.Dial(ctx, f.clientConfig(adm)); err != nil {
		return nil, fmt.Errorf("dial as the admin: %w", err)
	}
	h, err := Health(ctx, f.httpClient(), servers[0])
	if err != nil {
		f.close()
		return nil, err
	}
	f.store, f.jsSync = h.Posture.Store, h.Posture.JSSync
	if f.rx, err = identity.Generate(); err != nil {
		f.close()
		return nil, err
	}
	if _, err := f.admC.AddUser(ctx, "bench-rx-"+randHex(4), f.rx.SignPub().String(), "member"); err != nil {
		f.close()
		return nil, fmt.Errorf("register the receiving user (the bench's identity must be an admin): %w", err)
	}
	if f.rxC, err = client.Dial(ctx, f.clientConfig(f.rx)); err != nil {
		f.close()
		return nil, fmt.Errorf("dial as the receiver: %w", err)
	}
	return f, nil
}

func (f *fixture) clientConfig(id *identity.Identity) client.Config {
	return client.Config{Identity: id, Servers: f.servers, NATS: f.nats, RootCAs: f.cas, Timeout: 30 * time.Second}
}

// httpClient is a plain HTTP client with its own connection pool.
func (f *fixture) httpClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: f.cas, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// natsConnect logs in to the data plane as the member id with plain
// nats.go, the way any NATS program would.
func (f *fixture) natsConnect(id *identity.Identity, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("unibus-bench-raw"),
		nats.Nkey(id.NKey(), id.SignNonce),
		nats.CustomInboxPrefix(subjects.InboxPrefix(id.SignPub().String())),
	}
	return f.dial(append(opts, extra...))
}

// busConnect logs in to the bus account, where the room streams are, as
// the deployment's internal identity: the raw baseline's connections.
func (f *fixture) busConnect() (*nats.Conn, error) {
	if f.internal == nil {
		return nil, errors.New("the raw baseline needs the deployment's internal identity")
	}
	return f.dial([]nats.Option{nats.Name("unibus-bench-raw"), nats.Nkey(f.internal.NKey(), f.internal.SignNonce), natsnode.BusLogin()})
}

// dial connects to the deployment's data plane with its TLS settings.
func (f *fixture) dial(opts []nats.Option) (*nats.Conn, error) {
	if f.cas != nil || strings.HasPrefix(f.nats[0], "tls://") {
		opts = append(opts, nats.Secure(&tls.Config{RootCAs: f.cas, MinVersion: tls.VersionTLS12}))
	}
	nc, err := nats.Connect(strings.Join(f.nats, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect data plane: %w", err)
	}
	return nc, nil
}

// room creates a room owned by the admin with the receiver as a member.
func (f *fixture) room(ctx context.Context, name string) (client.Room, error) {
	r, err := f.admC.CreateRoom(ctx, name)
	if err != nil {
		return r, fmt.Errorf("create room: %w", err)
	}
	if err := f.admC.AddMember(ctx, r.ID, f.rx.SignPub().String(), "member"); err != nil {
		return r, fmt.Errorf("add the receiver to the room: %w", err)
	}
	return r, nil
}

// roomStream names the stream that holds a room's messages, and the
// subjects of the room in it and of one topic: the shared stream, or the
// room's own (a room with a byte limit).
func roomStream(r client.Room, topic string) (stream, filter, subject string) {
	if r.Shared {
		return subjects.SharedStream, subjects.SharedRoom(r.ID), subjects.Shared(r.ID, topic)
	}
	return subjects.Stream(r.ID), subjects.Room(r.ID), subjects.RoomTopic(r.ID, topic)
}

func (f *fixture) close() {
	if f.admC != nil {
		f.admC.Close()
	}
	if f.rxC != nil {
		f.rxC.Close()
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
