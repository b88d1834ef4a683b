package daemon

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/blobstore"
	"github.com/unibus/unibus/internal/store"
)

// lazyStore is the store the API serves from while the real one opens (a
// cold cluster's KV store waits for a quorum): until set, every call fails
// with store.ErrUnavailable, which denies (503, login refused).
type lazyStore struct{ p atomic.Pointer[store.Store] }

func (l *lazyStore) set(s store.Store) { l.p.Store(&s) }

func (l *lazyStore) get() (store.Store, error) {
	if p := l.p.Load(); p != nil {
		return *p, nil
	}
	return nil, fmt.Errorf("store not open yet (waiting for a JetStream quorum): %w", store.ErrUnavailable)
}

var _ store.Store = (*lazyStore)(nil)

func (l *lazyStore) AddUser(ctx context.Context, u store.User) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.AddUser(ctx, u)
}

func (l *lazyStore) GetUser(ctx context.Context, signPub string) (store.User, error) {
	s, err := l.get()
	if err != nil {
		return store.User{}, err
	}
	return s.GetUser(ctx, signPub)
}

func (l *lazyStore) GetUserByHandle(ctx context.Context, handle string) (store.User, error) {
	s, err := l.get()
	if err != nil {
		return store.User{}, err
	}
	return s.GetUserByHandle(ctx, handle)
}

func (l *lazyStore) ListUsers(ctx context.Context) ([]store.User, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.ListUsers(ctx)
}

func (l *lazyStore) RevokeUser(ctx context.Context, signPub string, at time.Time) (store.User, error) {
	s, err := l.get()
	if err != nil {
		return store.User{}, err
	}
	return s.RevokeUser(ctx, signPub, at)
}

func (l *lazyStore) SetKEMKey(ctx context.Context, signPub string, kemPub, sig []byte, at time.Time) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.SetKEMKey(ctx, signPub, kemPub, sig, at)
}

func (l *lazyStore) CountActiveAdmins(ctx context.Context) (int, error) {
	s, err := l.get()
	if err != nil {
		return 0, err
	}
	return s.CountActiveAdmins(ctx)
}

func (l *lazyStore) CreateRoom(ctx context.Context, r store.Room, owner store.Member, key store.SealedKey) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.CreateRoom(ctx, r, owner, key)
}

func (l *lazyStore) GetRoom(ctx context.Context, id string) (store.Room, error) {
	s, err := l.get()
	if err != nil {
		return store.Room{}, err
	}
	return s.GetRoom(ctx, id)
}

func (l *lazyStore) ListRooms(ctx context.Context, signPub string) ([]store.Room, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.ListRooms(ctx, signPub)
}

func (l *lazyStore) RoomIDs(ctx context.Context, signPub string) ([]string, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.RoomIDs(ctx, signPub)
}

func (l *lazyStore) ListMembers(ctx context.Context, room string) ([]store.Member, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.ListMembers(ctx, room)
}

func (l *lazyStore) GetMember(ctx context.Context, room, signPub string) (store.Member, error) {
	s, err := l.get()
	if err != nil {
		return store.Member{}, err
	}
	return s.GetMember(ctx, room, signPub)
}

func (l *lazyStore) AddMember(ctx context.Context, m store.Member, keys []store.SealedKey) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.AddMember(ctx, m, keys)
}

func (l *lazyStore) RemoveMember(ctx context.Context, room, signPub string, rot *store.Rotation) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.RemoveMember(ctx, room, signPub, rot)
}

func (l *lazyStore) Rotate(ctx context.Context, rot store.Rotation) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.Rotate(ctx, rot)
}

func (l *lazyStore) SealedKeys(ctx context.Context, room, member string) ([]store.SealedKey, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.SealedKeys(ctx, room, member)
}

func (l *lazyStore) Epochs(ctx context.Context, room string) ([]store.Epoch, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.Epochs(ctx, room)
}

func (l *lazyStore) UseNonce(ctx context.Context, keyID, nonce string, now, expires time.Time) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.UseNonce(ctx, keyID, nonce, now, expires)
}

func (l *lazyStore) AppendAudit(ctx context.Context, r audit.Record) (audit.Entry, error) {
	s, err := l.get()
	if err != nil {
		return audit.Entry{}, err
	}
	return s.AppendAudit(ctx, r)
}

func (l *lazyStore) AuditEntries(ctx context.Context, after uint64, limit int) ([]audit.Entry, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.AuditEntries(ctx, after, limit)
}

// Close closes the store if it was opened.
func (l *lazyStore) Close() error {
	if p := l.p.Load(); p != nil {
		return (*p).Close()
	}
	return nil
}

// lazyBlobs is lazyStore for the blob store.
type lazyBlobs struct {
	p atomic.Pointer[blobstore.Store]
}

func (l *lazyBlobs) set(s blobstore.Store) { l.p.Store(&s) }

func (l *lazyBlobs) get() (blobstore.Store, error) {
	if p := l.p.Load(); p != nil {
		return *p, nil
	}
	return nil, fmt.Errorf("blob store not open yet: %w", store.ErrUnavailable)
}

func (l *lazyBlobs) Put(ctx context.Context, room, id string, r io.Reader, max int64) (blobstore.Info, error) {
	s, err := l.get()
	if err != nil {
		return blobstore.Info{}, err
	}
	return s.Put(ctx, room, id, r, max)
}

func (l *lazyBlobs) Open(ctx context.Context, room, id string) (io.ReadCloser, blobstore.Info, error) {
	s, err := l.get()
	if err != nil {
		return nil, blobstore.Info{}, err
	}
	return s.Open(ctx, room, id)
}

func (l *lazyBlobs) Stat(ctx context.Context, room, id string) (blobstore.Info, error) {
	s, err := l.get()
	if err != nil {
		return blobstore.Info{}, err
	}
	return s.Stat(ctx, room, id)
}
