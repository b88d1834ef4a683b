package client

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/wire"
)

// ErrAmbiguousRoom is returned when a room name matches several rooms.
var ErrAmbiguousRoom = errors.New("several of your rooms have this name; use the room id")

// roomState is what the client knows of a room: its info and the room keys
// it has opened and accepted, by epoch.
type roomState struct {
	id      e2e.RoomID
	info    wire.RoomInfo
	members map[identity.SignPub]wire.Member
	keys    map[uint64]*e2e.RoomKey
	fetched time.Time
}

// CreateRoom creates a room owned by the caller: it picks the id, makes the
// epoch-1 key and seals it to itself.
func (c *Client) CreateRoom(ctx context.Context, name string) (Room, error) {
	id, err := e2e.NewRoomID()
	if err != nil {
		return Room{}, err
	}
	key, err := e2e.NewRoomKey(nil)
	if err != nil {
		return Room{}, err
	}
	sk, err := e2e.SealRoomKey(c.id, id, 1, c.id.SignPub(), c.id.KEMPub(), key)
	if err != nil {
		return Room{}, err
	}
	var room wire.Room
	if err := c.do(ctx, "POST", "/v1/rooms", wire.CreateRoomRequest{ID: id.String(), Name: name, Key: sealedWire(sk)}, &room); err != nil {
		return Room{}, err
	}
	return roomFromWire(room), nil
}

// ListRooms lists the caller's rooms, by name.
func (c *Client) ListRooms(ctx context.Context) ([]Room, error) {
	var l wire.RoomList
	err := c.do(ctx, "GET", "/v1/rooms", nil, &l)
	return roomsFromWire(l.Rooms), err
}

// ResolveRoom turns a room id or name into the id of one of the caller's rooms.
func (c *Client) ResolveRoom(ctx context.Context, idOrName string) (string, error) {
	if _, err := e2e.ParseRoomID(idOrName); err == nil {
		return idOrName, nil
	}
	rooms, err := c.ListRooms(ctx)
	if err != nil {
		return "", err
	}
	found := ""
	for _, r := range rooms {
		if r.Name == idOrName {
			if found != "" {
				return "", fmt.Errorf("%q: %w", idOrName, ErrAmbiguousRoom)
			}
			found = r.ID
		}
	}
	if found == "" {
		return "", fmt.Errorf("no room named %q among your rooms", idOrName)
	}
	return found, nil
}

// RoomInfo returns the room (by id) with its members and epochs.
func (c *Client) RoomInfo(ctx context.Context, room string) (RoomInfo, error) {
	ri, err := c.roomInfo(ctx, room)
	return roomInfoFromWire(ri), err
}

// roomInfo is RoomInfo in the API's form, which the room state and the
// checks before sealing work on.
func (c *Client) roomInfo(ctx context.Context, room string) (wire.RoomInfo, error) {
	var ri wire.RoomInfo
	err := c.do(ctx, "GET", "/v1/rooms/"+url.PathEscape(room), nil, &ri)
	return ri, err
}

// state returns the room's state, refreshed when older than the cache TTL
// (or when force is set): its info and the current epoch's key, opened
// and checked. Keys of other epochs are fetched when a message needs one
// (epochKey), so a room's number of rotations costs a client nothing.
func (c *Client) state(ctx context.Context, room string, force bool) (*roomState, error) {
	c.mu.Lock()
	st := c.rooms[room]
	c.mu.Unlock()
	if st != nil && !force && time.Since(st.fetched) < c.cfg.RoomCacheTTL {
		return st, nil
	}
	id, err := e2e.ParseRoomID(room)
	if err != nil {
		return nil, err
	}
	info, err := c.roomInfo(ctx, room)
	if err != nil {
		return nil, err
	}
	var ks wire.Keys
	if err := c.do(ctx, "GET", "/v1/rooms/"+room+"/keys", nil, &ks); err != nil && !IsCode(err, wire.CodeNotFound) {
		return nil, err
	}
	ns := &roomState{id: id, info: info, members: map[identity.SignPub]wire.Member{}, keys: map[uint64]*e2e.RoomKey{}, fetched: time.Now()}
	for _, m := range info.Members {
		if sp, err := identity.ParseSignPub(m.SignPub); err == nil {
			ns.members[sp] = m
		}
	}
	c.observe(info.Members)
	c.mu.Lock()
	if cur := c.rooms[room]; cur != nil { // keys already accepted stay accepted
		for ep, k := range cur.keys {
			ns.keys[ep] = k
		}
	}
	c.mu.Unlock()
	c.acceptKeys(id, ns, append(info.Epochs, ks.Epochs...), ks.Keys, room)
	c.mu.Lock()
	c.rooms[room] = ns
	c.mu.Unlock()
	return ns, nil
}

