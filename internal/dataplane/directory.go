package dataplane

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Room is what the data plane knows of a room: enough to decide, for each
// message, whether its sender may publish it and where it is stored.
type Room struct {
	ID        string
	Epoch     uint64          // the current epoch: the only one a new message may use
	Pending   bool            // a rotation is due (an admin removed a member): no message until it is done
	Members   map[string]bool // sign-pub → true; read-only once returned
	MaxAge    time.Duration   // retention of each message; 0 = none
	Dedicated bool            // its messages live in ROOM_<id>, not in the shared stream
}

// ErrNoRoom is returned by a Source for a room that does not exist.
var ErrNoRoom = errors.New("no such room")

// Source reads the control plane's state for the Directory. Its errors
// other than ErrNoRoom deny (fail closed).
type Source interface {
	Room(ctx context.Context, id string) (Room, error)
	UserActive(ctx context.Context, signPub string) (bool, error)
}

// Directory caches rooms and users' status from a Source. It is
// invalidated by whoever watches the control plane's changes (Forget*),
// and each entry also expires after a TTL, so a missed notification heals.
// A read that raced with an invalidation is served to its caller but not
// kept. It is safe for concurrent use.
type Directory struct {
	src Source
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	gen   uint64 // bumped by every Forget: a load that saw another gen is not kept
	rooms map[string]roomEntry
	users map[string]userEntry
}

type roomEntry struct {
	room Room
	at   time.Time
}

type userEntry struct {
	active bool
	at     time.Time
}

// Bounds on the cache; when full, an arbitrary entry makes room.
const (
	maxCachedRooms = 1 << 16
	maxCachedUsers = 1 << 16
	// DefaultDirectoryTTL is how long an entry is served without a
	// notification: the bound on how long a missed notification lasts.
	DefaultDirectoryTTL = 30 * time.Second
)

// NewDirectory returns a Directory over src; ttl 0 means
// DefaultDirectoryTTL, now nil means time.Now.
func NewDirectory(src Source, ttl time.Duration, now func() time.Time) *Directory {
	if ttl <= 0 {
		ttl = DefaultDirectoryTTL
	}
	if now == nil {
		now = time.Now
	}
	return &Directory{src: src, ttl: ttl, now: now, rooms: map[string]roomEntry{}, users: map[string]userEntry{}}
}

// Room returns the room's state, from the cache or the Source.
func (d *Directory) Room(ctx context.Context, id string) (Room, error) {
	d.mu.Lock()
	e, ok := d.rooms[id]
	gen := d.gen
	d.mu.Unlock()
	if ok && d.now().Sub(e.at) < d.ttl {
		return e.room, nil
	}
	r, err := d.src.Room(ctx, id)
	if err != nil {
		return Room{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gen == gen {
		if len(d.rooms) >= maxCachedRooms {
			evictOne(d.rooms)
		}
		d.rooms[id] = roomEntry{room: r, at: d.now()}
	}
	return r, nil
}

// UserActive reports whether the user is registered and not revoked.
func (d *Directory) UserActive(ctx context.Context, signPub string) (bool, error) {
	d.mu.Lock()
	e, ok := d.users[signPub]
	gen := d.gen
	d.mu.Unlock()
	if ok && d.now().Sub(e.at) < d.ttl {
		return e.active, nil
	}
	active, err := d.src.UserActive(ctx, signPub)
	if err != nil {
		return false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gen == gen {
		if len(d.users) >= maxCachedUsers {
			evictOne(d.users)
		}
		d.users[signPub] = userEntry{active: active, at: d.now()}
	}
	return active, nil
}

// ForgetRoom drops the room's entry: its members, epoch or settings changed.
func (d *Directory) ForgetRoom(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	delete(d.rooms, id)
}

// ForgetUser drops the user's entry: its status changed.
func (d *Directory) ForgetUser(signPub string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	delete(d.users, signPub)
}

// ForgetAll drops every entry: anything may have changed.
func (d *Directory) ForgetAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	clear(d.rooms)
	clear(d.users)
}

func evictOne[V any](m map[string]V) {
	for k := range m {
		delete(m, k)
		return
	}
}
