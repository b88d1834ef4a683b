// Package scrub detects a replica of a JetStream stream whose copy
// diverges from the other replicas' — a control-plane bucket, the object
// store, the shared room stream or a room's stream — and repairs it from
// the majority.
//
// JetStream's replication (Raft) keeps the replicas' logs in agreement,
// not their message files: a replica whose files were truncated or
// damaged while its node was down restarts with fewer messages, reports
// itself current, and, once it leads, serves what it lost as missing.
// Nothing in the engine notices. So every membershipd node answers, on
// StateSubject in the control account, with its own replicas' state
// (messages, bytes, first and last sequence, from its own store); Check
// gathers every node's answer, compares each stream's replicas and names
// those that differ from a state a majority of the stream's replicas
// agree on, twice, a moment apart (a replica still applying a write
// differs once). Repair fences and rebuilds such a replica (see Repair).
//
// It is not a checksum verifier: a message whose bytes were damaged but
// whose replica's counts still agree with the others is not seen here
// (the engine refuses to serve it: "message not found"). See
// docs/DESIGN.md, "Integrity: check and scrub".
package scrub

import (
	"fmt"
	"sort"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/unibus/internal/natsnode"
)

// Subjects in the control account (only the internal identity logs in
// there). Every node answers StateSubject with its View; the node named
// in a StepdownRequest steps down from leading the stream.
const (
	StateSubject    = "_UNIBUS.SCRUB.STATE"
	StepdownSubject = "_UNIBUS.SCRUB.STEPDOWN"
)

// Accounts are the accounts whose streams are scrubbed, in order.
var Accounts = []string{natsnode.ControlAccount, natsnode.BusAccount}

// State is what a replica holds of a stream, from its own store. Two
// replicas in agreement hold the same State.
type State struct {
	Msgs     uint64 `json:"msgs"`
	Bytes    uint64 `json:"bytes"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
}

func (s State) String() string {
	return fmt.Sprintf("msgs=%d bytes=%d seq=%d..%d", s.Msgs, s.Bytes, s.FirstSeq, s.LastSeq)
}

// StreamView is one node's replica of one stream.
type StreamView struct {
	Account  string `json:"account"`
	Stream   string `json:"stream"`
	Replicas int    `json:"replicas"` // configured
	Leader   string `json:"leader"`   // as this node knows it
	State    State  `json:"state"`
}

// View is one node's answer: its name, whether it sees a JetStream quorum,
// the meta group's size, and its replica of every stream it holds.
type View struct {
	Server   string       `json:"server"`
	Quorum   bool         `json:"quorum"`
	MetaSize int          `json:"meta_size"`
	Streams  []StreamView `json:"streams"`
	Err      string       `json:"err,omitempty"`
}

// LocalView reads srv's own replicas of every stream of Accounts. quorum
// is the node's own judgement (natsnode.Node.Quorum).
func LocalView(srv *server.Server, quorum bool) View {
	v := View{Server: srv.Name(), Quorum: quorum}
	if jsz, err := srv.Jsz(&server.JSzOptions{}); err == nil && jsz != nil && jsz.Meta != nil {
		v.MetaSize = jsz.Meta.Size
	}
	for _, acc := range Accounts {
		ad, err := srv.JszAccount(&server.JSzOptions{Account: acc, Streams: true, Config: true})
		if err != nil {
			v.Err = fmt.Sprintf("%s: %v", acc, err)
			continue
		}
		for _, sd := range ad.Streams {
			if sd.Config != nil && sd.Config.Storage == server.MemoryStorage {
				// Not on disk: a replica restarts empty and copies the
				// stream from its leader; nothing to scrub (and the nonces
				// bucket, written by every signed request and expiring,
				// would only ever be caught mid-write).
				continue
			}
			sv := StreamView{Account: acc, Stream: sd.Name, State: State{
				Msgs: sd.State.Msgs, Bytes: sd.State.Bytes, FirstSeq: sd.State.FirstSeq, LastSeq: sd.State.LastSeq,
			}}
			if sd.Config != nil {
				sv.Replicas = sd.Config.Replicas
			}
			if sd.Cluster != nil {
				sv.Leader = sd.Cluster.Leader
			}
			v.Streams = append(v.Streams, sv)
		}
	}
	sort.Slice(v.Streams, func(i, j int) bool {
		a, b := v.Streams[i], v.Streams[j]
		return a.Account < b.Account || a.Account == b.Account && a.Stream < b.Stream
	})
	return v
}
