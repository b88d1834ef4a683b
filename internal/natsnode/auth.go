package natsnode

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Authorizer tells the authenticator what a data-plane user may do. An
// error or an inactive Grant denies the login (fail closed).
type Authorizer interface {
	Grant(ctx context.Context, nkeyPub string) (Grant, error)
}

// AuthorizeTimeout bounds one Authorizer.Grant call; a login that takes
// longer is denied.
const AuthorizeTimeout = 5 * time.Second

// Reasons passed to Options.OnAuth.
const (
	ReasonMember        = "member"         // allowed: an active user, with its member ACL
	ReasonInternal      = "internal"       // allowed: the internal identity, full permissions
	ReasonOpen          = "open"           // allowed: bus-auth off, full permissions in the members account
	ReasonNotClient     = "not_client"     // denied: not a client connection
	ReasonBadNKey       = "bad_nkey"       // denied: missing or malformed user nkey
	ReasonNoNonce       = "no_nonce"       // denied: the server sent no nonce
	ReasonBadSignature  = "bad_signature"  // denied: signature missing, malformed or not over the nonce
	ReasonAuthorizerErr = "authorizer_err" // denied: the Authorizer failed, timed out or panicked
	ReasonInactive      = "inactive"       // denied: unknown or revoked user
	ReasonThrottled     = "throttled"      // denied: too many refused logins of this key just now
)

// authenticator is nats-server's CustomClientAuthentication. It places
// every client in an account (see accounts.go) with explicit permissions.
type authenticator struct {
	enforce  bool
	internal string
	authz    Authorizer
	onAuth   func(string, bool)
	log      *slog.Logger
	throttle *loginThrottle
	conns    *connLimit

	accts accounts // set before the server starts
}

var _ server.Authentication = (*authenticator)(nil)

// Check verifies the client's nkey signature over the server nonce and
// registers the user with its account and permissions. Any doubt denies.
func (a *authenticator) Check(c server.ClientAuthentication) bool {
	reason, allowed := a.check(c)
	if a.onAuth != nil {
		a.onAuth(reason, allowed)
	}
	if !allowed {
		a.log.Debug("data-plane login denied", "reason", reason, "cid", c.GetID(), "remote", remote(c))
	}
	return allowed
}

func (a *authenticator) check(c server.ClientAuthentication) (string, bool) {
	if c.Kind() != server.CLIENT {
		return ReasonNotClient, false
	}
	opts := c.GetOpts()
	if opts == nil {
		return ReasonBadNKey, false
	}
	if opts.Token != "" {
		return a.checkOperator(c, opts.Token)
	}
	if !a.enforce && opts.Nkey == "" {
		c.RegisterUser(&server.User{Permissions: InternalPermissions(), Account: a.accts.members})
		return ReasonOpen, true
	}
	pub, ok := userKey(opts.Nkey)
	if !ok {
		return ReasonBadNKey, false
	}
	nonce := c.GetNonce()
	if len(nonce) == 0 {
		return ReasonNoNonce, false
	}
	if !verifyNonce(pub, opts.Sig, nonce) {
		return ReasonBadSignature, false
	}
	if opts.Nkey == a.internal {
		acc := a.accts.control
		switch opts.Username {
		case BusAccount:
			acc = a.accts.bus
		case MembersAccount:
			acc = a.accts.members
		}
		c.RegisterUser(&server.User{Username: opts.Nkey, Permissions: InternalPermissions(), Account: acc})
		return ReasonInternal, true
	}
	if !a.enforce {
		c.RegisterUser(&server.User{Username: opts.Nkey, Permissions: InternalPermissions(), Account: a.accts.members})
		return ReasonOpen, true
	}
	if a.throttle.throttled(opts.Nkey) {
		return ReasonThrottled, false
	}
	g, err := a.grant(opts.Nkey)
	if err != nil {
		a.log.Warn("data-plane authorizer failed; login denied", "nkey", opts.Nkey, "err", err)
		return ReasonAuthorizerErr, false
	}
	if !g.Active {
		a.throttle.refused(opts.Nkey)
		return ReasonInactive, false
	}
	if !a.conns.admit(opts.Nkey, c.GetID()) {
		return ReasonTooManyConns, false
	}
	c.RegisterUser(&server.User{Username: opts.Nkey, Permissions: Permissions(g), Account: a.accts.members})
	return ReasonMember, true
}

// grant asks the Authorizer under a deadline; a panic is an error.
func (a *authenticator) grant(nkey string) (g Grant, err error) {
	defer func() {
		if r := recover(); r != nil {
			g, err = Grant{}, fmt.Errorf("authorizer panicked: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), AuthorizeTimeout)
	defer cancel()
	return a.authz.Grant(ctx, nkey)
}

// userKey decodes a user nkey and returns its ed25519 public key. Only the
// canonical text form is accepted: nats-server names the connection by the
// string the client sent, and Kick finds a user's connections by the
// canonical form, so a variant spelling of the same key (the base32
// decoder skips line breaks) must not log in.
func userKey(nkey string) (voi.PublicKey, bool) {
	raw, ok := UserKey(nkey)
	return voi.PublicKey(raw), ok
}

// UserKey decodes a user nkey in its one canonical text form and returns
// its 32-byte ed25519 public key; any other spelling is refused (see
// userKey). Every login path checks keys with it: the embedded
// authenticator and the external engine's auth callout.
func UserKey(nkey string) ([]byte, bool) {
	raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(nkey))
	if err != nil || len(raw) != voi.PublicKeySize {
		return nil, false
	}
	if canon, err := nkeys.Encode(nkeys.PrefixByteUser, raw); err != nil || string(canon) != nkey {
		return nil, false
	}
	return raw, true
}

// stdlibVerify is crypto/ed25519's verification rule (cofactorless, S
// canonical, A and R as given), so that a login is accepted exactly when
// nats-server's own nkey check would accept it; curve25519-voi computes it
// in about 60 % of crypto/ed25519's time (docs/BENCHMARKS.md).
var stdlibVerify = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// verifyNonce checks sig (raw URL base64 as nats.go sends it, or standard
// base64) as the ed25519 signature of nonce by the user key pub.
func verifyNonce(pub voi.PublicKey, sig string, nonce []byte) bool {
	if sig == "" {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		if raw, err = base64.StdEncoding.DecodeString(sig); err != nil {
			return false
		}
	}
	if len(pub) != voi.PublicKeySize || len(raw) != voi.SignatureSize {
		return false
	}
	return voi.VerifyWithOptions(pub, nonce, raw, stdlibVerify)
}

func remote(c server.ClientAuthentication) string {
	if a := c.RemoteAddress(); a != nil {
		return a.String()
	}
	return ""
}
