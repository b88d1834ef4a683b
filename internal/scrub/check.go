package scrub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Verdicts of a stream.
const (
	// Agree: every replica that answered holds the same state, and a
	// majority of the configured replicas answered.
	Agree = "ok"
	// Diverged: a majority of the replicas agree and the others hold
	// something else, in every round.
	Diverged = "divergent"
	// Unsettled: no majority of the configured replicas agrees (too few
	// answered, or a write was in flight in every round): nothing can be
	// judged, nothing is repaired.
	Unsettled = "unsettled"
)

// Replica is one node's replica in a StreamReport.
type Replica struct {
	Server string `json:"server"`
	State  State  `json:"state"`
}

// StreamReport is the verdict on one stream.
type StreamReport struct {
	Account  string    `json:"account"`
	Stream   string    `json:"stream"`
	Replicas int       `json:"replicas"`
	Leader   string    `json:"leader"`
	Verdict  string    `json:"verdict"`
	Agreed   *State    `json:"agreed,omitempty"` // the majority's state
	Majority []string  `json:"majority,omitempty"`
	Diverged []Replica `json:"divergent,omitempty"`
	Missing  []string  `json:"missing,omitempty"` // configured replicas that did not answer (count only when names are unknown)
	Answered int       `json:"answered"`
}

// LeaderDiverged reports whether the stream's leader holds a divergent
// replica: it serves what it lost as missing.
func (r StreamReport) LeaderDiverged() bool {
	return slices.ContainsFunc(r.Diverged, func(x Replica) bool { return x.Server == r.Leader })
}

// String is the report's line for a terminal.
func (r StreamReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: R%d leader=%s %s", r.Stream, r.Replicas, r.Leader, r.Verdict)
	if r.Agreed != nil {
		fmt.Fprintf(&b, " (%d/%d agree: %s)", len(r.Majority), r.Replicas, r.Agreed)
	} else {
		fmt.Fprintf(&b, " (%d of %d replicas answered, no majority agrees)", r.Answered, r.Replicas)
	}
	for _, d := range r.Diverged {
		role := "follower"
		if d.Server == r.Leader {
			role = "LEADER, serving it"
		}
		fmt.Fprintf(&b, "\n    %s (%s) holds %s", d.Server, role, d.State)
	}
	return b.String()
}

// Report is the verdict on every stream of the cluster.
type Report struct {
	Servers []string       `json:"servers"` // the nodes that answered
	Quorum  bool           `json:"quorum"`  // a majority of the meta group answered and sees a quorum
	Streams []StreamReport `json:"streams"`
}

// Divergent returns the reports of the divergent streams.
func (r Report) Divergent() []StreamReport {
	var d []StreamReport
	for _, s := range r.Streams {
		if s.Verdict == Diverged {
			d = append(d, s)
		}
	}
	return d
}

// DivergentReplicas counts the divergent replicas over every stream.
func (r Report) DivergentReplicas() int {
	n := 0
	for _, s := range r.Streams {
		n += len(s.Diverged)
	}
	return n
}

// Options tune Check.
type Options struct {
	// Wait bounds how long to collect the nodes' answers (default 2 s;
	// collection ends sooner once every member of the meta group answered).
	Wait time.Duration
	// Settle is the pause before the second round (default 1 s).
	Settle time.Duration
}

func (o *Options) defaults() {
	if o.Wait <= 0 {
		o.Wait = 2 * time.Second
	}
	if o.Settle <= 0 {
		o.Settle = time.Second
	}
}

// ErrNoAnswer is returned when no node answered StateSubject: no
// membershipd with a scrub responder is reachable through the connection.
var ErrNoAnswer = errors.New("no node answered the scrub's state request (is membershipd running in kv mode, and this version or newer on every node?)")

// Collect asks every node, through nc (the internal identity in the
// control account), for its View, and returns the answers sorted by
// server name.
func Collect(ctx context.Context, nc *nats.Conn, wait time.Duration) ([]View, error) {
	if wait <= 0 {
		wait = 2 * time.Second
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("scrub: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(StateSubject, inbox, nil); err != nil {
		return nil, fmt.Errorf("scrub: %w", err)
	}
	seen := map[string]View{}
	size := 0
	deadline := time.Now().Add(wait)
	for size == 0 || len(seen) < size {
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
			return nil, fmt.Errorf("scrub: %w", err)
		}
		var v View
		if json.Unmarshal(m.Data, &v) != nil || v.Server == "" {
			continue
		}
		seen[v.Server] = v
		size = max(size, v.MetaSize)
	}
	if len(seen) == 0 {
		return nil, ErrNoAnswer
	}
	views := make([]View, 0, len(seen))
	for _, v := range seen {
		views = append(views, v)
	}
	sort.Slice(views, func(i, j int) bool { return views[i].Server < views[j].Server })
	return views, nil
}

