package extnats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/internal/natsnode"
)

// Closing a revoked user's live connections on an external NATS.
//
// In config mode nats-server has no revocation list for users the callout
// admitted (account JWT revocations exist only in operator mode), and a
// user JWT's expiry is checked only when it runs out. What closes a
// connection at once is the system account's kick service,
// $SYS.REQ.SERVER.<server id>.KICK {"cid": N}: so membershipd's system
// user asks every server for the user's connections
// ($SYS.REQ.SERVER.PING.CONNZ, filtered by user and account; each server
// answers for its own) and kicks each on its server. The client
// reconnects, the callout asks the store and refuses it. Two round trips
// and the wait for the servers' answers: well under a second on a
// healthy cluster.

const (
	// pingTimeout bounds the wait for the first server's answer.
	pingTimeout = 2 * time.Second
	// pingIdle is how long after the last answer a ping waits for more.
	pingIdle = 250 * time.Millisecond
	// pingLearnIdle is pingIdle for the first ping (Dial's), which learns
	// how many servers there are: none has been seen yet.
	pingLearnIdle = time.Second
	// connzLimit is how many connections one server lists per ping.
	connzLimit = 4096
)

// sysClient asks every server of the deployment, over the system user's
// connection.
type sysClient struct {
	nc      *nats.Conn
	servers atomic.Int64 // the most servers that ever answered one ping (for the logs)
}

// serverAnswer is one server's answer to a ping.
type serverAnswer struct {
	ServerID, ServerName string
	Data                 json.RawMessage
}

// ping publishes body on subj and gathers the servers' answers: until
// pingIdle (pingLearnIdle while none was ever seen) passed without a new
// one, or pingTimeout passed without any.
func (s *sysClient) ping(ctx context.Context, subj string, body []byte) ([]serverAnswer, error) {
	inbox := s.nc.NewRespInbox()
	sub, err := s.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := s.nc.PublishRequest(subj, inbox, body); err != nil {
		return nil, err
	}
	var out []serverAnswer
	deadline := time.Now().Add(pingTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	for {
		wait := time.Until(deadline)
		if len(out) > 0 {
			// No early end when as many answered as before: a server
			// that was down then, or joined since, would be left out,
			// and a kick would miss the connections it holds.
			idle := pingIdle
			if s.servers.Load() == 0 {
				idle = pingLearnIdle
			}
			wait = min(wait, idle)
		}
		if wait <= 0 {
			break
		}
		m, err := sub.NextMsg(wait)
		if errors.Is(err, nats.ErrTimeout) {
			break
		}
		if err != nil {
			return out, err
		}
		var r struct {
			Server server.ServerInfo `json:"server"`
			Data   json.RawMessage   `json:"data"`
			Error  *server.ApiError  `json:"error"`
		}
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return out, fmt.Errorf("%s: answer does not decode: %w", subj, err)
		}
		if r.Error != nil {
			return out, fmt.Errorf("%s: server %s: %s", subj, r.Server.Name, r.Error.Description)
		}
		out = append(out, serverAnswer{ServerID: r.Server.ID, ServerName: r.Server.Name, Data: r.Data})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no server answered within %v (does membershipd's system user have the permissions of 'membershipd external-nats config'?)", subj, pingTimeout)
	}
	for {
		seen := s.servers.Load()
		if int64(len(out)) <= seen || s.servers.CompareAndSwap(seen, int64(len(out))) {
			break
		}
	}
	return out, nil
}

// kick closes the open connections in account of user (every user when
// "") on every server, but those of spare, and returns how many it
// closed.
func (s *sysClient) kick(ctx context.Context, account, user, spare string) (int, error) {
	body, err := json.Marshal(server.ConnzOptions{Account: account, User: user, Username: true, State: server.ConnOpen, Limit: connzLimit})
	if err != nil {
		return 0, err
	}
	answers, err := s.ping(ctx, connzPing, body)
	if err != nil && len(answers) == 0 {
		return 0, fmt.Errorf("kick: list connections: %w", err)
	}
	kicked := 0
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, a := range answers {
		var cz server.Connz
		if err := json.Unmarshal(a.Data, &cz); err != nil {
			errs = append(errs, fmt.Errorf("kick: connections of %s: %w", a.ServerName, err))
			continue
		}
		for _, c := range cz.Conns {
			if c == nil || (spare != "" && c.AuthorizedUser == spare) {
				continue
			}
			if user != "" && c.AuthorizedUser != user {
				continue // the filter was not applied: never close another user's
			}
			req, _ := json.Marshal(server.KickClientReq{CID: c.Cid})
			m, err := s.nc.RequestWithContext(ctx, fmt.Sprintf(kickFormat, a.ServerID), req)
			if err != nil {
				errs = append(errs, fmt.Errorf("kick cid %d on %s: %w", c.Cid, a.ServerName, err))
				continue
			}
			var r struct {
				Error *server.ApiError `json:"error"`
			}
			if json.Unmarshal(m.Data, &r) == nil && r.Error == nil {
				kicked++
			} // an error: the connection closed in the meantime
		}
	}
	return kicked, errors.Join(errs...)
}

// jsz asks one server (the first to answer) for JetStream's state.
func (s *sysClient) jsz(ctx context.Context) (*server.JSInfo, string, error) {
	m, err := s.nc.RequestWithContext(ctx, jszPing, []byte(`{}`))
	if err != nil {
		return nil, "", err
	}
	var r struct {
		Server server.ServerInfo `json:"server"`
		Data   *server.JSInfo    `json:"data"`
		Error  *server.ApiError  `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, "", err
	}
	if r.Error != nil || r.Data == nil {
		return nil, r.Server.Name, fmt.Errorf("jsz: %v", r.Error)
	}
	return r.Data, r.Server.Name, nil
}

// membersAccount is where member connections are.
const membersAccount = natsnode.MembersAccount
