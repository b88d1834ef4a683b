package daemon

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/store"
)

func testKey(t testing.TB) identity.SignPub {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id.SignPub()
}

func grantN(v int) natsnode.Grant {
	return natsnode.Grant{Active: true, SignPubHex: strconv.Itoa(v)} // the version travels in the grant
}

func TestGrantCacheServesUntilForgotten(t *testing.T) {
	var c grantCache
	k := testKey(t)
	now := time.Now()
	if _, ok := c.get(k, now); ok {
		t.Fatal("hit on an empty cache")
	}
	s, gen := c.begin(k)
	c.put(s, gen, grantN(1), now)
	if g, ok := c.get(k, now); !ok || g.SignPubHex != "1" {
		t.Fatalf("after put: %+v %v", g, ok)
	}
	c.forget(k)
	if _, ok := c.get(k, now); ok {
		t.Fatal("served after forget")
	}
	s, gen = c.begin(k)
	c.put(s, gen, grantN(2), now)
	if g, ok := c.get(k, now); !ok || g.SignPubHex != "2" {
		t.Fatalf("refilled: %+v %v", g, ok)
	}
	c.clear()
	if _, ok := c.get(k, now); ok {
		t.Fatal("served after clear")
	}
}

// A login that read the store before an access change must not leave a
// grant that is served after the change was forgotten, whether it stores
// it before or after forget runs.
func TestGrantCacheStaleFillIsNeverServed(t *testing.T) {
	var c grantCache
	k := testKey(t)
	now := time.Now()

	s, gen := c.begin(k) // the login reads the generation, then the store…
	c.forget(k)          // …the access changes and is forgotten…
	c.put(s, gen, grantN(1), now)
	if _, ok := c.get(k, now); ok {
		t.Fatal("a grant read before forget was served after it (stored after forget)")
	}

	s, gen = c.begin(k)
	c.put(s, gen, grantN(2), now) // stored before forget
	c.forget(k)
	if _, ok := c.get(k, now); ok {
		t.Fatal("a grant read before forget was served after it (stored before forget)")
	}

	// A slot dropped (or cleared) while a login holds it: what the login
	// stores there is never read.
	s, gen = c.begin(k)
	c.clear()
	c.put(s, gen, grantN(3), now)
	if _, ok := c.get(k, now); ok {
		t.Fatal("a grant stored in a cleared slot was served")
	}
	s, gen = c.begin(k)
	other, _ := c.begin(k)
	c.drop(k, other)
	c.put(s, gen, grantN(4), now)
	if _, ok := c.get(k, now); ok {
		t.Fatal("a grant stored in a dropped slot was served")
	}
}

func TestGrantCacheExpires(t *testing.T) {
	var c grantCache
	k := testKey(t)
	now := time.Now()
	s, gen := c.begin(k)
	c.put(s, gen, grantN(1), now)
	if _, ok := c.get(k, now.Add(grantTTL-time.Nanosecond)); !ok {
		t.Error("expired early")
	}
	if _, ok := c.get(k, now.Add(grantTTL)); ok {
		t.Error("served at its expiry")
	}
}

func TestGrantCacheDropLeavesNothing(t *testing.T) {
	var c grantCache
	for range 100 {
		k := testKey(t)
		s, _ := c.begin(k)
		c.drop(k, s)
	}
	n := 0
	c.slots.Range(func(any, any) bool { n++; return true })
	if n != 0 || c.n.Load() != 0 {
		t.Fatalf("%d slots (count %d) after dropping every login", n, c.n.Load())
	}
}

func TestGrantCacheBounded(t *testing.T) {
	var c grantCache
	now := time.Now()
	var k identity.SignPub
	for i := range maxGrantSlots + 10 {
		k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
		s, gen := c.begin(k)
		c.put(s, gen, grantN(i), now)
	}
	n := 0
	c.slots.Range(func(any, any) bool { n++; return true })
	if n > maxGrantSlots {
		t.Fatalf("%d slots, bound %d", n, maxGrantSlots)
	}
}

// TestGrantCacheLinearizable runs logins that fill the cache from a
// versioned "store" against writers that change it and then forget. After
// forget returns, the writer must never be served a version older than
// its own write (run with -race).
func TestGrantCacheLinearizable(t *testing.T) {
	var c grantCache
	keys := []identity.SignPub{testKey(t), testKey(t), testKey(t)}
	var versions [3]atomic.Int64
	login := func(i int) natsnode.Grant {
		now := time.Now()
		if g, ok := c.get(keys[i], now); ok {
			return g
		}
		s, gen := c.begin(keys[i])
		g := grantN(int(versions[i].Load())) // the store read, which takes a while
		runtime.Gosched()
		c.put(s, gen, g, now)
		return g
	}
	stop := make(chan struct{})
	var readers, writers sync.WaitGroup
	for r := range 4 {
		readers.Go(func() {
			for n := r; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				login(n % len(keys))
			}
		})
	}
	var bad atomic.Int64
	for w := range 2 {
		writers.Go(func() {
			for n := range 2000 {
				i := (n + w) % len(keys)
				v := versions[i].Add(1) // the store write…
				c.forget(keys[i])       // …then forget, as the API and the watch do
				got, _ := strconv.Atoi(login(i).SignPubHex)
				if int64(got) < v {
					bad.Add(1)
				}
			}
		})
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d logins after forget were served a grant older than the write", n)
	}
}

