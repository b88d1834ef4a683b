package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/wire"
)

// The keys the server gives are checked against the pins (pin.go) here:
// for a person by Whois and AcceptKeys, before a room key is sealed by
// sealable, and whenever a room's members are listed by observe.

// PinState says how a user's keys, as the server gives them now, compare
// with the keys the client pinned.
type PinState string

// Pin states.
const (
	PinNew      PinState = "new"      // seen for the first time, and now pinned
	PinMatch    PinState = "match"    // the same as the pinned keys
	PinChanged  PinState = "changed"  // different: refused until accepted
	PinAccepted PinState = "accepted" // re-pinned by AcceptKeys
)

// KeyInfo is a user's public record with its checked keys.
type KeyInfo struct {
	User User
	// Fingerprint is Fingerprint(sign-pub, KEM key); empty while the user
	// has published no KEM key.
	Fingerprint string
	// Pin compares the keys with the pinned ones.
	Pin PinState
	// Change describes the difference when Pin is PinChanged.
	Change *KeyChangedError
	// KnownKeysFile is where the pins are kept ("" in memory).
	KnownKeysFile string
	// Self is set when the user is the client's own identity: its keys
	// are compared with the identity, not with pins.
	Self bool
}

// Whois looks up a user (handle or sign-pub), checks the binding signature
// of its KEM key, and compares its keys with the pinned ones. Keys seen for
// the first time are pinned (PinNew). Changed keys are reported (PinChanged
// with Change set), not an error, and stay refused until AcceptKeys.
func (c *Client) Whois(ctx context.Context, user string) (KeyInfo, error) {
	u, p, fp, err := c.lookupKeys(ctx, user)
	if err != nil {
		return KeyInfo{}, err
	}
	ki := KeyInfo{User: u, Fingerprint: fp, Pin: PinMatch, KnownKeysFile: c.pins.path}
	if u.SignPub == c.id.SignPub().String() {
		// Yourself: the reference is your identity, not a pin.
		ki.Self = true
		if p.kem != "" && p.kem != kemDigest(c.id.KEMPub()) {
			ki.Pin = PinChanged
			ki.Change = &KeyChangedError{User: u.Handle, Key: "KEM key", Pinned: kemDigest(c.id.KEMPub()), Got: p.kem}
		}
		return ki, nil
	}
	isNew, err := c.pins.check(p)
	var ce *KeyChangedError
	switch {
	case err == nil:
		if isNew {
			ki.Pin = PinNew
		}
	case errors.As(err, &ce):
		ki.Pin, ki.Change = PinChanged, ce
	default:
		return KeyInfo{}, err
	}
	return ki, nil
}

// AcceptKeys pins the keys the server now gives for user, replacing what
// was pinned for its handle and sign-pub. Call it only after comparing the
// fingerprint (KeyInfo.Fingerprint) with the user out of band. A KEM key
// whose binding signature does not verify is never accepted.
func (c *Client) AcceptKeys(ctx context.Context, user string) (KeyInfo, error) {
	u, p, fp, err := c.lookupKeys(ctx, user)
	if err != nil {
		return KeyInfo{}, err
	}
	if u.SignPub == c.id.SignPub().String() && p.kem != "" && p.kem != kemDigest(c.id.KEMPub()) {
		return KeyInfo{}, fmt.Errorf("the server gives your own sign-pub a KEM key that is not yours; it cannot be accepted: %w", ErrKeyChanged)
	}
	if err := c.pins.replace(p); err != nil {
		return KeyInfo{}, err
	}
	return KeyInfo{User: u, Fingerprint: fp, Pin: PinAccepted, KnownKeysFile: c.pins.path}, nil
}

