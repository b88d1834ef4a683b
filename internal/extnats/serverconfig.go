package extnats

import (
	"strings"

	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/subjects"
)

// CalloutAccount is the account the callout service logs in to and the
// server sends its authorization requests in. Nothing else is in it.
const CalloutAccount = "UNIBUS_AUTH"

// CalloutQueue is the queue group every membershipd's callout service
// joins, so that each request is answered once.
const CalloutQueue = "unibus-auth-callout"

// Subjects of the system account membershipd uses (kick.go, engine.go).
const (
	connzPing  = "$SYS.REQ.SERVER.PING.CONNZ"
	jszPing    = "$SYS.REQ.SERVER.PING.JSZ"
	kickFormat = "$SYS.REQ.SERVER.%s.KICK"
	userInfo   = "$SYS.REQ.USER.INFO"
	authSubj   = "$SYS.REQ.USER.AUTH"
)

// disabledAPISubject is where the system account sends the disabled
// JetStream APIs (the same as the embedded engine's).
const disabledAPISubject = "_UNIBUS_DISABLED.JS.API"

// ServerConfig is the part of a nats-server configuration file that
// unibus needs, for the keys of one credentials file: the system account
// (with membershipd's system user, allowed only to list and close
// connections and read JetStream's state, and the mappings that disable
// stream deletion and leader step-down for every account), the callout
// account with the callout user, the three data-plane accounts exactly as
// the embedded engine declares them (natsnode.AccountsConfig), and
// authorization.auth_callout naming the issuer, the auth users and the
// xkey. The rest (listen, tls, jetstream, cluster) is the operator's; see
// deploy/external-nats.
func ServerConfig(p Public) string {
	r := strings.NewReplacer(
		"@SYSUSER@", p.SystemUser, "@CALLOUTUSER@", p.CalloutUser, "@ISSUER@", p.Issuer, "@XKEY@", p.XKey,
		"@AUTH@", CalloutAccount, "@BUS@", natsnode.BusAccount, "@CONTROL@", natsnode.ControlAccount,
		"@MEMBERS@", natsnode.MembersAccount, "@DLV@", subjects.DeliverPrefix, "@DISABLED@", disabledAPISubject,
	)
	return r.Replace(serverConfigTemplate)
}

const serverConfigTemplate = `# --- unibus: accounts and auth callout (membershipd external-nats config) ---
system_account: "$SYS"
accounts {
	"$SYS": {
		users: [ { nkey: "@SYSUSER@", permissions: {
			publish: { allow: [ "$SYS.REQ.SERVER.PING.CONNZ", "$SYS.REQ.SERVER.PING.JSZ", "$SYS.REQ.SERVER.*.KICK", "$SYS.REQ.USER.INFO" ] }
			subscribe: { allow: [ "_INBOX.>" ] }
		} } ]
		mappings: {
			"$JS.API.STREAM.DELETE.*": "@DISABLED@"
			"$JS.API.STREAM.LEADER.STEPDOWN.*": "@DISABLED@"
			"$JS.API.CONSUMER.LEADER.STEPDOWN.*.*": "@DISABLED@"
		}
	}
	@AUTH@: {
		users: [ { nkey: "@CALLOUTUSER@", permissions: {
			publish: { allow: [ "$SYS._INBOX.>", "$SYS.REQ.USER.INFO" ] }
			subscribe: { allow: [ "$SYS.REQ.USER.AUTH", "_INBOX.>" ] }
		} } ]
	}
	@BUS@: {
		jetstream: enabled
		exports: [
			{ stream: "@DLV@.>", accounts: [ @MEMBERS@ ] }
			{ service: "$JS.FC.>", accounts: [ @MEMBERS@ ] }
		]
	}
	@CONTROL@: { jetstream: enabled }
	@MEMBERS@: {
		imports: [
			{ stream: { account: @BUS@, subject: "@DLV@.>" } }
			{ service: { account: @BUS@, subject: "$JS.FC.>" } }
		]
	}
}
authorization {
	auth_callout {
		issuer: "@ISSUER@"
		account: @AUTH@
		auth_users: [ "@CALLOUTUSER@", "@SYSUSER@" ]
		xkey: "@XKEY@"
	}
}
# --- end of unibus ---
`
