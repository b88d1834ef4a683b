package natsnode

import (
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
)

// The node runs two NATS accounts, so that nothing a member can make the
// server publish reaches the control plane.
//
// JetStream publishes to subjects a member chooses without checking them
// against the member's permissions: the reply subject of a message (the
// stream's publish ack goes there), the reply subject of an API request,
// the reply subject of a pull request (which receives status messages
// such as "408 Request Timeout" with an empty body), and a push consumer's
// deliver subject (nats-io/nats-server#8274). Each lands in the member's
// own account, where an empty-bodied message to $JS.API.STREAM.DELETE.<s>
// deletes stream s and a message to $KV.<bucket>.<key> overwrites a key.
// Hence:
//
//   - BusAccount holds every member connection and the room streams.
//   - ControlAccount holds the KV buckets and the object store, and only
//     the internal identity can log in to it. Nothing published in
//     BusAccount can reach it.
//   - The system account maps the stream-delete and leader-stepdown APIs
//     to a subject nothing serves, for every account: no stream on a node
//     can be deleted through the JetStream API, by anyone (nothing in
//     unibus is ever hard-deleted), and no member can churn leaders.
//     Room streams also deny purges and message deletes (EnsureRoomStream).
//
// The internal identity lands in ControlAccount by default (over TCP as
// well, e.g. the admin CLI's `user add --store kv`); Node.ConnectBus, or
// BusLogin over TCP, logs it in to BusAccount to manage room streams.
const (
	BusAccount     = "UNIBUS_BUS"
	ControlAccount = "UNIBUS_CONTROL"
)

// disabledAPISubject is where the system account sends disabled JetStream
// API requests: nothing subscribes to it, so they time out unanswered.
const disabledAPISubject = "_UNIBUS_DISABLED.JS.API"

// accountsConfig declares the accounts in nats-server's configuration
// syntax: account JetStream limits and mappings are only fully set up
// before the server starts, through its config parser.
const accountsConfig = `system_account: "$SYS"
accounts {
	"$SYS": { mappings: {
		"$JS.API.STREAM.DELETE.*": "` + disabledAPISubject + `"
		"$JS.API.STREAM.LEADER.STEPDOWN.*": "` + disabledAPISubject + `"
		"$JS.API.CONSUMER.LEADER.STEPDOWN.*.*": "` + disabledAPISubject + `"
	} }
	` + BusAccount + `: { jetstream: enabled }
	` + ControlAccount + `: { jetstream: enabled }
}`

// lookupAccounts returns the server's registered accounts.
func lookupAccounts(srv *server.Server) (bus, control *server.Account, err error) {
	if bus, err = srv.LookupAccount(BusAccount); err != nil {
		return nil, nil, fmt.Errorf("look up account %s: %w", BusAccount, err)
	}
	if control, err = srv.LookupAccount(ControlAccount); err != nil {
		return nil, nil, fmt.Errorf("look up account %s: %w", ControlAccount, err)
	}
	return bus, control, nil
}
