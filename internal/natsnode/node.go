// Package natsnode runs unibus's embedded NATS server: nats-server with
// JetStream in three accounts (accounts.go), the nkey authenticator that
// asks the control plane about each login, and the per-user ACL that
// confines a member to its own subjects. It also closes the connections
// of users who lose access.
//
// It is not a NATS client library and holds no state of its own: who may
// log in comes from the Authorizer on every login. What flows in the data
// plane (the relay, the consumers made for members, the room streams) is
// internal/dataplane's.
package natsnode

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// MaxSubsPerConn bounds the subscriptions of one data-plane connection.
const MaxSubsPerConn = 4096

// readyTimeout bounds how long Start waits for the listener and JetStream
// (a variable so that tests of failed starts need not wait for it).
var readyTimeout = time.Minute

// Node is a running embedded nats-server.
type Node struct {
	srv  *server.Server
	opts Options
	log  *slog.Logger
}

// Start validates o, starts the server and returns once it accepts
// connections and JetStream is enabled; otherwise it shuts the server down
// and returns an error.
func Start(ctx context.Context, o Options) (*Node, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("nats node options: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	so := &server.Options{}
	if err := so.ProcessConfigString(AccountsConfig); err != nil {
		return nil, fmt.Errorf("nats node accounts: %w", err)
	}
	so.ServerName = o.ServerName
	so.Host, so.Port = o.Host, o.Port
	if so.Host == "" {
		so.Host = "0.0.0.0"
	}
	so.JetStream = true
	so.StoreDir = o.StoreDir
	so.SyncAlways = o.SyncAlways || o.SyncInterval == 0
	if !so.SyncAlways {
		so.SyncInterval = o.SyncInterval
	}
	so.AlwaysEnableNonce = true
	so.NoSigs = true
	// nats-server keeps the last 10,000 closed connections for its
	// monitoring endpoint, which membershipd does not expose: about 5.6 MiB
	// under steady logins for nothing (measured by the soak).
	so.MaxClosedClients = 64
	so.MaxPayload = o.MaxPayload
	// A connection's subscriptions cost server memory (about 1 KiB each:
	// 300,000 SUBs on one's own inbox took 300 MB): an SDK connection uses
	// one per listener and a few more, so MaxSubsPerConn cuts a flood
	// without touching real use. The server closes a connection that
	// exceeds it.
	so.MaxSubs = MaxSubsPerConn
	if o.TLS != nil {
		so.TLSConfig = o.TLS.Clone()
		so.TLS = true
		so.TLSTimeout = 2
	}
	if c := o.Cluster; c != nil {
		so.Cluster.Name = c.Name
		so.Cluster.Host, so.Cluster.Port = c.Host, c.Port
		so.Cluster.Username, so.Cluster.Password = c.User, c.Pass
		so.Cluster.NoAdvertise = true // cold-start fix: gossip no addresses (docs/DESIGN.md)
		so.Cluster.PoolSize = -1      // cold-start fix: one route per peer
		so.Cluster.PingInterval, so.Cluster.MaxPingsOut = routePing, routePingsOut
		if c.TLS != nil {
			so.Cluster.TLSConfig = c.TLS.Clone()
			so.Cluster.TLSTimeout = 2
		}
		for _, r := range c.Routes {
			u := *r
			u.User = url.UserPassword(c.User, c.Pass)
			so.Routes = append(so.Routes, &u)
		}
	}
	auth := &authenticator{
		enforce:  o.busAuth() == BusAuthEnforce,
		internal: o.InternalNKey,
		authz:    o.Authorizer,
		onAuth:   o.OnAuth,
		log:      log.With("component", "natsnode"),
		throttle: newLoginThrottle(nil),
		conns:    newConnLimit(o.MaxConnsPerUser),
	}
	so.CustomClientAuthentication = auth
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("nats node: %w", err)
	}
	auth.conns.srv = srv
	if auth.accts, err = lookupAccounts(srv); err != nil {
		return nil, fmt.Errorf("nats node: %w", err)
	}
	srv.SetLoggerV2(slogAdapter{log}, log.Enabled(ctx, slog.LevelDebug), false, false)
	started := make(chan struct{})
	go func() { defer close(started); srv.Start() }()
	// stop shuts a server that failed to start down, and waits for its
	// Start to have returned too: it may still be setting JetStream up in
	// the store directory (which the caller may remove next).
	stop := func() {
		srv.Shutdown()
		srv.WaitForShutdown()
		<-started
	}

	wait := readyTimeout
	ready := make(chan bool, 1)
	go func() { ready <- srv.ReadyForConnections(wait) && srv.JetStreamEnabled() }()
	select {
	case ok := <-ready:
		if !ok {
			stop()
			return nil, fmt.Errorf("nats node did not become ready with JetStream within %v; see the nats-server log (port in use? store directory not writable?)", wait)
		}
	case <-ctx.Done():
		stop()
		return nil, fmt.Errorf("nats node start: %w", ctx.Err())
	}
	return &Node{srv: srv, opts: o, log: log}, nil
}

