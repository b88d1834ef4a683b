package natsnode

import (
	"sync"

	"github.com/nats-io/nats-server/v2/server"
)

// ReasonTooManyConns denies a login of a user that holds its limit of
// connections on this node already (Options.MaxConnsPerUser).
const ReasonTooManyConns = "too_many_connections"

// connLimit bounds each user's live connections on this node. It keeps,
// per user, the ids of the connections it let in, and at each login drops
// those the server no longer has: a login costs a lookup per connection
// the user holds, not a walk of every connection.
type connLimit struct {
	max int // 0: no limit
	srv *server.Server

	mu    sync.Mutex
	conns map[string][]uint64
}

func newConnLimit(max int) *connLimit {
	return &connLimit{max: max, conns: map[string][]uint64{}}
}

// admit records connection cid of user and reports whether it fits the
// limit; a connection that does not fit is not recorded.
func (l *connLimit) admit(user string, cid uint64) bool {
	if l == nil || l.max <= 0 || l.srv == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	live := l.live(l.conns[user])
	if len(live) >= l.max {
		l.conns[user] = live
		return false
	}
	l.conns[user] = append(live, cid)
	// Users who never log in again keep their closed ids: drop them all
	// now and then, when the table outgrows the server's connections.
	if len(l.conns) > 2*l.srv.NumClients()+1024 {
		for u, ids := range l.conns {
			if ids = l.live(ids); len(ids) == 0 {
				delete(l.conns, u)
			} else {
				l.conns[u] = ids
			}
		}
	}
	return true
}

// live returns the ids in ids whose connections the server still has.
func (l *connLimit) live(ids []uint64) []uint64 {
	out := ids[:0]
	for _, id := range ids {
		if l.srv.GetClient(id) != nil {
			out = append(out, id)
		}
	}
	return out
}
