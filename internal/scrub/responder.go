package scrub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// StepdownRequest asks Server to stop leading Account's Stream.
type StepdownRequest struct {
	Server  string `json:"server"`
	Account string `json:"account"`
	Stream  string `json:"stream"`
}

// StepdownReply is the named server's answer.
type StepdownReply struct {
	Server string `json:"server"`
	Done   bool   `json:"done"` // it led the stream and stepped down
	Err    string `json:"err,omitempty"`
}

// Responder answers StateSubject and StepdownSubject for one node.
type Responder struct {
	subs []*nats.Subscription

	nc  *nats.Conn
	srv *server.Server
	ver *Verifier
	log *slog.Logger

	mu      sync.Mutex           // one view at a time
	damaged map[[2]string]uint64 // last damage logged, by account and stream
}

// Serve answers, on nc (an internal connection to the control account of
// srv's node), every StateSubject request with srv's LocalView and every
// StepdownRequest that names srv. The stream leader step-down API is
// disabled for every account (natsnode's accounts): this in-process call
// is the only way to move a stream's leadership, and only the internal
// identity can ask for it.
//
// With a Verifier, each answer also verifies the block files of the
// node's replicas (see View), and a node that finds damage in a replica
// it leads steps down from leading that stream at once: it would serve
// the damaged records as missing until the repair rebuilds its copy.
func Serve(nc *nats.Conn, srv *server.Server, quorum func() bool, ver *Verifier, log *slog.Logger) (*Responder, error) {
	r := &Responder{nc: nc, srv: srv, ver: ver, log: log, damaged: map[[2]string]uint64{}}
	state, err := nc.Subscribe(StateSubject, func(m *nats.Msg) {
		b, err := json.Marshal(r.View(context.Background(), quorum()))
		if err == nil {
			_ = m.Respond(b)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("scrub: subscribe %s: %w", StateSubject, err)
	}
	r.subs = append(r.subs, state)
	step, err := nc.Subscribe(StepdownSubject, func(m *nats.Msg) {
		var req StepdownRequest
		if json.Unmarshal(m.Data, &req) != nil || req.Server != srv.Name() {
			return
		}
		reply := StepdownReply{Server: srv.Name()}
		if srv.JetStreamIsStreamLeader(req.Account, req.Stream) {
			if err := srv.JetStreamStepdownStream(req.Account, req.Stream); err != nil {
				reply.Err = err.Error()
			} else {
				reply.Done = true
				log.Warn("scrub: stepped down from leading a divergent replica", "account", req.Account, "stream", req.Stream)
			}
		}
		b, _ := json.Marshal(reply)
		_ = m.Respond(b)
	})
	if err != nil {
		state.Unsubscribe()
		return nil, fmt.Errorf("scrub: subscribe %s: %w", StepdownSubject, err)
	}
	r.subs = append(r.subs, step)
	return r, nil
}

// View is the node's LocalView. Damage found in a replica is logged when
// it changes, and a damaged replica this node leads steps down.
func (r *Responder) View(ctx context.Context, quorum bool) View {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := LocalView(ctx, r.srv, quorum, r.ver)
	more := false
	for _, s := range v.Streams {
		k := [2]string{s.Account, s.Stream}
		if s.State.Damaged != r.damaged[k] {
			more = more || s.State.Damaged > r.damaged[k]
			if s.State.Damaged > 0 {
				r.log.Error("scrub: records of this node's replica fail their checksum; the replica is repaired from the majority",
					"account", s.Account, "stream", s.Stream, "damaged", s.State.Damaged, "seqs", s.DamagedSeqs)
			} else {
				r.log.Info("scrub: this node's replica verifies again", "account", s.Account, "stream", s.Stream)
			}
			r.damaged[k] = s.State.Damaged
		}
		if s.State.Damaged > 0 && s.Leader == r.srv.Name() && r.srv.JetStreamIsStreamLeader(s.Account, s.Stream) {
			if err := r.srv.JetStreamStepdownStream(s.Account, s.Stream); err != nil {
				r.log.Error("scrub: cannot step down from leading a damaged replica", "account", s.Account, "stream", s.Stream, "err", err)
			} else {
				r.log.Warn("scrub: stepped down from leading a damaged replica", "account", s.Account, "stream", s.Stream)
			}
		}
	}
	if more {
		// Every node's scrub runs now; the meta leader's repairs.
		if err := r.nc.Publish(NowSubject, []byte(r.srv.Name())); err != nil {
			r.log.Warn("scrub: cannot ask for a scrub now", "err", err)
		}
	}
	return v
}

// Damaged is the number of damaged records the last view found in this
// node's replicas.
func (r *Responder) Damaged() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n uint64
	for _, d := range r.damaged {
		n += d
	}
	return n
}

// Close stops answering.
func (r *Responder) Close() {
	for _, s := range r.subs {
		_ = s.Unsubscribe()
	}
}
