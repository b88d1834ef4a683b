package natsnode

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"reflect"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/unibus/unibus/identity"
)

// fzConn is one client connection as the authenticator sees it.
type fzConn struct {
	opts  *server.ClientOpts
	nonce []byte
	kind  int
	users []*server.User
}

func (c *fzConn) GetOpts() *server.ClientOpts                 { return c.opts }
func (c *fzConn) GetTLSConnectionState() *tls.ConnectionState { return nil }
func (c *fzConn) RegisterUser(u *server.User)                 { c.users = append(c.users, u) }
func (c *fzConn) RemoteAddress() net.Addr                     { return nil }
func (c *fzConn) GetNonce() []byte                            { return c.nonce }
func (c *fzConn) Kind() int                                   { return c.kind }
func (c *fzConn) GetID() uint64                               { return 1 }

// fzAuthorizer answers as membershipd's store authorizer does: it maps the
// nkey to a sign-pub with identity.SignPubFromNKey and looks the user up.
type fzAuthorizer map[identity.SignPub]Grant

func (a fzAuthorizer) Grant(_ context.Context, nkey string) (Grant, error) {
	sp, err := identity.SignPubFromNKey(nkey)
	if err != nil {
		return Grant{}, err
	}
	g, ok := a[sp]
	if !ok {
		return Grant{}, errors.New("unknown user")
	}
	return g, nil
}