// lookupKeys fetches a user's record and checks it: the answer is about the
// user asked for, and a published KEM key is signed by the sign-pub.
func (c *Client) lookupKeys(ctx context.Context, user string) (User, pin, string, error) {
	u, err := c.User(ctx, user)
	if err != nil {
		return u, pin{}, "", err
	}
	sp, err := answerFor(user, u)
	if err != nil {
		return u, pin{}, "", err
	}
	p := pin{handle: u.Handle, signPub: u.SignPub}
	if len(u.KEMPub) == 0 {
		return u, p, "", nil
	}
	_, kp, err := verifiedKEM(u.SignPub, u.KEMPub, u.KEMSig)
	if err != nil {
		return u, pin{}, "", err
	}
	p.kem = kemDigest(kp)
	return u, p, Fingerprint(sp, kp), nil
}

// answerFor checks that the server's record u answers a lookup of user (a
// handle or a sign-pub), and returns its sign-pub.
func answerFor(user string, u User) (identity.SignPub, error) {
	sp, err := identity.ParseSignPub(u.SignPub)
	if err != nil {
		return sp, fmt.Errorf("the server answered %q with a malformed sign-pub: %w", user, err)
	}
	if _, err := identity.ParseSignPub(user); err == nil {
		if u.SignPub != user {
			return sp, fmt.Errorf("the server answered a lookup of %s with another user (%s)", user, sp.Short())
		}
	} else if u.Handle != user {
		return sp, fmt.Errorf("the server answered a lookup of %q with another user (%q)", user, u.Handle)
	}
	if u.Handle != "" && !validHandle(u.Handle) {
		return sp, fmt.Errorf("the server gave user %s the malformed handle %q", sp.Short(), u.Handle)
	}
	return sp, nil
}

// sealable returns the checked keys of a user the client is about to seal
// a room key to: the KEM key's binding signature verifies, and the handle
// and keys match the pins (what is new is pinned). The caller's own
// sign-pub must come with its own KEM key.
func (c *Client) sealable(handle, signPub string, kemPub, kemSig []byte) (identity.SignPub, identity.KEMPub, error) {
	sp, kp, err := verifiedKEM(signPub, kemPub, kemSig)
	if err != nil {
		return sp, kp, err
	}
	if sp.Equal(c.id.SignPub()) {
		if !kp.Equal(c.id.KEMPub()) {
			return sp, kp, fmt.Errorf("the server gives your own sign-pub a KEM key that is not yours; refusing to seal to it: %w", ErrKeyChanged)
		}
		return sp, kp, nil
	}
	if handle != "" && !validHandle(handle) {
		return sp, kp, fmt.Errorf("the server gave user %s the malformed handle %q", sp.Short(), handle)
	}
	if _, err := c.pins.check(pin{handle: handle, signPub: sp.String(), kem: kemDigest(kp)}); err != nil {
		return sp, kp, err
	}
	return sp, kp, nil
}

// observe pins, on first sight, the keys of a room's members as the
// server lists them (only keys whose binding signature verifies). A
// member whose keys differ from the pinned ones is only logged here: the
// client refuses them when it would seal a room key to them (sealable).
func (c *Client) observe(members []wire.Member) {
	me := c.id.SignPub().String()
	pins := make([]pin, 0, len(members))
	raw := make([]wire.Member, 0, len(members))
	for _, m := range members {
		if m.SignPub == me || len(m.KEMPub) == 0 || (m.Handle != "" && !validHandle(m.Handle)) {
			continue
		}
		kp, err := identity.ParseKEMPub(m.KEMPub)
		if err != nil {
			continue
		}
		pins = append(pins, pin{handle: m.Handle, signPub: m.SignPub, kem: kemDigest(kp)})
		raw = append(raw, m)
	}
	if c.pins.known(pins) {
		return // the steady state: nothing new, no file access
	}
	verified := pins[:0]
	for i, p := range pins {
		if _, _, err := verifiedKEM(raw[i].SignPub, raw[i].KEMPub, raw[i].KEMSig); err == nil {
			verified = append(verified, p)
		}
	}
	_, errs, err := c.pins.checkAll(verified)
	if err != nil {
		c.log.Warn("could not record room members' keys", "err", err)
		return
	}
	for _, err := range errs {
		if err != nil && c.pins.firstWarning(err.Error()) {
			c.log.Warn("a room member's keys differ from the pinned ones; no room key will be sealed to them", "err", err)
		}
	}
}
