package extnats

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/internal/natsnode"
)

// UserLifetime is how long a user JWT the callout issues is valid. The
// server closes a connection whose JWT expired; the client logs in again
// and is asked about afresh. Revocations close connections at once
// (kick.go); the lifetime bounds how long a connection outlives a
// revocation whose kick was lost (every membershipd down at that moment).
const UserLifetime = 15 * time.Minute

// authorizeTimeout bounds the store lookup of one login: nats-server waits
// for the callout's answer only for its auth timeout (2 s by default).
const authorizeTimeout = 1500 * time.Millisecond

// maxInFlight bounds the authorization requests answered at once.
const maxInFlight = 64

// Reasons passed to CalloutOptions.OnAuth, beyond natsnode's.
const (
	ReasonProbe    = "probe"     // allowed: the start check's own login, no permissions
	ReasonBadReq   = "bad_req"   // not answered: the request did not decode or verify
	ReasonNotNATS  = "not_nats"  // denied: a leaf node, websocket or MQTT connection
	ReasonWithAuth = "with_auth" // denied: a token, password or JWT besides the nkey
)

// CalloutOptions configure the callout service.
type CalloutOptions struct {
	Keys       *Keys
	Authorizer natsnode.Authorizer // who may log in as a member
	Lifetime   time.Duration       // of the user JWTs; default UserLifetime
	Logger     *slog.Logger
	OnAuth     func(reason string, allowed bool)
}

// Callout answers nats-server's authorization requests
// ($SYS.REQ.USER.AUTH in CalloutAccount): it verifies the client's nkey
// signature over the server's nonce (nats-server checks nothing before it
// asks: without this anyone could log in as any member by naming its
// key), then admits
//
//   - the internal identity into the account its user name asks for
//     (UNIBUS_BUS, UNIBUS_MEMBERS, else UNIBUS_CONTROL) with full
//     permissions, as the embedded engine does;
//   - an active user into MembersAccount with natsnode.Permissions;
//   - the check's probe (Keys.Probe, whichever membershipd's check logs
//     it in) into MembersAccount with no permissions;
//
// and refuses everyone else. Each admission is a user JWT signed by the
// issuer, for the server's one-time user key, valid for the Lifetime.
type Callout struct {
	o        CalloutOptions
	internal string
	probe    string // Keys.Probe's public key
	sub      *nats.Subscription
	sem      chan struct{}
	wg       sync.WaitGroup
	probed   atomic.Bool // this callout was asked about the probe
}

// StartCallout subscribes nc (logged in as the callout user) to the
// authorization requests, in CalloutQueue.
func StartCallout(nc *nats.Conn, o CalloutOptions) (*Callout, error) {
	if o.Keys == nil || o.Authorizer == nil {
		return nil, errors.New("callout: keys and authorizer are required")
	}
	if o.Lifetime <= 0 {
		o.Lifetime = UserLifetime
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	probe, err := o.Keys.Probe.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("callout: probe key: %w", err)
	}
	c := &Callout{o: o, internal: o.Keys.Internal.NKey(), probe: probe, sem: make(chan struct{}, maxInFlight)}
	sub, err := nc.QueueSubscribe(authSubj, CalloutQueue, c.dispatch)
	if err != nil {
		return nil, fmt.Errorf("callout: subscribe %s: %w", authSubj, err)
	}
	sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("callout: subscribe %s: %w", authSubj, err)
	}
	c.sub = sub
	return c, nil
}

// Close stops answering and waits for the answers under way.
func (c *Callout) Close() {
	c.sub.Unsubscribe()
	c.wg.Wait()
}

// dispatch answers m in a goroutine of its own (a store lookup must not
// hold up the other logins), at most maxInFlight at once.
func (c *Callout) dispatch(m *nats.Msg) {
	c.sem <- struct{}{}
	c.wg.Go(func() {
		defer func() { <-c.sem }()
		c.answer(m)
	})
}

// answer decodes the request, decides and responds; a request that does
// not decode gets no answer (the server times the login out).
func (c *Callout) answer(m *nats.Msg) {
	data := m.Data
	serverXKey := m.Header.Get(server.AuthRequestXKeyHeader)
	if serverXKey != "" {
		var err error
		if data, err = c.o.Keys.XKey.Open(m.Data, serverXKey); err != nil {
			c.o.Logger.Error("auth callout: cannot decrypt the server's request: auth_callout.xkey must be this deployment's (membershipd external-nats config)", "err", err)
			c.report(ReasonBadReq, false)
			return
		}
	}
	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		c.o.Logger.Warn("auth callout: request does not decode", "err", err)
		c.report(ReasonBadReq, false)
		return
	}
	account, perms, reason := c.decide(&req.AuthorizationRequest)
	allowed := account != ""
	c.report(reason, allowed)
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	if allowed {
		uc := jwt.NewUserClaims(req.UserNkey)
		uc.Audience = account
		uc.Expires = time.Now().Add(c.o.Lifetime).Unix()
		uc.Permissions = perms
		uc.Limits.Subs = natsnode.MaxSubsPerConn
		uc.AllowedConnectionTypes.Add(jwt.ConnectionTypeStandard)
		if resp.Jwt, err = uc.Encode(c.o.Keys.Issuer); err != nil {
			c.o.Logger.Error("auth callout: encode user", "err", err)
			return
		}
	} else {
		resp.Error = "not authorized"
		c.o.Logger.Debug("data-plane login denied", "reason", reason, "nkey", req.ConnectOptions.Nkey, "remote", req.ClientInformation.Host)
	}
	tok, err := resp.Encode(c.o.Keys.Issuer)
	if err != nil {
		c.o.Logger.Error("auth callout: encode response", "err", err)
		return
	}
	out := []byte(tok)
	if serverXKey != "" {
		if out, err = c.o.Keys.XKey.Seal(out, serverXKey); err != nil {
			c.o.Logger.Error("auth callout: encrypt response", "err", err)
			return
		}
	}
	if err := m.Respond(out); err != nil {
		c.o.Logger.Warn("auth callout: respond", "err", err)
	}
}