// fzNonceSig decodes a nonce signature as nats.go sends it (raw base64url)
// or in standard base64.
func fzNonceSig(sig string) ([]byte, bool) {
	if raw, err := base64.RawURLEncoding.DecodeString(sig); err == nil {
		return raw, true
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	return raw, err == nil
}

// FuzzAuthCheck runs the data-plane authenticator on arbitrary CONNECT
// options (nkey, nonce signature, username), nonces and connection kinds,
// with bus-auth enforced or off. It must never panic, and:
//
//   - a login is allowed exactly when one user is registered, and never
//     with nil (allow-all) permissions; the reason says allow or deny;
//   - with bus-auth enforced, only a member (the active user's own ACL in
//     the members account) or the internal identity gets in, under its
//     canonical nkey — the name every kick looks for — and only with a
//     signature that crypto/ed25519 verifies over the nonce;
//   - conversely, the active user's canonical nkey with a valid signature
//     over a non-empty nonce does get in.
func FuzzAuthCheck(f *testing.F) {
	mk := func(b byte) *identity.Identity {
		id, err := identity.FromSeed(bytes.Repeat([]byte{b}, identity.SeedSize))
		if err != nil {
			f.Fatal(err)
		}
		return id
	}
	alice, bob, internal, mallory := mk(1), mk(2), mk(3), mk(4)
	authz := fzAuthorizer{
		alice.SignPub(): {Active: true, SignPubHex: alice.SignPub().String()},
		bob.SignPub():   {Active: false, SignPubHex: bob.SignPub().String()},
	}
	accts := accounts{bus: server.NewAccount(BusAccount), control: server.NewAccount(ControlAccount), members: server.NewAccount(MembersAccount)}
	nonce := []byte("server-nonce-0123456789")
	sign := func(id *identity.Identity) string { return base64.RawURLEncoding.EncodeToString(id.Sign(nonce)) }
	aliceNK := alice.NKey()
	for _, enforce := range []bool{true, false} {
		f.Add(enforce, uint8(0), aliceNK, sign(alice), "", nonce)
		f.Add(enforce, uint8(0), aliceNK, base64.StdEncoding.EncodeToString(alice.Sign(nonce)), "", nonce)
		f.Add(enforce, uint8(0), internal.NKey(), sign(internal), BusAccount, nonce)
		f.Add(enforce, uint8(0), internal.NKey(), sign(internal), MembersAccount, nonce)
		f.Add(enforce, uint8(0), internal.NKey(), sign(internal), "", nonce)
	}
	f.Add(true, uint8(0), bob.NKey(), sign(bob), "", nonce)
	f.Add(true, uint8(0), mallory.NKey(), sign(mallory), "", nonce)
	f.Add(true, uint8(0), aliceNK, sign(mallory), "", nonce)
	f.Add(true, uint8(0), aliceNK[:10]+"\n"+aliceNK[10:], sign(alice), "", nonce)
	f.Add(true, uint8(0), aliceNK, sign(alice), "", []byte{})
	f.Add(true, uint8(1), aliceNK, sign(alice), "", nonce)
	f.Add(false, uint8(0), "", "", "", nonce)

	f.Fuzz(func(t *testing.T, enforce bool, kind uint8, nkey, sig, username string, nonce []byte) {
		a := &authenticator{enforce: enforce, internal: internal.NKey(), authz: authz,
			log: slog.New(slog.DiscardHandler), accts: accts, throttle: newLoginThrottle(nil)}
		c := &fzConn{opts: &server.ClientOpts{Nkey: nkey, Sig: sig, Username: username}, nonce: nonce, kind: server.CLIENT}
		if kind%8 == 1 {
			c.kind = server.ROUTER
		}
		reason, allowed := a.check(c)

		switch reason {
		case ReasonMember, ReasonInternal, ReasonOpen:
			if !allowed {
				t.Fatalf("reason %s, but denied", reason)
			}
		default:
			if allowed {
				t.Fatalf("reason %s, but allowed", reason)
			}
		}
		if !allowed {
			if len(c.users) != 0 {
				t.Fatalf("denied (%s), but registered %d users", reason, len(c.users))
			}
		} else {
			if len(c.users) != 1 || c.users[0].Permissions == nil {
				t.Fatalf("allowed (%s) with %d users registered, permissions %v", reason, len(c.users), c.users)
			}
			if c.kind != server.CLIENT {
				t.Fatalf("allowed a connection of kind %d", c.kind)
			}
		}

		raw, sigOK := fzNonceSig(sig)
		sp, spErr := identity.SignPubFromNKey(nkey)
		verified := spErr == nil && sigOK && len(nonce) > 0 && ed25519.Verify(sp[:], nonce, raw)
		if !enforce {
			// Any spelling of the key will do here: bus-auth off grants
			// everything to everyone, and kicks nobody.
			pub, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(nkey))
			signed := err == nil && len(pub) == ed25519.PublicKeySize && sigOK && len(nonce) > 0 && ed25519.Verify(pub, nonce, raw)
			if allowed && nkey != "" && !signed {
				t.Fatalf("bus-auth off: a login naming nkey %q got in without a valid signature", nkey)
			}
			return
		}
		if allowed {
			if reason == ReasonOpen {
				t.Fatal("bus-auth enforced, but an open login got in")
			}
			if !verified {
				t.Fatalf("%s login of %q got in without a signature ed25519 verifies", reason, nkey)
			}
			u := c.users[0]
			if u.Username != nkey || sp.NKey() != nkey {
				t.Fatalf("%s login registered as %q, not as the canonical nkey %q", reason, u.Username, sp.NKey())
			}
			switch reason {
			case ReasonInternal:
				want := accts.control
				switch username {
				case BusAccount:
					want = accts.bus
				case MembersAccount:
					want = accts.members
				}
				if nkey != internal.NKey() || u.Account != want {
					t.Fatalf("internal login of %q in account %v", nkey, u.Account)
				}
			case ReasonMember:
				g, ok := authz[sp]
				if !ok || !g.Active || u.Account != accts.members || !reflect.DeepEqual(u.Permissions, Permissions(g)) {
					t.Fatalf("member login of %q: account %v, permissions %+v", nkey, u.Account, u.Permissions)
				}
			}
		}
		if sp == alice.SignPub() && verified && nkey == aliceNK && c.kind == server.CLIENT && (!allowed || reason != ReasonMember) {
			t.Fatalf("the active member's valid login was refused: %s", reason)
		}
	})
}
