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
// Counts alone miss a message whose bytes were damaged while its
// replica's counts still agree with the others (the engine then skips it
// silently). So each node also verifies the checksums of its own block
// files (Verifier) and reports the damaged records in its State: a
// replica with damage differs from the majority like one with a message
// missing, and is repaired the same way. See docs/DESIGN.md, "Integrity:
// check and scrub".
package scrub

import (
	"context"
	"fmt"
	"sort"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/unibus/internal/natsnode"
)

// Subjects in the control account (only the internal identity logs in
// there). Every node answers StateSubject with its View; the node named
// in a StepdownRequest steps down from leading the stream.
//
// A node that finds new damage in its own replicas publishes on
// NowSubject: every node's periodic scrub runs at once (the meta leader's
// repairs), instead of at its next interval.
const (
	StateSubject    = "_UNIBUS.SCRUB.STATE"
	StepdownSubject = "_UNIBUS.SCRUB.STEPDOWN"
	NowSubject      = "_UNIBUS.SCRUB.NOW"
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
	// Damaged counts the replica's records whose checksum fails in its
	// block files (Verifier): the engine skips them when it reads.
	Damaged uint64 `json:"damaged,omitempty"`
}

func (s State) String() string {
	d := ""
	if s.Damaged > 0 {
		d = fmt.Sprintf(" damaged=%d", s.Damaged)
	}
	return fmt.Sprintf("msgs=%d bytes=%d seq=%d..%d%s", s.Msgs, s.Bytes, s.FirstSeq, s.LastSeq, d)
}

// StreamView is one node's replica of one stream.
type StreamView struct {
	Account  string `json:"account"`
	Stream   string `json:"stream"`
	Replicas int    `json:"replicas"` // configured
	Leader   string `json:"leader"`   // as this node knows it
	State    State  `json:"state"`
	// Unverified says why the block files were not verified (State's
	// Damaged is then 0): a format the verifier does not read, say.
	Unverified string `json:"unverified,omitempty"`
	// DamagedSeqs are some of the damaged records' sequences.
	DamagedSeqs []uint64 `json:"damaged_seqs,omitempty"`
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
// is the node's own judgement (natsnode.Node.Quorum). With a Verifier, it
// also verifies the block files of each replica on disk (only what
// changed since the last view).
func LocalView(ctx context.Context, srv *server.Server, quorum bool, ver *Verifier) View {
	v := View{Server: srv.Name(), Quorum: quorum}
	kept := map[[2]string]bool{}
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
			if ver != nil {
				kept[[2]string{acc, sd.Name}] = true
				d, err := ver.Stream(ctx, acc, sd.Name)
				if err != nil {
					sv.Unverified = err.Error()
				}
				sv.State.Damaged, sv.DamagedSeqs = d.Records, d.Seqs
			}
			v.Streams = append(v.Streams, sv)
		}
	}
	if ver != nil && v.Err == "" {
		ver.Forget(kept)
	}
	sort.Slice(v.Streams, func(i, j int) bool {
		a, b := v.Streams[i], v.Streams[j]
		return a.Account < b.Account || a.Account == b.Account && a.Stream < b.Stream
	})
	return v
}
