package kvstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/store"
)

type userRec struct {
	SignPub   string    `json:"sign_pub"`
	Handle    string    `json:"handle"`
	Role      string    `json:"role"`
	Status    string    `json:"status"`
	KEMPub    []byte    `json:"kem_pub,omitempty"`
	KEMSig    []byte    `json:"kem_sig,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (r userRec) user() store.User {
	return store.User{SignPub: r.SignPub, Handle: r.Handle, Role: store.Role(r.Role), Status: store.Status(r.Status),
		KEMPub: r.KEMPub, KEMSig: r.KEMSig, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC()}
}

func recOf(u store.User) userRec {
	return userRec{SignPub: u.SignPub, Handle: u.Handle, Role: string(u.Role), Status: string(u.Status),
		KEMPub: u.KEMPub, KEMSig: u.KEMSig, CreatedAt: u.CreatedAt.UTC(), UpdatedAt: u.UpdatedAt.UTC()}
}

// handleClaim is the value of h.<hex(handle)>.
type handleClaim struct {
	SignPub string    `json:"sign_pub"`
	At      time.Time `json:"at"`
}

func userKey(signPub string) string  { return "u." + signPub }
func handleKey(handle string) string { return "h." + hex.EncodeToString([]byte(handle)) }

// UserKeyPub returns the sign-pub a users-bucket key names, or "" for a
// key that is not a user record (watchers use it).
func UserKeyPub(key string) string {
	if p, ok := strings.CutPrefix(key, "u."); ok {
		return p
	}
	return ""
}

// AddUser claims the handle, then creates the user record, both with
// create-if-absent. A claim whose user record does not exist (a crashed
// or failed add) is taken over once it is older than LeaseTTL; a reader
// trusts a claim only when the user record names the same handle.
func (s *Store) AddUser(ctx context.Context, u store.User) error {
	op := "add user " + u.SignPub
	if err := s.check(op); err != nil {
		return err
	}
	if err := token("sign-pub", u.SignPub); err != nil {
		return wrap(op, err)
	}
	if u.Handle == "" {
		return wrap(op, fmt.Errorf("empty handle: %w", errInvalid))
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var existing userRec
	switch _, err := getJSON(ctx, s.users, userKey(u.SignPub), &existing); {
	case err == nil:
		return wrap(op, store.ErrAlreadyRegistered)
	case !errors.Is(err, store.ErrNotFound):
		return wrap(op, err)
	}
	claimed, err := s.claimHandle(ctx, u.Handle, u.SignPub)
	if err != nil {
		return wrap(op, err)
	}
	if _, err := s.users.Create(ctx, userKey(u.SignPub), jsonBytes(recOf(u))); err != nil {
		if isConflict(err) {
			err = store.ErrAlreadyRegistered
			if claimed != 0 {
				// Give the handle back (the record we raced with has its own).
				s.users.Delete(ctx, handleKey(u.Handle), jetstream.LastRevision(claimed))
			}
		}
		return wrap(op, err)
	}
	return nil
}

// claimHandle records handle → signPub unless another registered user
// holds it. It returns the claim's revision when it wrote one.
func (s *Store) claimHandle(ctx context.Context, handle, signPub string) (uint64, error) {
	key := handleKey(handle)
	val := jsonBytes(handleClaim{SignPub: signPub, At: s.o.Now().UTC()})
	for range 5 {
		rev, err := s.users.Create(ctx, key, val)
		if err == nil {
			return rev, nil
		}
		if !isConflict(err) {
			return 0, err
		}
		var c handleClaim
		crev, err := getJSON(ctx, s.users, key, &c)
		if errors.Is(err, store.ErrNotFound) {
			continue // released in the meantime
		}
		if err != nil {
			return 0, err
		}
		if c.SignPub == signPub {
			return 0, nil // our own claim from an earlier attempt
		}
		var holder userRec
		switch _, err := getJSON(ctx, s.users, userKey(c.SignPub), &holder); {
		case err == nil && holder.Handle == handle:
			return 0, fmt.Errorf("handle %q: %w", handle, store.ErrHandleTaken)
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return 0, err
		}
		// A claim without its user: an add that failed or is in flight.
		if s.o.Now().Sub(c.At) < s.o.LeaseTTL {
			return 0, fmt.Errorf("handle %q is being registered: %w", handle, store.ErrHandleTaken)
		}
		rev, err = s.users.Update(ctx, key, val, crev)
		if err == nil {
			return rev, nil
		}
		if !isConflict(err) {
			return 0, err
		}
	}
	return 0, fmt.Errorf("handle %q: contended: %w", handle, store.ErrUnavailable)
}

// GetUser implements store.Store.
func (s *Store) GetUser(ctx context.Context, signPub string) (store.User, error) {
	op := "get user " + signPub
	if err := s.check(op); err != nil {
		return store.User{}, err
	}
	if token("sign-pub", signPub) != nil {
		return store.User{}, wrap(op, store.ErrNotFound)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var r userRec
	if _, err := getJSON(ctx, s.users, userKey(signPub), &r); err != nil {
		return store.User{}, wrap(op, err)
	}
	return r.user(), nil
}

// GetUserByHandle follows the handle claim and trusts it only if the user
// record names the same handle.
func (s *Store) GetUserByHandle(ctx context.Context, handle string) (store.User, error) {
	op := fmt.Sprintf("get user by handle %q", handle)
	if err := s.check(op); err != nil {
		return store.User{}, err
	}
	if handle == "" || len(handle) > 128 {
		return store.User{}, wrap(op, store.ErrNotFound)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var c handleClaim
	if _, err := getJSON(ctx, s.users, handleKey(handle), &c); err != nil {
		return store.User{}, wrap(op, err)
	}
	var r userRec
	if _, err := getJSON(ctx, s.users, userKey(c.SignPub), &r); err != nil {
		return store.User{}, wrap(op, err)
	}
	if r.Handle != handle {
		return store.User{}, wrap(op, store.ErrNotFound)
	}
	return r.user(), nil
}

// ListUsers implements store.Store.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	if err := s.check("list users"); err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	keys, err := s.listKeys(ctx, BucketUsers, "u.*")
	if err != nil {
		return nil, wrap("list users", err)
	}
	out := make([]store.User, 0, len(keys))
	for _, k := range keys {
		var r userRec
		_, err := getJSON(ctx, s.users, k, &r)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, wrap("list users", err)
		}
		out = append(out, r.user())
	}
	slices.SortFunc(out, func(a, b store.User) int {
		if c := strings.Compare(a.Handle, b.Handle); c != 0 {
			return c
		}
		return strings.Compare(a.SignPub, b.SignPub)
	})
	return out, nil
}

// updateUser applies fn to the user record with compare-and-set.
func (s *Store) updateUser(ctx context.Context, op, signPub string, fn func(*userRec)) (store.User, error) {
	if err := s.check(op); err != nil {
		return store.User{}, err
	}
	if token("sign-pub", signPub) != nil {
		return store.User{}, wrap(op, store.ErrNotFound)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	for range 10 {
		var r userRec
		rev, err := getJSON(ctx, s.users, userKey(signPub), &r)
		if err != nil {
			return store.User{}, wrap(op, err)
		}
		fn(&r)
		_, err = s.users.Update(ctx, userKey(signPub), jsonBytes(r), rev)
		if err == nil {
			return r.user(), nil
		}
		if !isConflict(err) {
			return store.User{}, wrap(op, err)
		}
	}
	return store.User{}, wrap(op, fmt.Errorf("contended: %w", store.ErrUnavailable))
}

// RevokeUser implements store.Store.
func (s *Store) RevokeUser(ctx context.Context, signPub string, at time.Time) (store.User, error) {
	return s.updateUser(ctx, "revoke user "+signPub, signPub, func(r *userRec) {
		if r.Status != string(store.StatusRevoked) {
			r.Status, r.UpdatedAt = string(store.StatusRevoked), at.UTC()
		}
	})
}

// SetKEMKey implements store.Store.
func (s *Store) SetKEMKey(ctx context.Context, signPub string, kemPub, sig []byte, at time.Time) error {
	_, err := s.updateUser(ctx, "set KEM key of "+signPub, signPub, func(r *userRec) {
		r.KEMPub, r.KEMSig, r.UpdatedAt = kemPub, sig, at.UTC()
	})
	return err
}

// CountActiveAdmins implements store.Store.
func (s *Store) CountActiveAdmins(ctx context.Context) (int, error) {
	us, err := s.ListUsers(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, u := range us {
		if u.Role == store.RoleAdmin && u.Status == store.StatusActive {
			n++
		}
	}
	return n, nil
}
