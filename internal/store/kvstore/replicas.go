package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Raising replicas in place (docs/DESIGN.md): a cluster started with R1 keeps
// every stream on one node; RaiseReplicas moves it to R3 without stopping
// anything and without losing a record. JetStream does the copying: an
// UpdateStream with more replicas adds followers that catch up from the
// leader; RaiseReplicas only decides what to raise, refuses what would be
// unsafe, and waits until every new follower is current.

// Sentinel errors of RaiseReplicas; each message says what to do next.
var (
	// ErrWouldLower is returned, before anything is changed, when a stream
	// already has more replicas than asked for. Lowering is never done here.
	ErrWouldLower = errors.New("refusing to lower replicas: this command only raises them")
	// ErrTooFewPeers is returned, before anything is changed, when fewer
	// JetStream servers answer than the replicas asked for.
	ErrTooFewPeers = errors.New("not enough JetStream servers are up for the replicas asked for")
	// ErrNotCurrent is returned when streams were raised but some follower
	// had not caught up within the wait; running the command again
	// (it is idempotent) waits again.
	ErrNotCurrent = errors.New("raised, but not every replica was current within the wait")
	// ErrNotKV is returned when the control account holds no unibus
	// buckets: the node is not running with --store kv.
	ErrNotKV = errors.New("no unibus KV buckets on this node: is it running with --store kv?")
	// ErrMissingStream is returned, before anything is changed, when a
	// stream a target requires is absent: a raise without it would leave
	// it to be created later with the nodes' --kv-replicas.
	ErrMissingStream = errors.New("a stream membershipd makes when it starts is missing")
)

// RaiseTarget is one JetStream account whose streams are raised.
type RaiseTarget struct {
	// Account names the account in reports ("control", "bus").
	Account string
	// JS is a JetStream context logged in to that account.
	JS jetstream.JetStream
	// Required are streams the account must hold (the bus account's
	// shared room stream): RaiseReplicas refuses with ErrMissingStream
	// when one is absent, so that none is ever left out of a raise.
	Required []string
}

// RaiseOptions configure RaiseReplicas.
type RaiseOptions struct {
	// Replicas is the target replica count (1–5).
	Replicas int
	// Wait bounds how long to wait for every replica to be current;
	// default 5 minutes.
	Wait time.Duration
	// PeerWait is how long to collect the answers of live servers;
	// default 2 s.
	PeerWait time.Duration
	// Report, if set, receives each stream's replication once it is
	// current (or, for those that never are, at the deadline).
	Report func(Replication)
}

// Replication is a stream's replication as its leader reports it.
type Replication struct {
	Account   string
	Stream    string
	Was       int // replicas before RaiseReplicas
	Replicas  int // configured replicas now
	Leader    string
	Followers int // followers the leader lists
	Current   int // of which are caught up
	Msgs      uint64
	// Reconfiguring is the engine's status while it is still moving to
	// the configured replicas ("" when it is done).
	Reconfiguring string
}

// Done reports whether every configured replica is in place and current.
func (r Replication) Done() bool {
	return r.Reconfiguring == "" && r.Leader != "" && r.Followers == r.Replicas-1 && r.Current == r.Followers
}

// String is the line membershipd prints for the stream, in the format of
// `user add --store kv`, followed by what was done:
// "ROOM_x: leader=n1 followers_current=2/2 msgs=5 (replicated, HA) R1 -> R3".
func (r Replication) String() string {
	verdict := "single replica, NOT HA"
	switch {
	case r.Replicas >= 3 && r.Done():
		verdict = "replicated, HA"
	case r.Replicas >= 2:
		verdict = "replicated, DEGRADED: not every replica is current"
	}
	change := fmt.Sprintf("R%d -> R%d", r.Was, r.Replicas)
	if r.Was == r.Replicas {
		change = fmt.Sprintf("already R%d", r.Replicas)
	}
	line := fmt.Sprintf("%s: leader=%s followers_current=%d/%d msgs=%d (%s) %s", r.Stream, r.Leader, r.Current, r.Followers, r.Msgs, verdict, change)
	if r.Reconfiguring != "" {
		line += " [" + r.Reconfiguring + "]"
	}
	return line
}