// Compare judges every stream from one round of views.
func Compare(views []View) Report {
	type key struct{ account, stream string }
	var r Report
	size, quorate := 0, 0
	byStream := map[key][]StreamView{}
	servers := map[key][]string{}
	for _, v := range views {
		r.Servers = append(r.Servers, v.Server)
		size = max(size, v.MetaSize)
		if v.Quorum {
			quorate++
		}
		for _, s := range v.Streams {
			k := key{s.Account, s.Stream}
			byStream[k] = append(byStream[k], s)
			servers[k] = append(servers[k], v.Server)
		}
	}
	r.Quorum = size > 0 && quorate >= size/2+1
	keys := make([]key, 0, len(byStream))
	for k := range byStream {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].account < keys[j].account || keys[i].account == keys[j].account && keys[i].stream < keys[j].stream
	})
	for _, k := range keys {
		r.Streams = append(r.Streams, judge(k.account, k.stream, byStream[k], servers[k]))
	}
	return r
}

// judge compares one stream's replicas. The majority is counted against
// the configured replicas, not against those that answered: two replicas
// of an R3 stream that agree are a majority, one is not, whatever the
// third did.
func judge(account, stream string, replicas []StreamView, servers []string) StreamReport {
	sr := StreamReport{Account: account, Stream: stream, Answered: len(replicas)}
	leaders := map[string]int{}
	for _, s := range replicas {
		sr.Replicas = max(sr.Replicas, s.Replicas)
		if s.Leader != "" {
			leaders[s.Leader]++
		}
	}
	for l, n := range leaders {
		if n > leaders[sr.Leader] || n == leaders[sr.Leader] && l < sr.Leader {
			sr.Leader = l
		}
	}
	if n := sr.Replicas - len(replicas); n > 0 {
		sr.Missing = append(sr.Missing, fmt.Sprintf("%d not answering", n))
	}
	held := map[State][]string{}
	for i, s := range replicas {
		held[s.State] = append(held[s.State], servers[i])
	}
	need := sr.Replicas/2 + 1
	for st, who := range held {
		if len(who) >= need {
			agreed := st
			sr.Agreed, sr.Majority = &agreed, who
		}
	}
	switch {
	case sr.Agreed == nil:
		sr.Verdict = Unsettled
	case len(sr.Majority) == len(replicas):
		sr.Verdict = Agree
	default:
		// Only a replica at the majority's last sequence can be told
		// apart from it: one behind or ahead is applying writes (a busy
		// stream's followers always lag a little, and each node answers
		// at its own instant), so it is not judged this round. One at the
		// same last sequence that holds other messages has lost some.
		sr.Verdict = Unsettled
		for i, s := range replicas {
			if s.State != *sr.Agreed && s.State.LastSeq == sr.Agreed.LastSeq {
				sr.Verdict = Diverged
				sr.Diverged = append(sr.Diverged, Replica{Server: servers[i], State: s.State})
			}
		}
	}
	sort.Strings(sr.Majority)
	return sr
}

// Check collects every node's view and compares each stream's replicas;
// it collects again after o.Settle and keeps a stream divergent only if
// the same replicas diverged in both rounds (a replica still applying a
// write is not divergent). A stream that was divergent once and agrees
// or is unsettled the second time takes its second verdict.
func Check(ctx context.Context, nc *nats.Conn, o Options) (Report, error) {
	o.defaults()
	views, err := Collect(ctx, nc, o.Wait)
	if err != nil {
		return Report{}, err
	}
	first := Compare(views)
	if len(first.Divergent()) == 0 {
		return first, nil
	}
	select {
	case <-ctx.Done():
		return Report{}, ctx.Err()
	case <-time.After(o.Settle):
	}
	views, err = Collect(ctx, nc, o.Wait)
	if err != nil {
		return Report{}, err
	}
	second := Compare(views)
	was := map[string]StreamReport{}
	for _, s := range first.Streams {
		was[s.Account+"/"+s.Stream] = s
	}
	for i, s := range second.Streams {
		if s.Verdict != Diverged {
			continue
		}
		p, ok := was[s.Account+"/"+s.Stream]
		if !ok || p.Verdict != Diverged || !sameServers(p.Diverged, s.Diverged) {
			second.Streams[i].Verdict = Unsettled
			second.Streams[i].Diverged = nil
		}
	}
	return second, nil
}

func sameServers(a, b []Replica) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Server != b[i].Server {
			return false
		}
	}
	return true
}
