package extnats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/store/jsretry"
	"github.com/unibus/unibus/subjects"
)

// The checks at start. membershipd configures nothing on an external
// NATS, so before it serves it proves, with real logins and messages,
// that the server's configuration is the one unibus's security rests on,
// and refuses to start otherwise with an error naming the configuration
// needed ('membershipd external-nats config' prints all of it).
var (
	// ErrNotConfigured: a user of membershipd's is not in the server's
	// configuration, or the callout is not.
	ErrNotConfigured = errors.New("the nats-server configuration lacks unibus's accounts or auth callout")
	// ErrNoTLS: a server off loopback serves plaintext.
	ErrNoTLS = errors.New("the external NATS is not on loopback and serves no TLS")
	// ErrWrongAccount: a login lands in another account than unibus's
	// configuration places it in, or an account lacks what it needs.
	ErrWrongAccount = errors.New("the nats-server accounts are not unibus's")
)

// hint is where every check's message points.
const hint = "print the configuration unibus needs with 'membershipd external-nats config --nats-creds FILE' (deploy/external-nats)"

// loginError explains a refused login of one of membershipd's own users.
func (e *Engine) loginError(err error, who, nkey, account string) error {
	if errors.Is(err, nats.ErrNkeysNotSupported) {
		return fmt.Errorf("%w: the server at %s has no nkey users at all: declare membershipd's %s %s in accounts.%s.users and in authorization.auth_callout.auth_users; %s",
			ErrNotConfigured, redact(e.o.URL), who, nkey, account, hint)
	}
	if errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization") {
		return fmt.Errorf("%w: the server refused membershipd's %s %s: declare it in accounts.%s.users and in authorization.auth_callout.auth_users; %s",
			ErrNotConfigured, who, nkey, account, hint)
	}
	return fmt.Errorf("connect to external NATS %s as the %s: %w", redact(e.o.URL), who, err)
}

// checkTLS refuses a plaintext connection to a server off loopback.
func (e *Engine) checkTLS(nc *nats.Conn) error {
	if _, err := nc.TLSConnectionState(); err == nil || e.o.AllowNoTLS {
		return nil
	}
	us, err := urls(e.o.URL)
	if err != nil {
		return err
	}
	for _, u := range us {
		if !natsnode.IsLoopback(u.Hostname()) {
			return fmt.Errorf("%w: %s serves plaintext; give the nats-server a tls { cert_file, key_file } block and use a tls:// URL with --nats-ca, or opt out explicitly with --insecure-no-tls",
				ErrNoTLS, u.Redacted())
		}
	}
	if h := nc.ConnectedAddr(); h != "" {
		if host, _, found := strings.Cut(h, ":"); found && !natsnode.IsLoopback(host) {
			return fmt.Errorf("%w: connected to %s in plaintext (announced by the cluster); configure TLS on every server", ErrNoTLS, h)
		}
	}
	return nil
}

