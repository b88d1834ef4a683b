package client

import (
	"context"
	"fmt"
	"net/url"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/wire"
)

// Me returns the caller's own record.
func (c *Client) Me(ctx context.Context) (User, error) {
	var u wire.User
	err := c.do(ctx, "GET", "/v1/me", nil, &u)
	return userFromWire(u), err
}

// Register publishes the identity's KEM public key with its binding
// signature, so that owners can seal room keys to it.
func (c *Client) Register(ctx context.Context) (User, error) {
	var u wire.User
	req := wire.KEMKeyRequest{KEMPub: c.id.KEMPub().Bytes(), Sig: c.id.SignKEMBinding()}
	err := c.do(ctx, "PUT", "/v1/me/kem-key", req, &u)
	return userFromWire(u), err
}

// AddUser registers a user (admin only): the handle it will be known by,
// its sign-pub (64 hex, from unibus keygen) and its role.
func (c *Client) AddUser(ctx context.Context, handle, signPub string, role Role) (User, error) {
	var u wire.User
	err := c.do(ctx, "POST", "/v1/users", wire.AddUserRequest{Handle: handle, SignPub: signPub, Role: string(role)}, &u)
	return userFromWire(u), err
}

// ListUsers lists every user, revoked ones included (admin only).
func (c *Client) ListUsers(ctx context.Context) ([]User, error) {
	var l wire.UserList
	err := c.do(ctx, "GET", "/v1/users", nil, &l)
	return usersFromWire(l.Users), err
}

// RevokeUser revokes a user by handle or sign-pub (admin only).
func (c *Client) RevokeUser(ctx context.Context, user string) (User, error) {
	var u wire.User
	err := c.do(ctx, "POST", "/v1/users/"+url.PathEscape(user)+"/revoke", nil, &u)
	return userFromWire(u), err
}

// User looks up a user's public record by handle or sign-pub, as the server
// gives it: nothing is checked against the pinned keys (Whois does that).
func (c *Client) User(ctx context.Context, user string) (User, error) {
	var u wire.User
	err := c.do(ctx, "GET", "/v1/users/"+url.PathEscape(user), nil, &u)
	return userFromWire(u), err
}

// verifiedKEM checks the binding signature of a user's published KEM key:
// the client never seals to a key its owner did not sign.
func verifiedKEM(signPub string, kemPub, sig []byte) (identity.SignPub, identity.KEMPub, error) {
	sp, err := identity.ParseSignPub(signPub)
	if err != nil {
		return sp, identity.KEMPub{}, err
	}
	if len(kemPub) == 0 {
		return sp, identity.KEMPub{}, fmt.Errorf("user %s has not published a KEM key (unibus register)", sp.Short())
	}
	kp, err := identity.ParseKEMPub(kemPub)
	if err != nil {
		return sp, kp, fmt.Errorf("user %s: %w", sp.Short(), err)
	}
	if err := identity.VerifyKEMBinding(sp, kp, sig); err != nil {
		return sp, kp, fmt.Errorf("user %s: %w", sp.Short(), err)
	}
	return sp, kp, nil
}
