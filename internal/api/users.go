package api

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/wire"
)

func userWire(u store.User) wire.User {
	return wire.User{SignPub: u.SignPub, Handle: u.Handle, Role: string(u.Role), Status: string(u.Status),
		KEMPub: u.KEMPub, KEMSig: u.KEMSig, CreatedAt: u.CreatedAt}
}

func (s *Server) getMe(w http.ResponseWriter, r *http.Request, c *caller) error {
	writeJSON(w, http.StatusOK, userWire(c.user))
	return nil
}

// putKEMKey publishes the caller's KEM key. The binding signature is
// checked here so the server never stores a key its owner did not sign;
// clients check it again (they do not trust the server with keys).
func (s *Server) putKEMKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req wire.KEMKeyRequest
	if err := decode(c.body, &req); err != nil {
		return err
	}
	kp, err := identity.ParseKEMPub(req.KEMPub)
	if err != nil {
		return err
	}
	if err := identity.VerifyKEMBinding(c.key, kp, req.Sig); err != nil {
		return err
	}
	rec := audit.Record{Action: audit.ActionUserKEMKey, Subject: c.user.SignPub, Detail: "kem_key_sha256=" + kemDigest(kp.Bytes())}
	if err := s.audited(r.Context(), c, rec, func() error {
		return s.o.Store.SetKEMKey(r.Context(), c.user.SignPub, kp.Bytes(), req.Sig, s.o.Now())
	}); err != nil {
		return err
	}
	u, err := s.o.Store.GetUser(r.Context(), c.user.SignPub)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, userWire(u))
	return nil
}

func (s *Server) addUser(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.isAdmin() {
		return forbidden("only an admin may add users")
	}
	var req wire.AddUserRequest
	if err := decode(c.body, &req); err != nil {
		return err
	}
	if !identity.ValidHandle(req.Handle) {
		return badRequest("handle must match [a-z0-9][a-z0-9._-]{0,62}")
	}
	if _, err := identity.ParseSignPub(req.SignPub); err != nil {
		return err
	}
	role := store.Role(req.Role)
	if role != store.RoleAdmin && role != store.RoleMember {
		return badRequest("role must be admin or member")
	}
	now := s.o.Now()
	u := store.User{SignPub: req.SignPub, Handle: req.Handle, Role: role, Status: store.StatusActive, CreatedAt: now, UpdatedAt: now}
	rec := audit.Record{Action: audit.ActionUserAdd, Subject: u.SignPub, Detail: "handle=" + u.Handle + " role=" + string(u.Role)}
	if err := s.audited(r.Context(), c, rec, func() error { return s.o.Store.AddUser(r.Context(), u) }); err != nil {
		return err
	}
	s.log.Info("user added", "by", c.key.Short(), "handle", u.Handle, "role", u.Role)
	writeJSON(w, http.StatusCreated, userWire(u))
	return nil
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.isAdmin() {
		return forbidden("only an admin may list users")
	}
	us, err := s.o.Store.ListUsers(r.Context())
	if err != nil {
		return err
	}
	out := wire.UserList{Users: make([]wire.User, 0, len(us))}
	for _, u := range us {
		out.Users = append(out.Users, userWire(u))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// lookupUser resolves a path argument that is a sign-pub or a handle.
func (s *Server) lookupUser(r *http.Request, arg string) (store.User, error) {
	if _, err := identity.ParseSignPub(arg); err == nil {
		return s.o.Store.GetUser(r.Context(), arg)
	}
	if !identity.ValidHandle(arg) {
		return store.User{}, badRequest("user must be a 64-hex sign-pub or a handle")
	}
	return s.o.Store.GetUserByHandle(r.Context(), arg)
}

// getUser lets any active user look up another's public keys.
func (s *Server) getUser(w http.ResponseWriter, r *http.Request, c *caller) error {
	u, err := s.lookupUser(r, r.PathValue("user"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, userWire(u))
	return nil
}

// revokeUser flips the user's status (denied on both planes from now on),
// closes its live connections, and removes it from its rooms with the
// rotation marked pending, so that no key sealed after now reaches it.
func (s *Server) revokeUser(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.isAdmin() {
		return forbidden("only an admin may revoke users")
	}
	target, err := s.lookupUser(r, r.PathValue("user"))
	if err != nil {
		return err
	}
	var u store.User
	var rooms []string
	rec := audit.Record{Action: audit.ActionUserRevoke, Subject: target.SignPub, Detail: "handle=" + target.Handle}
	err = s.audited(r.Context(), c, rec, func() (err error) {
		u, rooms, err = store.Revoke(r.Context(), s.o.Store, target.SignPub, s.o.Now())
		s.kick(target.SignPub) // also after a partial failure: the status flip comes first
		return err
	})
	if err != nil {
		return err
	}
	for _, room := range rooms {
		s.o.DataPlane.RoomChanged(room) // the relay refuses the pending rooms' old epoch at once
	}
	s.log.Info("user revoked", "by", c.key.Short(), "handle", u.Handle, "rooms", len(rooms))
	writeJSON(w, http.StatusOK, userWire(u))
	return nil
}

// kemDigest names a KEM key in the audit log without the key itself.
func kemDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