// acceptKeys opens and checks sealed keys into st.keys (st is not yet
// published).
func (c *Client) acceptKeys(id e2e.RoomID, st *roomState, epochs []wire.Epoch, keys []wire.SealedKey, room string) {
	creators := map[uint64]string{}
	for _, e := range epochs {
		creators[e.Epoch] = e.CreatedBy
	}
	for _, wk := range keys {
		if _, ok := st.keys[wk.Epoch]; ok {
			continue
		}
		k, err := c.acceptKey(id, st, creators, wk)
		if err != nil {
			c.log.Warn("refusing a sealed room key", "room", room, "epoch", wk.Epoch, "err", err)
			continue
		}
		st.keys[wk.Epoch] = k
	}
}

// epochKey returns the room key of one epoch, fetching it if the room's
// state lacks it, and keeps it.
func (c *Client) epochKey(ctx context.Context, room string, epoch uint64) (*e2e.RoomKey, error) {
	st, err := c.state(ctx, room, false)
	if err != nil {
		return nil, err
	}
	if k, ok := st.keys[epoch]; ok {
		return k, nil
	}
	var ks wire.Keys
	if err := c.do(ctx, "GET", "/v1/rooms/"+room+"/keys?epoch="+strconv.FormatUint(epoch, 10), nil, &ks); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.rooms[room]
	if cur == nil {
		cur = st
	}
	ns := *cur // a published roomState is never modified: copy it
	ns.keys = make(map[uint64]*e2e.RoomKey, len(cur.keys)+1)
	for ep, k := range cur.keys {
		ns.keys[ep] = k
	}
	c.acceptKeys(ns.id, &ns, ks.Epochs, ks.Keys, room)
	c.rooms[room] = &ns
	k, ok := ns.keys[epoch]
	if !ok {
		return nil, fmt.Errorf("the key of epoch %d was refused", epoch)
	}
	return k, nil
}

// acceptKey opens a sealed key and applies the acceptance rule: the
// signature verifies, it is addressed to us, and the sealer is an owner of
// the room, the member who created that epoch, or ourselves.
func (c *Client) acceptKey(id e2e.RoomID, st *roomState, creators map[uint64]string, wk wire.SealedKey) (*e2e.RoomKey, error) {
	sealer, err := identity.ParseSignPub(wk.Sealer)
	if err != nil {
		return nil, err
	}
	member, err := identity.ParseSignPub(wk.Member)
	if err != nil {
		return nil, err
	}
	if wk.Room != id.String() {
		return nil, fmt.Errorf("key sealed for another room")
	}
	m, isMember := st.members[sealer]
	allowed := sealer.Equal(c.id.SignPub()) || (isMember && RoomRole(m.Role) == RoomOwner) || creators[wk.Epoch] == sealer.String()
	if !allowed {
		return nil, fmt.Errorf("sealer %s is not an owner of the room", sealer.Short())
	}
	return e2e.OpenRoomKey(c.id, e2e.SealedKey{Room: id, Epoch: wk.Epoch, Member: member, Sealer: sealer, Sealed: wk.Sealed, Sig: wk.Sig})
}

func sealedWire(sk e2e.SealedKey) wire.SealedKey {
	return wire.SealedKey{Room: sk.Room.String(), Epoch: sk.Epoch, Member: sk.Member.String(), Sealer: sk.Sealer.String(), Sealed: sk.Sealed, Sig: sk.Sig}
}

// AddMember adds a user (handle or sign-pub) to the room with the given
// role, sealing the current epoch's key to the user's published KEM key
// after checking its binding signature and the pinned keys (a changed key
// is a KeyChangedError; nothing is sealed).
func (c *Client) AddMember(ctx context.Context, room, user string, role RoomRole) error {
	st, err := c.state(ctx, room, true)
	if err != nil {
		return err
	}
	if st.info.Room.RotationPending {
		if err := c.Rotate(ctx, room); err != nil {
			return err
		}
		if st, err = c.state(ctx, room, true); err != nil {
			return err
		}
	}
	u, err := c.User(ctx, user)
	if err != nil {
		return err
	}
	if _, err := answerFor(user, u); err != nil {
		return err
	}
	sp, kp, err := c.sealable(u.Handle, u.SignPub, u.KEMPub, u.KEMSig)
	if err != nil {
		return err
	}
	ep := st.info.Room.Epoch
	key, ok := st.keys[ep]
	if !ok {
		return fmt.Errorf("you hold no key for the room's current epoch %d", ep)
	}
	sk, err := e2e.SealRoomKey(c.id, st.id, ep, sp, kp, key)
	if err != nil {
		return err
	}
	req := wire.AddMemberRequest{Member: u.SignPub, Role: string(role), Keys: []wire.SealedKey{sealedWire(sk)}}
	return c.do(ctx, "POST", "/v1/rooms/"+room+"/members", req, nil)
}