// MetaLeader returns the JetStream meta-group leader's name ("" while
// there is none: a cold cluster without quorum) and how many peers the
// meta group has. A single node is its own leader.
func (n *Node) MetaLeader() (leader string, peers int) {
	jsz, err := n.srv.Jsz(&server.JSzOptions{})
	if err != nil || jsz == nil {
		return "", 0
	}
	if jsz.Meta == nil {
		if n.srv.JetStreamEnabled() && n.opts.Cluster == nil {
			return n.opts.ServerName, 1
		}
		return "", 0
	}
	return jsz.Meta.Leader, jsz.Meta.Size
}

// quorumActive is how recently a meta-group peer must have been heard from
// to count towards a quorum in Quorum.
const quorumActive = 3 * time.Second

// Quorum reports whether this node can vouch that the JetStream meta group
// has a quorum now. A single node always has. In a cluster, a leader that
// has lost its followers goes on believing it leads for a few seconds (and
// its streams go on answering reads from local state) until it notices; so
// a leader counts itself plus the peers heard from in the last
// quorumActive, and a follower needs a known leader. Callers in the auth
// path deny when it is false (fail closed).
func (n *Node) Quorum() bool {
	if n.opts.Cluster == nil {
		return n.srv.JetStreamEnabled()
	}
	jsz, err := n.srv.Jsz(&server.JSzOptions{})
	if err != nil || jsz == nil || jsz.Meta == nil || jsz.Meta.Leader == "" || jsz.Meta.Size == 0 {
		return false
	}
	if n.Isolated(jsz.Meta.Size) {
		return false
	}
	if jsz.Meta.Leader != n.opts.ServerName {
		// A follower trusts a known leader. One cut off from it keeps its
		// name until its election timeout (4–9 s), then has none. (Also
		// asking that the leader was heard from in the last few seconds
		// would notice sooner, but refuses logins whenever heartbeats are
		// late on a loaded machine: not worth 2–4 s of the minority fence.)
		return true
	}
	alive := 1
	for _, p := range jsz.Meta.Replicas {
		if p != nil && !p.Offline && p.Active < quorumActive {
			alive++
		}
	}
	return alive >= jsz.Meta.Size/2+1
}

// Route liveness: a route whose peer has not answered MaxPingsOut pings
// sent every routePing is closed. nats-server's defaults (two minutes,
// two pings) keep a route to a peer behind a pulled cable for minutes;
// these notice it in 3–4 s. A busy peer still answers a ping within a
// second: its read loop answers pings before it processes anything else.
const (
	routePing     = time.Second
	routePingsOut = 3
)

// Isolated reports whether this node, in a cluster whose meta group has
// size members, holds routes to too few peers to be part of a quorum:
// then it is cut off (a partition, or every peer down), not watching an
// election, and nothing it knows may be trusted for long. With routes to
// enough peers it is not isolated, whatever the meta group says.
func (n *Node) Isolated(size int) bool {
	if n.opts.Cluster == nil || size <= 1 {
		return false
	}
	rz, err := n.srv.Routez(&server.RoutezOptions{})
	if err != nil || rz == nil {
		return true
	}
	peers := map[string]bool{}
	for _, r := range rz.Routes {
		if r != nil && r.RemoteName != "" {
			peers[r.RemoteName] = true
		}
	}
	return len(peers)+1 < size/2+1
}