// RaiseReplicas raises every stream of every target to o.Replicas: in the
// control account the KV buckets, the object store and anything else
// membershipd keeps there; in the bus account the shared room stream
// (UNIBUS_MSGS, the messages of every room without a stream of its own)
// and every room stream of its own. Before it changes anything it refuses
// (ErrWouldLower) if a stream has more replicas than asked for,
// (ErrTooFewPeers) if fewer JetStream servers answer than o.Replicas,
// (ErrNotKV) if the first target holds no users bucket, and
// (ErrMissingStream) if a target lacks a stream it requires. It then
// updates each stream below the target, waits until each reports every
// replica current, and returns one Replication per stream (targets in
// order, each by name). A stream already at the target is left as it is
// and reported. Running it again is harmless.
func RaiseReplicas(ctx context.Context, targets []RaiseTarget, o RaiseOptions) ([]Replication, error) {
	if o.Replicas < 1 || o.Replicas > 5 {
		return nil, fmt.Errorf("replicas must be 1 to 5, not %d", o.Replicas)
	}
	if len(targets) == 0 {
		return nil, errors.New("raise replicas: no account to raise")
	}
	if o.Wait <= 0 {
		o.Wait = 5 * time.Minute
	}
	type stream struct {
		t    RaiseTarget
		name string
		info *jetstream.StreamInfo
	}
	var all []stream
	for i, t := range targets {
		names, err := streamNames(ctx, t.JS)
		if err != nil {
			return nil, fmt.Errorf("list the %s account's streams: %w", t.Account, err)
		}
		if i == 0 && !slices.Contains(names, "KV_"+BucketUsers) {
			return nil, ErrNotKV
		}
		for _, r := range t.Required {
			if !slices.Contains(names, r) {
				return nil, fmt.Errorf("%w: the %s account has no stream %s; start every node of the cluster and wait for /healthz, then run this again; nothing was changed",
					ErrMissingStream, t.Account, r)
			}
		}
		for _, name := range names {
			all = append(all, stream{t: t, name: name})
		}
	}
	// Peers first: with a node down, the streams it holds alone cannot
	// even be described.
	if o.Replicas > 1 {
		peers, err := LivePeers(ctx, targets[0].JS.Conn(), o.PeerWait)
		if err != nil {
			return nil, err
		}
		if len(peers) < o.Replicas {
			return nil, fmt.Errorf("%w: R%d needs %d, and only %d answered (%s); start every node of the cluster and wait for /healthz, then run this again; nothing was changed",
				ErrTooFewPeers, o.Replicas, o.Replicas, len(peers), strings.Join(peers, ", "))
		}
	}
	var lower []string
	for i, s := range all {
		info, err := streamInfo(ctx, s.t.JS, s.name)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w; nothing was changed", s.name, err)
		}
		all[i].info = info
		if info.Config.Replicas > o.Replicas {
			lower = append(lower, fmt.Sprintf("%s has R%d", s.name, info.Config.Replicas))
		}
	}
	if len(lower) > 0 {
		return nil, fmt.Errorf("%w (%s, asked for R%d); nothing was changed", ErrWouldLower, strings.Join(lower, ", "), o.Replicas)
	}
	for _, s := range all {
		if s.info.Config.Replicas == o.Replicas {
			continue
		}
		cfg := s.info.Config
		cfg.Replicas = o.Replicas
		uctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
		_, err := s.t.JS.UpdateStream(uctx, cfg)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("raise %s to R%d: %w (streams raised before it keep their new replicas; run the command again)", cfg.Name, o.Replicas, err)
		}
	}
	deadline := time.Now().Add(o.Wait)
	out := make([]Replication, 0, len(all))
	var late []string
	for _, s := range all {
		r, err := waitCurrent(ctx, s.t, s.info.Config.Name, s.info.Config.Replicas, deadline)
		if err != nil {
			return out, err
		}
		if !r.Done() {
			late = append(late, r.Stream)
		}
		out = append(out, r)
		if o.Report != nil {
			o.Report(r)
		}
	}
	if len(late) > 0 {
		return out, fmt.Errorf("%w (%v): %s; run the command again to keep waiting", ErrNotCurrent, o.Wait, strings.Join(late, ", "))
	}
	return out, nil
}