// nextEpoch makes a fresh key for epoch current+1 sealed to every member
// except the excluded one. It needs the members' published keys only, not
// the room's current key; each is checked against the pins first, so a
// swapped key stops the rotation before anything is sealed or sent.
func (c *Client) nextEpoch(id e2e.RoomID, info wire.RoomInfo, exclude string) (wire.RotateRequest, *e2e.RoomKey, error) {
	key, err := e2e.NewRoomKey(nil)
	if err != nil {
		return wire.RotateRequest{}, nil, err
	}
	req := wire.RotateRequest{Epoch: info.Room.Epoch + 1}
	for _, m := range info.Members {
		if m.SignPub == exclude {
			continue
		}
		sp, kp, err := c.sealable(m.Handle, m.SignPub, m.KEMPub, m.KEMSig)
		if err != nil {
			return req, nil, err
		}
		sk, err := e2e.SealRoomKey(c.id, id, req.Epoch, sp, kp, key)
		if err != nil {
			return req, nil, err
		}
		req.Keys = append(req.Keys, sealedWire(sk))
	}
	return req, key, nil
}

// RemoveMember removes a user from the room and, as an owner, rotates in the
// same request: the next epoch's key is sealed to every remaining member, so
// nothing sent afterwards can be opened by the removed one. An admin who is
// not an owner removes without keys; the room is then rotation-pending.
func (c *Client) RemoveMember(ctx context.Context, room, user string) error {
	id, err := e2e.ParseRoomID(room)
	if err != nil {
		return err
	}
	info, err := c.roomInfo(ctx, room)
	if err != nil {
		return err
	}
	u, err := c.User(ctx, user)
	if err != nil {
		return err
	}
	if _, err := answerFor(user, u); err != nil {
		return err
	}
	if u.SignPub != c.id.SignPub().String() {
		// Remove the user the caller pinned under this handle, no one else.
		if _, err := c.pins.check(pin{handle: u.Handle, signPub: u.SignPub}); err != nil {
			return err
		}
	}
	path := "/v1/rooms/" + room + "/members/" + u.SignPub
	me := c.id.SignPub().String()
	owner := false
	for _, m := range info.Members {
		owner = owner || (m.SignPub == me && RoomRole(m.Role) == RoomOwner)
	}
	if !owner || u.SignPub == me {
		return c.do(ctx, "DELETE", path, nil, nil)
	}
	req, key, err := c.nextEpoch(id, info, u.SignPub)
	if err != nil {
		return err
	}
	if err := c.do(ctx, "DELETE", path, req, nil); err != nil {
		return err
	}
	c.remember(id, req.Epoch, key)
	return nil
}

// Rotate moves the room to a fresh key sealed to every current member.
func (c *Client) Rotate(ctx context.Context, room string) error {
	id, err := e2e.ParseRoomID(room)
	if err != nil {
		return err
	}
	info, err := c.roomInfo(ctx, room)
	if err != nil {
		return err
	}
	req, key, err := c.nextEpoch(id, info, "")
	if err != nil {
		return err
	}
	if err := c.do(ctx, "POST", "/v1/rooms/"+room+"/rotate", req, nil); err != nil {
		return err
	}
	c.remember(id, req.Epoch, key)
	return nil
}

// remember records a key we made ourselves and forces the next use to
// refresh the room's info.
// A roomState is never modified once published, so it is copied.
func (c *Client) remember(id e2e.RoomID, epoch uint64, key *e2e.RoomKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ns := roomState{id: id, keys: map[uint64]*e2e.RoomKey{}}
	if st := c.rooms[id.String()]; st != nil {
		ns = *st
		ns.keys = make(map[uint64]*e2e.RoomKey, len(st.keys)+1)
		for ep, k := range st.keys {
			ns.keys[ep] = k
		}
	}
	ns.keys[epoch] = key
	ns.fetched = time.Time{}
	c.rooms[id.String()] = &ns
}
