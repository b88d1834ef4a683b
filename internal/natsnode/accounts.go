package natsnode

import (
	"fmt"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/unibus/subjects"
)

// The node runs three NATS accounts, so that nothing a member can make the
// server publish reaches a stream, a consumer or the control plane.
//
// JetStream and the server's other services publish to subjects a
// requester chooses without checking them against the requester's
// permissions: the reply subject of a message (a stream's publish ack goes
// there), of an API request, of a pull request, of an acknowledgement
// (the "ack of the ack"), and a push consumer's deliver subject
// (nats-io/nats-server#8274). Inside one account, such a message lands on
// any subject: in a room stream (stored there, evicting the room's
// messages under a byte limit), on a consumer's internal subjects
// (resetting it), on $JS.API.STREAM.DELETE.<s> or on $KV.<bucket>.<key>.
// So members share no account with anything that stores or acts:
//
//   - MembersAccount holds every member connection. It has no JetStream.
//     A member may publish only on its own ingress subjects
//     (unibus.in.<member>.>), which membershipd's relay reads, checks and
//     copies into the room's stream, and answer the messages delivered to
//     it (one response each): flow-control requests reach BusAccount
//     through the one service it imports, $JS.FC.>; any other response
//     (an acknowledgement, for instance) goes nowhere.
//   - BusAccount holds the room streams and every consumer; only the
//     internal identity logs in to it. Consumers deliver on
//     unibus.dlv.<member>.<token>, which MembersAccount imports, and
//     which only that member may subscribe to.
//   - ControlAccount holds the KV buckets and the object store; only the
//     internal identity logs in to it.
//   - The system account maps the stream-delete and leader-stepdown APIs
//     to a subject nothing serves, for every account: no stream on a node
//     can be deleted through the JetStream API, by anyone (nothing in
//     unibus is ever hard-deleted). Room streams also deny purges and
//     message deletes.
//
// The internal identity lands in ControlAccount by default (over TCP as
// well, e.g. the admin CLI's `user add --store kv`); Node.ConnectBus or
// BusLogin logs it in to BusAccount, Node.ConnectMembers or MembersLogin
// to MembersAccount (the relay's side).
const (
	BusAccount     = "UNIBUS_BUS"
	ControlAccount = "UNIBUS_CONTROL"
	MembersAccount = "UNIBUS_MEMBERS"
)

// disabledAPISubject is where the system account sends disabled JetStream
// API requests: nothing subscribes to it, so they time out unanswered.
const disabledAPISubject = "_UNIBUS_DISABLED.JS.API"

// AccountsConfig declares the accounts in nats-server's configuration
// syntax: account JetStream limits, imports, exports and mappings are only
// fully set up before the server starts, through its config parser. An
// operator running unibus on a NATS of its own declares the same accounts.
const AccountsConfig = `system_account: "$SYS"
accounts {
	"$SYS": { mappings: {
		"$JS.API.STREAM.DELETE.*": "` + disabledAPISubject + `"
		"$JS.API.STREAM.LEADER.STEPDOWN.*": "` + disabledAPISubject + `"
		"$JS.API.CONSUMER.LEADER.STEPDOWN.*.*": "` + disabledAPISubject + `"
	} }
	` + BusAccount + `: {
		jetstream: enabled
		exports: [
			{ stream: "` + subjects.DeliverPrefix + `.>", accounts: [` + MembersAccount + `] }
			{ service: "$JS.FC.>", accounts: [` + MembersAccount + `] }
		]
	}
	` + ControlAccount + `: { jetstream: enabled }
	` + MembersAccount + `: {
		imports: [
			{ stream: { account: ` + BusAccount + `, subject: "` + subjects.DeliverPrefix + `.>" } }
			{ service: { account: ` + BusAccount + `, subject: "$JS.FC.>" } }
		]
	}
}`

// accounts are the server's registered accounts (sys: the system
// account, for operator logins, operator.go).
type accounts struct{ bus, control, members, sys *server.Account }

// lookupAccounts returns the server's registered accounts.
func lookupAccounts(srv *server.Server) (accounts, error) {
	var a accounts
	var err error
	for name, p := range map[string]**server.Account{BusAccount: &a.bus, ControlAccount: &a.control, MembersAccount: &a.members, "$SYS": &a.sys} {
		if *p, err = srv.LookupAccount(name); err != nil {
			return accounts{}, fmt.Errorf("look up account %s: %w", name, err)
		}
	}
	return a, nil
}
