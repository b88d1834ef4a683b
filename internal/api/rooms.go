package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/wire"
)

func roomWire(r store.Room) wire.Room {
	return wire.Room{ID: r.ID, Name: r.Name, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt, Epoch: r.Epoch,
		RotationPending: r.RotationPending, MaxAgeSeconds: int64(r.MaxAge / time.Second), MaxBytes: r.MaxBytes, Shared: r.Shared}
}

// sealedKeys checks client-supplied sealed keys: each is for this room and
// epoch, sealed and signed by the caller, well formed, and its signature
// verifies. Coverage (who must get a key) is the store's atomic check.
func sealedKeys(c *caller, room e2e.RoomID, epoch uint64, in []wire.SealedKey) ([]store.SealedKey, error) {
	if len(in) > MaxMembersPerRoom {
		return nil, badRequest("at most %d sealed keys per request", MaxMembersPerRoom)
	}
	out := make([]store.SealedKey, 0, len(in))
	for i, k := range in {
		if k.Room != room.String() || k.Epoch != epoch {
			return nil, badRequest("key %d: sealed for room %q epoch %d, want room %s epoch %d", i, k.Room, k.Epoch, room, epoch)
		}
		member, err := identity.ParseSignPub(k.Member)
		if err != nil {
			return nil, badRequest("key %d: member: %v", i, err)
		}
		sealer, err := identity.ParseSignPub(k.Sealer)
		if err != nil || !sealer.Equal(c.key) {
			return nil, badRequest("key %d: sealer must be the caller", i)
		}
		ek := e2e.SealedKey{Room: room, Epoch: epoch, Member: member, Sealer: sealer, Sealed: k.Sealed, Sig: k.Sig}
		if err := ek.VerifySig(); err != nil {
			return nil, badRequest("key %d: %v", i, err)
		}
		out = append(out, store.SealedKey{Room: room.String(), Epoch: epoch, Member: k.Member, Sealer: k.Sealer, Sealed: k.Sealed, Sig: k.Sig})
	}
	return out, nil
}