// userStore is a store with one user whose status and rooms the test
// changes behind the authorizer's back (as the admin tool does to the
// SQLite file), counting reads. Its change version is constant (as a kv
// store's, whose watch reports every change), or moves on every change
// (as SQLite's does), or fails.
type userStore struct {
	store.Store // unused methods panic
	mu          sync.Mutex
	u           store.User
	rooms       []string
	reads       int
	version     uint64
	moves       bool  // set moves the version
	versionErr  error // ChangeVersion fails with it
}

func (s *userStore) GetUser(_ context.Context, signPub string) (store.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	if signPub != s.u.SignPub {
		return store.User{}, store.ErrNotFound
	}
	return s.u, nil
}

func (s *userStore) RoomIDs(context.Context, string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	return append([]string(nil), s.rooms...), nil
}

func (s *userStore) ChangeVersion(context.Context) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version, s.versionErr
}

func (s *userStore) set(status store.Status, rooms ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.u.Status, s.rooms = status, rooms
	if s.moves {
		s.version++
	}
}

func (s *userStore) readCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

func newUserStore(t *testing.T) (*userStore, *identity.Identity) {
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return &userStore{u: store.User{SignPub: id.SignPub().String(), Status: store.StatusActive}, rooms: []string{"r1"}, version: 1}, id
}

// Where the store's change version moves on every commit (SQLite), a
// revocation written behind the cache by another process, which nothing
// forgets yet, denies the next login: the version moved, so the user is
// read again.
func TestAuthorizerRereadsUserWhenVersionMoves(t *testing.T) {
	st, id := newUserStore(t)
	st.moves = true
	a := &storeAuthorizer{}
	a.set(st)
	ctx := context.Background()
	for range 3 {
		g, err := a.Grant(ctx, id.NKey())
		if err != nil || !g.Active || g.SignPubHex != id.SignPub().String() {
			t.Fatalf("active member: %+v %v", g, err)
		}
	}
	if !GrantCachedKey(a, id.SignPub()) {
		t.Fatal("grant not cached")
	}
	before := st.readCount()
	if _, err := a.Grant(ctx, id.NKey()); err != nil {
		t.Fatal(err)
	}
	if st.readCount() != before {
		t.Errorf("with the version unchanged, a cached grant read the store (%d reads)", st.readCount()-before)
	}
	st.set(store.StatusRevoked)
	if g, err := a.Grant(ctx, id.NKey()); err != nil || g.Active {
		t.Fatalf("revoked in the store behind the cache: %+v %v, want inactive", g, err)
	}
	if GrantCachedKey(a, id.SignPub()) {
		t.Fatal("a revoked user's grant stayed cached")
	}
}

// Without a change version (ChangeVersion fails), a cached grant's user is
// read at every login.
func TestAuthorizerRereadsUserWithoutVersion(t *testing.T) {
	st, id := newUserStore(t)
	st.versionErr = store.ErrUnavailable
	a := &storeAuthorizer{}
	a.set(st)
	ctx := context.Background()
	a.Grant(ctx, id.NKey())
	st.mu.Lock()
	st.u.Status = store.StatusRevoked // behind the cache, version unchanged
	st.mu.Unlock()
	if g, err := a.Grant(ctx, id.NKey()); err != nil || g.Active {
		t.Fatalf("revoked behind the cache without a version: %+v %v, want inactive", g, err)
	}
}

// A revocation forgotten through the kick path (the API) or the watch
// denies the next login where the version is constant (kv), and a cached
// grant is served there without a read.
func TestAuthorizerForgetThenDeny(t *testing.T) {
	st, id := newUserStore(t)
	a := &storeAuthorizer{}
	a.set(st)
	ctx := context.Background()
	a.Grant(ctx, id.NKey())
	before := st.readCount()
	if g, err := a.Grant(ctx, id.NKey()); err != nil || !g.Active {
		t.Fatalf("cached grant: %+v %v", g, err)
	}
	if st.readCount() != before {
		t.Errorf("a cached grant with a constant version read the store (%d reads)", st.readCount()-before)
	}
	st.set(store.StatusRevoked)
	a.forget(id.NKey())
	if g, err := a.Grant(ctx, id.NKey()); err != nil || g.Active {
		t.Fatalf("after the revocation was forgotten: %+v %v, want inactive", g, err)
	}
	// An unknown key is an inactive grant, not an authorizer failure (so
	// the refused-login throttle counts it); denials are never cached.
	other, _ := identity.Generate()
	for range 2 {
		if g, err := a.Grant(ctx, other.NKey()); err != nil || g.Active {
			t.Fatalf("unknown user: %+v %v, want an inactive grant", g, err)
		}
	}
	if GrantCachedKey(a, other.SignPub()) || GrantCachedKey(a, id.SignPub()) {
		t.Fatal("a denial was cached")
	}
}

// GrantCachedKey is GrantCached on an authorizer.
func GrantCachedKey(a *storeAuthorizer, k identity.SignPub) bool {
	_, ok := a.cache.get(k, time.Now())
	return ok
}