// waitCurrent polls the stream's leader until every replica is current
// or the deadline passes, and returns what it last saw.
func waitCurrent(ctx context.Context, t RaiseTarget, name string, was int, deadline time.Time) (Replication, error) {
	var last Replication
	var lastErr error
	for {
		info, err := streamInfo(ctx, t.JS, name)
		if err == nil {
			last, lastErr = replicationOf(t.Account, was, info), nil
			if last.Done() {
				return last, nil
			}
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			if last.Stream == "" {
				return last, fmt.Errorf("stream %s: %w", name, lastErr)
			}
			return last, nil
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// StreamReplication reads a stream's replication from its leader.
func StreamReplication(ctx context.Context, js jetstream.JetStream, account, name string) (Replication, error) {
	info, err := streamInfo(ctx, js, name)
	if err != nil {
		return Replication{}, err
	}
	return replicationOf(account, info.Config.Replicas, info), nil
}

func replicationOf(account string, was int, info *jetstream.StreamInfo) Replication {
	r := Replication{Account: account, Stream: info.Config.Name, Was: was, Replicas: info.Config.Replicas, Msgs: info.State.Msgs}
	if c := info.Cluster; c != nil {
		r.Leader = c.Leader
		for _, p := range c.Replicas {
			r.Followers++
			if p.Current && !p.Offline {
				r.Current++
			}
		}
		if d := c.Desired; d != nil {
			r.Reconfiguring = "reconfiguring"
			if d.Status != nil && d.Status.Description != "" {
				r.Reconfiguring = d.Status.Description
			}
		}
	} else if r.Replicas == 1 {
		r.Leader = "(standalone)"
	}
	return r
}

// streamNames lists the account's streams, sorted. The meta leader
// answers: right after a node loss it may be electing one, so a timeout is
// retried for up to 30 s.
func streamNames(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		names, err := streamNamesOnce(ctx, js)
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil || time.Now().After(deadline) {
			if err != nil {
				err = fmt.Errorf("%w (is a quorum of the cluster up?)", err)
			}
			return names, err
		}
	}
}

func streamNamesOnce(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	l := js.StreamNames(ctx)
	var names []string
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

func streamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.CachedInfo(), nil
}

// LivePeers returns the names of the JetStream servers of nc's cluster
// that answer now, sorted. It asks every server for its statistics of
// nc's account (the account-scoped $SYS.REQ.ACCOUNT.PING.STATZ, which
// every account may send) and collects the answers for wait (default
// 2 s). A server that is down, or partitioned away from nc's server, does
// not answer. A node outside a cluster answers alone.
func LivePeers(ctx context.Context, nc *nats.Conn, wait time.Duration) ([]string, error) {
	if wait <= 0 {
		wait = 2 * time.Second
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("count live servers: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SYS.REQ.ACCOUNT.PING.STATZ", inbox, []byte(`{"include_unused":true}`)); err != nil {
		return nil, fmt.Errorf("count live servers: %w", err)
	}
	seen := map[string]bool{}
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m, err := sub.NextMsg(min(left, 250*time.Millisecond))
		if errors.Is(err, nats.ErrTimeout) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("count live servers: %w", err)
		}
		var resp struct {
			Server struct {
				Name      string `json:"name"`
				JetStream bool   `json:"jetstream"`
			} `json:"server"`
		}
		if json.Unmarshal(m.Data, &resp) == nil && resp.Server.JetStream && resp.Server.Name != "" {
			seen[resp.Server.Name] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("count live servers: no server answered within %v: %w", wait, ErrTooFewPeers)
	}
	return names, nil
}