// RouteURL is the route listener's address, in cluster mode.
func (n *Node) RouteURL() string {
	if n.opts.Cluster == nil {
		return ""
	}
	if a := n.srv.ClusterAddr(); a != nil {
		return "nats://" + net.JoinHostPort(n.opts.Cluster.Host, strconv.Itoa(a.Port))
	}
	return ""
}

// Server returns the embedded server.
func (n *Node) Server() *server.Server { return n.srv }

// ClientURL is the client listener's URL: tls:// with TLS, else nats://.
func (n *Node) ClientURL() string {
	addr, ok := n.srv.Addr().(*net.TCPAddr)
	if !ok {
		return n.srv.ClientURL()
	}
	host := n.opts.Host
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "nats"
	if n.opts.TLS != nil {
		scheme = "tls"
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

// Connect opens an in-process connection authenticated as the nkey user
// pub, signing the server's nonce with sign. It never crosses the network,
// so TLS is not involved. The internal identity lands in ControlAccount
// (KV buckets, object store); any other user in BusAccount with its ACL.
func (n *Node) Connect(pub string, sign func([]byte) ([]byte, error), opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.InProcessServer(n.srv), nats.Nkey(pub, sign)}, opts...)
	nc, err := nats.Connect("", all...)
	if err != nil {
		return nil, fmt.Errorf("in-process connect: %w", err)
	}
	return nc, nil
}

// ConnectBus is Connect for the internal identity into BusAccount, where
// the room streams and the members' consumers live.
func (n *Node) ConnectBus(pub string, sign func([]byte) ([]byte, error), opts ...nats.Option) (*nats.Conn, error) {
	return n.Connect(pub, sign, append(opts, BusLogin())...)
}

// ConnectMembers is Connect for the internal identity into MembersAccount,
// where the relay reads the members' ingress.
func (n *Node) ConnectMembers(pub string, sign func([]byte) ([]byte, error), opts ...nats.Option) (*nats.Conn, error) {
	return n.Connect(pub, sign, append(opts, MembersLogin())...)
}

// BusLogin is the connect option that asks for BusAccount; only the
// internal identity's login honours it. Use it where the internal identity
// connects over the network to manage room streams.
func BusLogin() nats.Option { return nats.UserInfo(BusAccount, "") }

// MembersLogin is the connect option that asks for MembersAccount; only
// the internal identity's login honours it.
func MembersLogin() nats.Option { return nats.UserInfo(MembersAccount, "") }

// Kick closes every live client connection of the user nkey on this node
// and returns how many it closed. nats.go clients reconnect and are
// authenticated again: a revoked user is then denied.
func (n *Node) Kick(nkey string) (int, error) {
	kicked, err := n.disconnect(&server.ConnzOptions{User: nkey, Username: true}, "")
	if kicked > 0 {
		n.log.Info("kicked data-plane connections", "nkey", nkey, "count", kicked)
	}
	return kicked, err
}

// KickMembers closes every member's live connection on this node (all of
// the members account but membershipd's own) and returns how many it
// closed.
func (n *Node) KickMembers() (int, error) {
	return n.disconnect(&server.ConnzOptions{Account: MembersAccount, Username: true}, n.opts.InternalNKey)
}

// disconnect closes the open client connections o selects, but those of
// the user spare.
func (n *Node) disconnect(o *server.ConnzOptions, spare string) (int, error) {
	var cids []uint64
	for offset := 0; ; {
		o.Offset, o.Limit, o.State = offset, 1024, server.ConnOpen
		cz, err := n.srv.Connz(o)
		if err != nil {
			return 0, fmt.Errorf("kick: list connections: %w", err)
		}
		for _, c := range cz.Conns {
			if spare == "" || c.AuthorizedUser != spare {
				cids = append(cids, c.Cid)
			}
		}
		offset += len(cz.Conns)
		if len(cz.Conns) == 0 || offset >= cz.Total {
			break
		}
	}
	kicked := 0
	for _, cid := range cids {
		// An error means the connection closed in the meantime.
		if n.srv.DisconnectClientByID(cid) == nil {
			kicked++
		}
	}
	return kicked, nil
}

// Shutdown stops the server and waits until it has stopped.
func (n *Node) Shutdown() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}
