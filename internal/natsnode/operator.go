package natsnode

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// An operator login lets an operator's `nats` CLI read the server and
// JetStream reports (`nats server list`, `nats server report jetstream`)
// from the system account, and nothing else: it cannot reach the
// control-plane buckets (they are in ControlAccount), change a stream or a
// consumer, or read who is connected.
//
// The node keeps no list of operators. An operator token is vouched for by
// the node's internal identity: it names an operator id and an expiry,
// signed with the internal identity's key, which only whoever can read
// the node's internal.id can make (`membershipd operator-creds`). The
// operator presents it as the connection's auth token. nats-server drops a
// client's JWT outside its own operator mode, and the nats CLI sends one
// credential of a context (a token, or an nkey, or a user), so the token
// is a bearer credential: it is kept in a 0600 file, never on a command
// line, and it expires. Each node accepts the tokens of its own internal
// identity.

// ReasonOperator is passed to Options.OnAuth for an allowed operator login;
// a refused one is ReasonBadOperator.
const (
	ReasonOperator    = "operator"
	ReasonBadOperator = "bad_operator"
)

// operatorTokenPrefix starts an operator token, followed by the operator
// id, the expiry (Unix seconds) and the signature, separated by dots.
const operatorTokenPrefix = "unibus-operator-v1."

// operatorStatement is what the internal identity signs: it names the
// purpose, so that no other signature of that key (a login's, over a
// server nonce) is ever an operator token.
func operatorStatement(id string, expires int64) []byte {
	return []byte("unibus operator login v1\n" + id + "\n" + strconv.FormatInt(expires, 10))
}

// validOperatorID reports whether id is 8 to 64 lowercase letters and
// digits (it names the login in the server's records).
func validOperatorID(id string) bool {
	if len(id) < 8 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// OperatorToken returns the token by which the internal identity (whose
// nonce signer is sign) vouches for the operator id until expires.
func OperatorToken(sign func([]byte) ([]byte, error), id string, expires time.Time) (string, error) {
	if !validOperatorID(id) {
		return "", errors.New("operator token: the id must be 8 to 64 lowercase letters and digits")
	}
	sig, err := sign(operatorStatement(id, expires.Unix()))
	if err != nil {
		return "", fmt.Errorf("operator token: %w", err)
	}
	return operatorTokenPrefix + id + "." + strconv.FormatInt(expires.Unix(), 10) + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// parseOperatorToken returns the operator id of a token that is this
// node's internal identity vouching for it, unexpired at now.
func parseOperatorToken(internalNKey, token string, now time.Time) (string, bool) {
	rest, ok := strings.CutPrefix(token, operatorTokenPrefix)
	if !ok {
		return "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 || !validOperatorID(parts[0]) {
		return "", false
	}
	id, exp, sig := parts[0], parts[1], parts[2]
	expires, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || now.Unix() >= expires {
		return "", false
	}
	internal, ok := userKey(internalNKey)
	if !ok || !verifyNonce(internal, sig, operatorStatement(id, expires)) {
		return "", false
	}
	return id, true
}

// operatorReports are the system services an operator may ask, of every
// server at once (PING) or of one: statistics, the server's variables,
// JetStream, health, routes and the Raft groups. Not CONNZ, SUBSZ, ACCOUNTZ
// or the account requests (who is connected, and to what), and none of
// the services that act (KICK, LDM, RELOAD).
var operatorReports = []string{"STATSZ", "VARZ", "JSZ", "HEALTHZ", "ROUTEZ", "RAFTZ"}

// OperatorPermissions is the ACL of an operator login in the system
// account: requests for the reports above, and the replies to its own
// inbox.
func OperatorPermissions() *server.Permissions {
	pub := []string{"$SYS.REQ.SERVER.PING"}
	for _, r := range operatorReports {
		pub = append(pub, "$SYS.REQ.SERVER.PING."+r, "$SYS.REQ.SERVER.*."+r)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
}

// checkOperator places a login that presented an operator token in the
// system account with OperatorPermissions, when the token is valid.
func (a *authenticator) checkOperator(c server.ClientAuthentication, token string) (string, bool) {
	id, ok := parseOperatorToken(a.internal, token, time.Now())
	if !ok || a.accts.sys == nil {
		return ReasonBadOperator, false
	}
	c.RegisterUser(&server.User{Username: "operator-" + id, Permissions: OperatorPermissions(), Account: a.accts.sys})
	return ReasonOperator, true
}