// accountOf asks the server which account nc is in.
func accountOf(nc *nats.Conn) (string, error) {
	m, err := nc.Request(userInfo, nil, 2*time.Second)
	if err != nil {
		return "", fmt.Errorf("%s: %w", userInfo, err)
	}
	var r struct {
		Data  *server.UserInfo `json:"data"`
		Error *server.ApiError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil || r.Data == nil {
		return "", fmt.Errorf("%s: unexpected answer %q", userInfo, m.Data)
	}
	return r.Data.Account, nil
}

// checkAccount refuses a login that landed in another account than want.
func checkAccount(nc *nats.Conn, who, want string) error {
	got, err := accountOf(nc)
	if err != nil {
		return fmt.Errorf("%w: cannot tell the %s's account (%v); %s", ErrWrongAccount, who, err, hint)
	}
	if got != want {
		return fmt.Errorf("%w: membershipd's %s is in account %q, not %q; %s", ErrWrongAccount, who, got, want, hint)
	}
	return nil
}

// checkCallout logs in as the probe, which the callout admits with no
// permissions: a login that succeeds proves that the server asks the
// callout, in CalloutAccount, and accepts the issuer's answers. Another
// membershipd's callout (the same credentials, the same queue group) may
// be the one asked: it admits the probe too.
func (e *Engine) checkCallout(ctx context.Context) error {
	e.co.probed.Store(false)
	nc, err := e.connect(e.o.Keys.Probe, "membershipd-probe", nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
		return nil
	}
	p := e.o.Keys.Public()
	if e.co.probed.Load() {
		return fmt.Errorf("%w: the server asked the callout but refused its answer (%v): authorization.auth_callout.issuer must be %s and auth_callout.xkey %s; %s",
			ErrNotConfigured, err, p.Issuer, p.XKey, hint)
	}
	return fmt.Errorf("%w: the server did not ask the callout about a login (%v): add authorization { auth_callout { issuer: %s, account: %s, auth_users: [%s, %s], xkey: %s } }; %s",
		ErrNotConfigured, err, p.Issuer, CalloutAccount, p.CalloutUser, p.SystemUser, p.XKey, hint)
}

// checkAccounts logs the internal identity in to each data-plane account
// and checks what unibus's isolation rests on: each login lands where it
// asked; the bus and control accounts have JetStream; the members
// account imports the deliveries of the bus account (and nothing of the
// bus account is reachable otherwise is the configuration's, not
// checked here); and the stream delete API is disabled.
func (e *Engine) checkAccounts(ctx context.Context) error {
	in := e.o.Keys.Internal
	conns := map[string]*nats.Conn{}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for _, acc := range []string{natsnode.ControlAccount, natsnode.BusAccount, natsnode.MembersAccount} {
		nc, err := e.dial(in.NKey(), in.SignNonce, nats.Name("membershipd-check"), nats.UserInfo(acc, ""), nats.MaxReconnects(0))
		if err != nil {
			return fmt.Errorf("%w: membershipd's internal identity could not log in to %s through the callout: %v; %s", ErrNotConfigured, acc, err, hint)
		}
		conns[acc] = nc
		if err := checkAccount(nc, "internal identity", acc); err != nil {
			return err
		}
	}
	for _, acc := range []string{natsnode.ControlAccount, natsnode.BusAccount} {
		if err := e.jetStreamReady(ctx, conns[acc], acc); err != nil {
			return err
		}
	}
	if js, err := jetstream.New(conns[natsnode.MembersAccount]); err == nil {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.AccountInfo(actx)
		cancel()
		if err == nil {
			return fmt.Errorf("%w: account %s has JetStream: members must share no account with anything that stores; remove 'jetstream' from accounts.%s; %s",
				ErrWrongAccount, natsnode.MembersAccount, natsnode.MembersAccount, hint)
		}
	}
	// The deliveries reach the members account. The two connections may
	// be on different servers of a cluster, which learns of the
	// subscription a moment after this one: publish again until a message
	// arrives.
	subj := subjects.Deliver(in.SignPub().String(), "startcheck"+nuidish())
	sub, err := conns[natsnode.MembersAccount].SubscribeSync(subj)
	if err != nil {
		return err
	}
	conns[natsnode.MembersAccount].Flush()
	if err := deliveredWithin(conns[natsnode.BusAccount], sub, subj, deliveryWait); err != nil {
		return fmt.Errorf("%w: a message published in %s on %s did not reach %s: %s must export the stream %s.> to %s, which imports it; %s",
			ErrWrongAccount, natsnode.BusAccount, subj, natsnode.MembersAccount, natsnode.BusAccount, subjects.DeliverPrefix, natsnode.MembersAccount, hint)
	}
	// Stream deletion is disabled: the request reaches no responder.
	m, err := conns[natsnode.BusAccount].Request("$JS.API.STREAM.DELETE.UNIBUS_STARTCHECK_NONE", nil, 2*time.Second)
	if err == nil {
		return fmt.Errorf("%w: the JetStream API answered a stream deletion (%q): the system account must map $JS.API.STREAM.DELETE.* (and the leader step-down APIs) to %s; %s",
			ErrWrongAccount, m.Data, disabledAPISubject, hint)
	}
	return nil
}

// jetStreamWait bounds the wait for JetStream to answer in an account: a
// cluster started a moment ago has no meta leader yet.
const jetStreamWait = 90 * time.Second

// jetStreamReady checks that JetStream answers in acc. "Not enabled" is a
// configuration error at once; any other failure (no meta leader yet, a
// timeout) is retried until jetStreamWait has passed, so that membershipd
// started with a cold cluster waits for it instead of blaming the
// configuration.
func (e *Engine) jetStreamReady(ctx context.Context, nc *nats.Conn, acc string) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	notEnabled := func(err error) error {
		return fmt.Errorf("%w: account %s has no JetStream (%v): enable jetstream on the server and 'jetstream: enabled' in accounts.%s; %s",
			ErrWrongAccount, acc, err, acc, hint)
	}
	deadline := time.Now().Add(jetStreamWait)
	return jsretry.Until(ctx, "JetStream in account "+acc, deadline, e.log, func(err error) error {
		return fmt.Errorf("%w (a cluster without a meta leader: start a quorum of its servers)", err)
	}, func() error {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := js.AccountInfo(actx)
		if errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
			return &jsretry.Permanent{Err: notEnabled(err)}
		}
		return err
	})
}

// deliveryWait bounds the wait for the deliveries check's message.
const deliveryWait = 5 * time.Second

// deliveredWithin publishes on subj through pub, again every
// deliveryRetry, until sub receives a message or wait has passed.
func deliveredWithin(pub *nats.Conn, sub *nats.Subscription, subj string, wait time.Duration) error {
	const deliveryRetry = 250 * time.Millisecond
	deadline := time.Now().Add(wait)
	for {
		if err := pub.Publish(subj, []byte("check")); err != nil {
			return err
		}
		_, err := sub.NextMsg(min(deliveryRetry, max(time.Until(deadline), time.Millisecond)))
		if err == nil || !errors.Is(err, nats.ErrTimeout) || time.Now().After(deadline) {
			return err
		}
	}
}

// nuidish is a short random token.
func nuidish() string {
	kp, _ := nkeys.CreateUser()
	p, _ := kp.PublicKey()
	return strings.ToLower(p[1:13])
}