func (s *Server) createRoom(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req wire.CreateRoomRequest
	if err := decode(c.body, &req); err != nil {
		return err
	}
	id, err := e2e.ParseRoomID(req.ID)
	if err != nil {
		return err
	}
	if !validRoomName(req.Name) {
		return badRequest("room name must be 1-%d bytes of printable UTF-8 without surrounding spaces", MaxRoomNameLen)
	}
	if len(c.user.KEMPub) == 0 {
		return errorf(http.StatusConflict, wire.CodeNoKEMKey, "publish your KEM key first (unibus register)")
	}
	maxAge, maxBytes, err := s.retention(req.MaxAgeSeconds, req.MaxBytes)
	if err != nil {
		return err
	}
	keys, err := sealedKeys(c, id, 1, []wire.SealedKey{req.Key})
	if err != nil {
		return err
	}
	if keys[0].Member != c.user.SignPub {
		return badRequest("the creation key must be sealed to the creator")
	}
	// A room with a byte limit gets a stream of its own, before its record:
	// a record without a stream would take messages nobody can store. The
	// stream is created, never updated: one that exists with other limits
	// is another room's, and stays as it is (ErrStreamExists); one that
	// exists with the same limits was left by an interrupted creation of
	// this same id, or is an existing room's, which the store then refuses.
	shared := maxBytes == 0
	// An id in use is refused before anything is created for it.
	if _, err := s.o.Store.GetRoom(r.Context(), id.String()); err == nil {
		return store.ErrRoomExists
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err := s.quotaAllows(r.Context(), s.o.RoomQuota, c, 1, "rooms created", http.StatusForbidden); err != nil {
		return err
	}
	if !shared {
		if err := s.o.DataPlane.CreateRoomStream(r.Context(), id.String(), maxAge, maxBytes); err != nil {
			return err
		}
	}
	now := s.o.Now()
	room := store.Room{ID: id.String(), Name: req.Name, CreatedBy: c.user.SignPub, CreatedAt: now, Epoch: 1, MaxAge: maxAge, MaxBytes: maxBytes, Shared: shared}
	owner := store.Member{Room: room.ID, SignPub: c.user.SignPub, Role: store.RoomOwner, AddedBy: c.user.SignPub, AddedAt: now}
	rec := audit.Record{Action: audit.ActionRoomCreate, Room: room.ID, Subject: c.user.SignPub, Detail: "name=" + room.Name}
	if err := s.audited(r.Context(), c, rec, func() error { return s.o.Store.CreateRoom(r.Context(), room, owner, keys[0]) }); err != nil {
		return err
	}
	if s.o.RoomQuota != nil {
		if err := s.o.RoomQuota.AddNow(r.Context(), c.user.SignPub, 1, time.Time{}); err != nil {
			// The room exists: say so, and count it next time if the
			// ledger can be written then (it cannot be un-created).
			s.log.Error("room created but not counted against its creator's quota", "room", room.ID, "by", c.key.Short(), "err", err)
		}
	}
	s.log.Info("room created", "room", room.ID, "by", c.key.Short(), "shared", shared)
	writeJSON(w, http.StatusCreated, roomWire(room))
	return nil
}

// retention applies the server caps to a room's requested limits: the
// server's max age is the default and the cap of every room's; its max
// bytes caps a room that asks for a byte limit (a room without one is in
// the shared stream, bounded by that stream's own limit).
func (s *Server) retention(ageSec, maxBytes int64) (time.Duration, int64, error) {
	if ageSec < 0 || maxBytes < 0 {
		return 0, 0, badRequest("retention limits must not be negative")
	}
	age := time.Duration(ageSec) * time.Second
	if ageSec > int64(100*365*24*time.Hour/time.Second) {
		return 0, 0, badRequest("max_age_seconds is too large")
	}
	if age == 0 || (s.o.RoomMaxAge > 0 && age > s.o.RoomMaxAge) {
		age = s.o.RoomMaxAge
	}
	if maxBytes > 0 && s.o.RoomMaxBytes > 0 && maxBytes > s.o.RoomMaxBytes {
		maxBytes = s.o.RoomMaxBytes
	}
	return age, maxBytes, nil
}

func (s *Server) listRooms(w http.ResponseWriter, r *http.Request, c *caller) error {
	rooms, err := s.o.Store.ListRooms(r.Context(), c.user.SignPub)
	if err != nil {
		return err
	}
	out := wire.RoomList{Rooms: make([]wire.Room, 0, len(rooms))}
	for _, rm := range rooms {
		out.Rooms = append(out.Rooms, roomWire(rm))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// roomFor loads the path's room and the caller's membership. Non-members
// get 404 (not 403), so room ids cannot be probed; admins may see any room
// (incident response), with ok=false for membership.
func (s *Server) roomFor(r *http.Request, c *caller) (store.Room, store.Member, bool, error) {
	id, err := e2e.ParseRoomID(r.PathValue("room"))
	if err != nil {
		return store.Room{}, store.Member{}, false, err
	}
	room, err := s.o.Store.GetRoom(r.Context(), id.String())
	if err != nil {
		return store.Room{}, store.Member{}, false, err
	}
	m, err := s.o.Store.GetMember(r.Context(), room.ID, c.user.SignPub)
	switch {
	case err == nil:
		return room, m, true, nil
	case errors.Is(err, store.ErrNotMember) && c.isAdmin():
		return room, store.Member{}, false, nil
	case errors.Is(err, store.ErrNotMember):
		return store.Room{}, store.Member{}, false, errorf(http.StatusNotFound, wire.CodeNotFound, "no such room, or you are not a member")
	}
	return store.Room{}, store.Member{}, false, err
}

func (s *Server) getRoom(w http.ResponseWriter, r *http.Request, c *caller) error {
	room, _, _, err := s.roomFor(r, c)
	if err != nil {
		return err
	}
	ms, err := s.o.Store.ListMembers(r.Context(), room.ID)
	if err != nil {
		return err
	}
	out := wire.RoomInfo{Room: roomWire(room), Members: make([]wire.Member, 0, len(ms))}
	for _, m := range ms {
		u, err := s.o.Store.GetUser(r.Context(), m.SignPub)
		if err != nil {
			return err
		}
		out.Members = append(out.Members, wire.Member{SignPub: m.SignPub, Handle: u.Handle, Role: string(m.Role),
			Status: string(u.Status), KEMPub: u.KEMPub, KEMSig: u.KEMSig})
	}
	e, err := s.o.Store.Epoch(r.Context(), room.ID, room.Epoch)
	if err != nil {
		return err
	}
	out.Epochs = []wire.Epoch{epochWire(e)}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) addMember(w http.ResponseWriter, r *http.Request, c *caller) error {
	room, me, isMember, err := s.roomFor(r, c)
	if err != nil {
		return err
	}
	if !isMember || me.Role != store.RoomOwner {
		return forbidden("only an owner of the room may add members")
	}
	var req wire.AddMemberRequest
	if err := decode(c.body, &req); err != nil {
		return err
	}
	role := store.RoomRole(req.Role)
	if role != store.RoomOwner && role != store.RoomMember {
		return badRequest("role must be owner or member")
	}
	target, err := s.lookupUser(r, req.Member)
	if err != nil {
		return err
	}
	if target.Status != store.StatusActive {
		return errorf(http.StatusConflict, wire.CodeConflict, "user %s is revoked", target.Handle)
	}
	if len(target.KEMPub) == 0 {
		return errorf(http.StatusConflict, wire.CodeNoKEMKey, "user %s has not published a KEM key yet; they must run 'unibus register' before they can be added", target.Handle)
	}
	if room.RotationPending {
		return errorf(http.StatusConflict, wire.CodeStaleEpoch, "the room has a pending rotation; rotate before adding members")
	}
	ms, err := s.o.Store.ListMembers(r.Context(), room.ID)
	if err != nil {
		return err
	}
	if len(ms) >= MaxMembersPerRoom {
		return errorf(http.StatusConflict, wire.CodeConflict, "room is full (%d members)", MaxMembersPerRoom)
	}
	id, _ := e2e.ParseRoomID(room.ID)
	var keys []store.SealedKey
	for _, ep := range distinctEpochs(req.Keys) {
		ks, err := sealedKeys(c, id, ep, filterEpoch(req.Keys, ep))
		if err != nil {
			return err
		}
		keys = append(keys, ks...)
	}
	for _, k := range keys {
		if k.Member != target.SignPub {
			return badRequest("every sealed key must be for the new member")
		}
	}
	m := store.Member{Room: room.ID, SignPub: target.SignPub, Role: role, AddedBy: c.user.SignPub, AddedAt: s.o.Now()}
	rec := audit.Record{Action: audit.ActionMemberAdd, Room: room.ID, Subject: target.SignPub, Detail: "role=" + string(role) + " handle=" + target.Handle}
	if err := s.audited(r.Context(), c, rec, func() error { return s.o.Store.AddMember(r.Context(), m, keys) }); err != nil {
		return err
	}
	s.o.DataPlane.RoomChanged(room.ID)
	s.log.Info("member added", "room", room.ID, "member", target.Handle, "by", c.key.Short())
	writeJSON(w, http.StatusCreated, wire.Member{SignPub: target.SignPub, Handle: target.Handle, Role: string(role), Status: string(target.Status), KEMPub: target.KEMPub, KEMSig: target.KEMSig})
	return nil
}

// removeMember: an owner's removal must carry the next epoch sealed to
// every remaining member (no window in which the removed member could read
// new traffic). An admin who is not an owner removes without keys, for
// incident response; the room is then marked rotation-pending and the next
// member client rotates before it sends. A member may leave a room the same
// way.
func (s *Server) removeMember(w http.ResponseWriter, r *http.Request, c *caller) error {
	room, me, isMember, err := s.roomFor(r, c)
	if err != nil {
		return err
	}
	target, err := s.lookupUser(r, r.PathValue("user"))
	if err != nil {
		return err
	}
	tm, err := s.o.Store.GetMember(r.Context(), room.ID, target.SignPub)
	if err != nil {
		return err
	}
	owner := isMember && me.Role == store.RoomOwner
	leaving := target.SignPub == c.user.SignPub
	if !owner && !c.isAdmin() && !leaving {
		return forbidden("only an owner of the room (or an admin) may remove members")
	}
	if tm.Role == store.RoomOwner && !c.isAdmin() {
		if err := s.requireAnotherOwner(r, room.ID, target.SignPub); err != nil {
			return err
		}
	}
	var rot *store.Rotation
	if owner && len(c.body) > 0 {
		if rot, err = s.rotation(c, room.ID, store.EpochRemove); err != nil {
			return err
		}
	} else if owner && !leaving {
		return badRequest("a removal by an owner must carry the next epoch's sealed keys for every remaining member")
	}
	detail := "handle=" + target.Handle + " rotation=pending"
	if rot != nil {
		detail = "handle=" + target.Handle + " epoch=" + strconv.FormatUint(rot.Epoch, 10)
	}
	rec := audit.Record{Action: audit.ActionMemberRemove, Room: room.ID, Subject: target.SignPub, Detail: detail}
	if err := s.audited(r.Context(), c, rec, func() error { return s.o.Store.RemoveMember(r.Context(), room.ID, target.SignPub, rot) }); err != nil {
		return err
	}
	// The relay refuses the removed member (and the old epoch) from now
	// on; its listeners in the room go before the answer. A failure here
	// is logged: every node's sweep deletes what is left.
	s.o.DataPlane.RoomChanged(room.ID)
	if err := s.o.DataPlane.MemberLeft(r.Context(), room, target.SignPub); err != nil {
		s.log.Warn("deleting a removed member's listeners failed; the sweep will", "room", room.ID, "member", target.Handle, "err", err)
	}
	s.log.Info("member removed", "room", room.ID, "member", target.Handle, "by", c.key.Short(), "rotated", rot != nil)
	rm, err := s.o.Store.GetRoom(r.Context(), room.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, roomWire(rm))
	return nil
}

func (s *Server) requireAnotherOwner(r *http.Request, room, leaving string) error {
	ms, err := s.o.Store.ListMembers(r.Context(), room)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Role == store.RoomOwner && m.SignPub != leaving {
			return nil
		}
	}
	if len(ms) == 1 {
		return nil // the last member may leave
	}
	return errorf(http.StatusConflict, wire.CodeConflict, "cannot remove the room's last owner while it has other members; add another owner first")
}

// rotate: owners may always rotate; a plain member only to resolve a
// pending rotation (the epoch is then marked 'pending', which tells clients
// to accept a member's seal for it).
func (s *Server) rotate(w http.ResponseWriter, r *http.Request, c *caller) error {
	room, me, isMember, err := s.roomFor(r, c)
	if err != nil {
		return err
	}
	if !isMember {
		return forbidden("only a member of the room may rotate its key")
	}
	reason := store.EpochRotate
	if me.Role != store.RoomOwner {
		if !room.RotationPending {
			return forbidden("only an owner may rotate, unless a rotation is pending")
		}
		reason = store.EpochPending
	}
	rot, err := s.rotation(c, room.ID, reason)
	if err != nil {
		return err
	}
	rec := audit.Record{Action: audit.ActionRoomRotate, Room: room.ID, Detail: "epoch=" + strconv.FormatUint(rot.Epoch, 10) + " reason=" + string(reason)}
	if err := s.audited(r.Context(), c, rec, func() error { return s.o.Store.Rotate(r.Context(), *rot) }); err != nil {
		return err
	}
	s.o.DataPlane.RoomChanged(room.ID)
	s.log.Info("room rotated", "room", room.ID, "epoch", rot.Epoch, "by", c.key.Short())
	rm, err := s.o.Store.GetRoom(r.Context(), room.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, roomWire(rm))
	return nil
}

// rotation reads a RotateRequest body into a store rotation by the caller.
func (s *Server) rotation(c *caller, room string, reason store.EpochReason) (*store.Rotation, error) {
	var req wire.RotateRequest
	if err := decode(c.body, &req); err != nil {
		return nil, err
	}
	id, err := e2e.ParseRoomID(room)
	if err != nil {
		return nil, err
	}
	keys, err := sealedKeys(c, id, req.Epoch, req.Keys)
	if err != nil {
		return nil, err
	}
	return &store.Rotation{Room: room, Epoch: req.Epoch, By: c.user.SignPub, Reason: reason, Keys: keys, At: s.o.Now()}, nil
}

// getKeys answers the caller's sealed key for one epoch (?epoch=N; the
// current one without it) and that epoch's record: a client fetches only
// the epochs it needs, so the number of rotations costs it nothing. An
// epoch the caller holds no key for is 404.
func (s *Server) getKeys(w http.ResponseWriter, r *http.Request, c *caller) error {
	room, _, isMember, err := s.roomFor(r, c)
	if err != nil {
		return err
	}
	if !isMember {
		return forbidden("only members have keys")
	}
	epoch := room.Epoch
	if q := r.URL.Query(); q.Has("epoch") {
		if epoch, err = strconv.ParseUint(q.Get("epoch"), 10, 64); err != nil || epoch == 0 {
			return badRequest("epoch must be a positive integer")
		}
	}
	k, err := s.o.Store.SealedKey(r.Context(), room.ID, c.user.SignPub, epoch)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, wire.CodeNotFound, "you hold no key for epoch %d of this room", epoch)
	}
	if err != nil {
		return err
	}
	e, err := s.o.Store.Epoch(r.Context(), room.ID, epoch)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.Keys{Room: room.ID, Epoch: room.Epoch, RotationPending: room.RotationPending,
		Keys:   []wire.SealedKey{{Room: k.Room, Epoch: k.Epoch, Member: k.Member, Sealer: k.Sealer, Sealed: k.Sealed, Sig: k.Sig}},
		Epochs: []wire.Epoch{epochWire(e)}})
	return nil
}

func epochWire(e store.Epoch) wire.Epoch {
	return wire.Epoch{Epoch: e.Epoch, CreatedBy: e.CreatedBy, Reason: string(e.Reason), CreatedAt: e.CreatedAt}
}

func distinctEpochs(ks []wire.SealedKey) []uint64 {
	var out []uint64
	seen := map[uint64]bool{}
	for _, k := range ks {
		if !seen[k.Epoch] {
			seen[k.Epoch] = true
			out = append(out, k.Epoch)
		}
	}
	return out
}

func filterEpoch(ks []wire.SealedKey, ep uint64) []wire.SealedKey {
	var out []wire.SealedKey
	for _, k := range ks {
		if k.Epoch == ep {
			out = append(out, k)
		}
	}
	return out
}
