package scrub

import (
	"encoding/json"
	"fmt"
	"log/slog"

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
}

// Serve answers, on nc (an internal connection to the control account of
// srv's node), every StateSubject request with srv's LocalView and every
// StepdownRequest that names srv. The stream leader step-down API is
// disabled for every account (natsnode's accounts): this in-process call
// is the only way to move a stream's leadership, and only the internal
// identity can ask for it.
func Serve(nc *nats.Conn, srv *server.Server, quorum func() bool, log *slog.Logger) (*Responder, error) {
	r := &Responder{}
	state, err := nc.Subscribe(StateSubject, func(m *nats.Msg) {
		b, err := json.Marshal(LocalView(srv, quorum()))
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

// Close stops answering.
func (r *Responder) Close() {
	for _, s := range r.subs {
		_ = s.Unsubscribe()
	}
}