func (c *Callout) report(reason string, allowed bool) {
	if c.o.OnAuth != nil {
		c.o.OnAuth(reason, allowed)
	}
}

// decide returns the account to place the client in with its
// permissions, or "" to refuse, and the reason.
func (c *Callout) decide(r *jwt.AuthorizationRequest) (string, jwt.Permissions, string) {
	ci, co := r.ClientInformation, r.ConnectOptions
	if ci.Kind != "Client" || ci.Type != "nats" {
		return "", jwt.Permissions{}, ReasonNotNATS
	}
	if co.JWT != "" || co.Token != "" || co.Password != "" {
		return "", jwt.Permissions{}, ReasonWithAuth
	}
	pub, ok := userKey(co.Nkey)
	if !ok {
		return "", jwt.Permissions{}, natsnode.ReasonBadNKey
	}
	if ci.Nonce == "" {
		return "", jwt.Permissions{}, natsnode.ReasonNoNonce
	}
	if !verifyNonce(pub, co.SignedNonce, []byte(ci.Nonce)) {
		return "", jwt.Permissions{}, natsnode.ReasonBadSignature
	}
	if co.Nkey == c.internal {
		acc := natsnode.ControlAccount
		switch co.Username {
		case natsnode.BusAccount, natsnode.MembersAccount:
			acc = co.Username
		}
		return acc, jwtPermissions(natsnode.InternalPermissions()), natsnode.ReasonInternal
	}
	if co.Nkey == c.probe {
		c.probed.Store(true)
		return natsnode.MembersAccount, jwtPermissions(natsnode.Permissions(natsnode.Grant{})), ReasonProbe
	}
	g, err := c.grant(co.Nkey)
	if err != nil {
		c.o.Logger.Warn("data-plane authorizer failed; login denied", "nkey", co.Nkey, "err", err)
		return "", jwt.Permissions{}, natsnode.ReasonAuthorizerErr
	}
	if !g.Active {
		return "", jwt.Permissions{}, natsnode.ReasonInactive
	}
	return natsnode.MembersAccount, jwtPermissions(natsnode.Permissions(g)), natsnode.ReasonMember
}

// grant asks the Authorizer under a deadline; a panic is an error.
func (c *Callout) grant(nkey string) (g natsnode.Grant, err error) {
	defer func() {
		if r := recover(); r != nil {
			g, err = natsnode.Grant{}, fmt.Errorf("authorizer panicked: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), authorizeTimeout)
	defer cancel()
	return c.o.Authorizer.Grant(ctx, nkey)
}

// jwtPermissions converts the embedded engine's permissions (never nil,
// never an empty allow list: natsnode.Permissions denies with a subject
// nobody uses) into a user JWT's.
func jwtPermissions(p *server.Permissions) jwt.Permissions {
	var out jwt.Permissions
	if p.Publish != nil {
		out.Pub.Allow = append(jwt.StringList{}, p.Publish.Allow...)
		out.Pub.Deny = append(jwt.StringList{}, p.Publish.Deny...)
	}
	if p.Subscribe != nil {
		out.Sub.Allow = append(jwt.StringList{}, p.Subscribe.Allow...)
		out.Sub.Deny = append(jwt.StringList{}, p.Subscribe.Deny...)
	}
	return out
}

// userKey is natsnode.UserKey as an ed25519 key: the embedded
// authenticator's rule, so that a key has one spelling on both engines.
func userKey(nkey string) (ed25519.PublicKey, bool) {
	raw, ok := natsnode.UserKey(nkey)
	return ed25519.PublicKey(raw), ok
}

// verifyNonce checks sig (raw URL base64 as nats.go sends it, or standard
// base64) as pub's signature of nonce.
func verifyNonce(pub ed25519.PublicKey, sig string, nonce []byte) bool {
	if sig == "" {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		if raw, err = base64.StdEncoding.DecodeString(sig); err != nil {
			return false
		}
	}
	return len(raw) == ed25519.SignatureSize && ed25519.Verify(pub, nonce, raw)
}
