package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/store"
)

// errHeld is what the write that holds the committer returns: its batch
// commits nothing, so the commit counters count only the batches a test
// builds behind it.
var errHeld = errors.New("held")

// holdCommitter runs a write that keeps the committer busy until release
// is called, so that the writes queued meanwhile (see enqueue) form the
// next batch, in the order they were queued.
func holdCommitter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	entered, gate := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- s.write(context.Background(), "hold the committer", func(context.Context, *sql.Tx) error {
			close(entered)
			<-gate
			return errHeld
		})
	}()
	<-entered
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(gate)
			if err := <-errc; !errors.Is(err, errHeld) {
				t.Errorf("the holding write: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// enqueue calls f, one write method, in a goroutine and returns once its
// write is queued, so that writes enqueued one after another are queued
// in that order.
func enqueue(t *testing.T, s *Store, f func() error) <-chan error {
	t.Helper()
	n := s.queuedWrites()
	errc := make(chan error, 1)
	go func() { errc <- f() }()
	harness.Eventually(t, 10*time.Second, func() bool { return s.queuedWrites() > n }, "write queued")
	return errc
}

// commitsSince reports the commits and committed writes since before.
func commitsSince(s *Store, before [2]uint64) (commits, writes uint64) {
	c, w := s.commitStats()
	return c - before[0], w - before[1]
}

func stats(s *Store) [2]uint64 {
	c, w := s.commitStats()
	return [2]uint64{c, w}
}

func user(signPub, handle string) store.User {
	now := time.Now()
	return store.User{SignPub: signPub, Handle: handle, Role: store.RoleMember, Status: store.StatusActive, CreatedAt: now, UpdatedAt: now}
}

func key(room, member string, epoch uint64) store.SealedKey {
	return store.SealedKey{Room: room, Epoch: epoch, Member: member, Sealer: member, Sealed: []byte{byte(epoch)}, Sig: []byte{1}}
}

// TestBatchKeepsEachWritesRules builds one batch of writes whose rules
// depend on each other — a second registration of the same key or handle,
// a room created by a user registered earlier in the batch, two rotations
// to the same epoch, a nonce used twice, a write that fails after writing
// — and checks that exactly the writes a serial run would accept
// succeed, in one commit, that the others get their own errors, and that
// the database and Watch hold exactly the effects of the ones that
// succeeded.
func TestBatchKeepsEachWritesRules(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "unibus.db"))
	ctx := t.Context()
	alice, bob, carol := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("c", 64)
	room := strings.Repeat("d", 32)
	now := time.Now()

	var mu sync.Mutex
	var changes []store.Change
	if err := s.Watch(ctx, func(c store.Change) {
		mu.Lock()
		changes = append(changes, c)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}

	release := holdCommitter(t, s)
	before := stats(s)
	writes := []struct {
		name string
		f    func() error
		want error // nil: succeeds
	}{
		{"add alice", func() error { return s.AddUser(ctx, user(alice, "alice")) }, nil},
		{"add alice again", func() error { return s.AddUser(ctx, user(alice, "alice2")) }, store.ErrAlreadyRegistered},
		{"add bob as alice", func() error { return s.AddUser(ctx, user(bob, "alice")) }, store.ErrHandleTaken},
		{"add bob", func() error { return s.AddUser(ctx, user(bob, "bob")) }, nil},
		{"create room", func() error {
			return s.CreateRoom(ctx, store.Room{ID: room, Name: "ops", CreatedBy: alice, CreatedAt: now},
				store.Member{SignPub: alice, AddedBy: alice, AddedAt: now}, key(room, alice, 1))
		}, nil},
		{"create room again", func() error {
			return s.CreateRoom(ctx, store.Room{ID: room, Name: "ops", CreatedBy: bob, CreatedAt: now},
				store.Member{SignPub: bob, AddedBy: bob, AddedAt: now}, key(room, bob, 1))
		}, store.ErrRoomExists},
		{"rotate to 3", func() error {
			return s.Rotate(ctx, store.Rotation{Room: room, Epoch: 3, By: alice, Keys: []store.SealedKey{key(room, alice, 3)}, At: now})
		}, store.ErrStaleEpoch},
		{"rotate to 2", func() error {
			return s.Rotate(ctx, store.Rotation{Room: room, Epoch: 2, By: alice, Keys: []store.SealedKey{key(room, alice, 2)}, At: now})
		}, nil},
		{"rotate to 2 again", func() error {
			return s.Rotate(ctx, store.Rotation{Room: room, Epoch: 2, By: alice, Keys: []store.SealedKey{key(room, alice, 2)}, At: now})
		}, store.ErrStaleEpoch},
		{"add bob to the room at epoch 1", func() error {
			return s.AddMember(ctx, store.Member{Room: room, SignPub: bob, Role: store.RoomMember, AddedBy: alice, AddedAt: now},
				[]store.SealedKey{key(room, bob, 1)})
		}, store.ErrIncompleteRotation},
		{"add bob to the room", func() error {
			return s.AddMember(ctx, store.Member{Room: room, SignPub: bob, Role: store.RoomMember, AddedBy: alice, AddedAt: now},
				[]store.SealedKey{key(room, bob, 2)})
		}, nil},
		{"add carol, unregistered", func() error {
			return s.AddMember(ctx, store.Member{Room: room, SignPub: carol, Role: store.RoomMember, AddedBy: alice, AddedAt: now},
				[]store.SealedKey{key(room, carol, 2)})
		}, store.ErrNotFound},
		{"use a nonce", func() error { return s.UseNonce(ctx, alice, "n", now, now.Add(time.Minute)) }, nil},
		{"use it again", func() error { return s.UseNonce(ctx, alice, "n", now, now.Add(time.Minute)) }, store.ErrReplay},
		{"register carol, then fail", func() error {
			return s.write(ctx, "register carol, then fail", func(ctx context.Context, tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO users (`+userColumns+`) VALUES (?, 'carol', 'member', 'active', NULL, NULL, 0, 0)`, carol); err != nil {
					return err
				}
				return store.ErrNotMember // any rule's error
			})
		}, store.ErrNotMember},
		{"revoke bob", func() error { _, err := s.RevokeUser(ctx, bob, now); return err }, nil},
		{"revoke bob again", func() error { _, err := s.RevokeUser(ctx, bob, now); return err }, nil},
		{"kem key of carol", func() error { return s.SetKEMKey(ctx, carol, []byte{1}, []byte{2}, now) }, store.ErrNotFound},
	}
	results := make([]<-chan error, len(writes))
	for i, w := range writes {
		results[i] = enqueue(t, s, w.f)
	}
	release()
	for i, w := range writes {
		err := <-results[i]
		if w.want == nil && err != nil || w.want != nil && !errors.Is(err, w.want) {
			t.Errorf("%s: %v, want %v", w.name, err, w.want)
		}
		if errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: a rule's failure is reported as unavailability: %v", w.name, err)
		}
	}
	if commits, n := commitsSince(s, before); commits != 1 || n != 8 {
		t.Errorf("%d commits of %d writes, want the 8 that succeed in 1", commits, n)
	}

	// The database holds exactly the effects of the writes that succeeded.
	users, err := s.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range users {
		got = append(got, u.Handle+":"+string(u.Status))
	}
	if want := []string{"alice:active", "bob:revoked"}; !slices.Equal(got, want) {
		t.Errorf("users %v, want %v", got, want)
	}
	if r, err := s.GetRoom(ctx, room); err != nil || r.Epoch != 2 || r.CreatedBy != alice {
		t.Errorf("room: %+v, %v; want alice's, at epoch 2", r, err)
	}
	if ms, err := s.ListMembers(ctx, room); err != nil || len(ms) != 2 {
		t.Errorf("members: %+v, %v; want alice and bob", ms, err)
	}
	if ks, err := s.SealedKeys(ctx, room, bob); err != nil || len(ks) != 1 || ks[0].Epoch != 2 {
		t.Errorf("bob's keys: %+v, %v; want epoch 2's", ks, err)
	}
	if ks, err := s.SealedKeys(ctx, room, alice); err != nil || len(ks) != 2 {
		t.Errorf("alice's keys: %+v, %v; want epochs 1 and 2", ks, err)
	}
	if n := countNonces(t, s); n != 1 {
		t.Errorf("%d nonces, want 1", n)
	}

	// Watch got each committed change, in commit order, before the
	// writes returned.
	mu.Lock()
	defer mu.Unlock()
	var seen []string
	for _, c := range changes {
		if !c.Own {
			t.Errorf("change %+v not marked Own", c)
		}
		seen = append(seen, fmt.Sprintf("%d %.1s %.1s %v %v %v", c.Kind, c.User, c.Room, c.Joined, c.UserAdded, c.StatusChanged))
	}
	want := []string{
		fmt.Sprintf("%d a  [] true false", store.ChangeUser),
		fmt.Sprintf("%d b  [] true false", store.ChangeUser),
		fmt.Sprintf("%d  d [%s] false false", store.ChangeRoom, alice),
		fmt.Sprintf("%d  d [] false false", store.ChangeRoom),
		fmt.Sprintf("%d  d [%s] false false", store.ChangeRoom, bob),
		fmt.Sprintf("%d b  [] false true", store.ChangeUser),
	}
	if !slices.Equal(seen, want) {
		t.Errorf("Watch saw\n%s\nwant\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

// doomAtCommit installs, as another process could, a trigger that makes
// the registration of the handle "doomed" violate a deferred foreign key:
// the write itself succeeds and the COMMIT of its batch fails.
func doomAtCommit(t *testing.T, path string) {
	t.Helper()
	db := rawDB(t, path)
	for _, q := range []string{
		`CREATE TABLE doom (room TEXT REFERENCES rooms (id) DEFERRABLE INITIALLY DEFERRED)`,
		`CREATE TRIGGER doom_at_commit AFTER INSERT ON users WHEN NEW.handle = 'doomed'
			BEGIN INSERT INTO doom VALUES ('no such room'); END`,
	} {
		if _, err := db.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestCommitFailureFailsTheBatch: when the COMMIT fails, every write of
// the batch gets an error wrapping ErrUnavailable (one whose own rule
// failed too), none of them is in the database or reported to Watch, and
// the store goes on working.
func TestCommitFailureFailsTheBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unibus.db")
	s := openTest(t, path)
	ctx := t.Context()
	doomAtCommit(t, path)
	reported := 0
	if err := s.Watch(ctx, func(store.Change) { reported++ }); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	release := holdCommitter(t, s)
	before := stats(s)
	results := []<-chan error{
		enqueue(t, s, func() error { return s.AddUser(ctx, user(strings.Repeat("a", 64), "alice")) }),
		enqueue(t, s, func() error { return s.AddUser(ctx, user(strings.Repeat("b", 64), "doomed")) }),
		enqueue(t, s, func() error { return s.UseNonce(ctx, "k", "n", now, now.Add(time.Minute)) }),
		// Its rule fails on the first write's effect, which is then
		// not committed: it gets the batch's error, not ErrAlreadyRegistered.
		enqueue(t, s, func() error { return s.AddUser(ctx, user(strings.Repeat("a", 64), "again")) }),
	}
	release()
	for i, r := range results {
		if err := <-r; !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "FOREIGN KEY") {
			t.Errorf("write %d: %v, want the failed commit's error as ErrUnavailable", i, err)
		}
	}
	if commits, n := commitsSince(s, before); commits != 0 || n != 0 {
		t.Errorf("%d commits of %d writes counted for a failed commit", commits, n)
	}
	if us, err := s.ListUsers(ctx); err != nil || len(us) != 0 {
		t.Errorf("users after the failed commit: %+v, %v", us, err)
	}
	if n := countNonces(t, s); n != 0 {
		t.Errorf("%d nonces after the failed commit", n)
	}
	if reported != 0 {
		t.Errorf("Watch reported %d changes of a failed commit", reported)
	}
	// The failed transaction was rolled back: the next batch commits.
	if err := s.AddUser(ctx, user(strings.Repeat("a", 64), "alice")); err != nil {
		t.Fatalf("write after the failed commit: %v", err)
	}
	if err := s.UseNonce(ctx, "k", "n", now, now.Add(time.Minute)); err != nil {
		t.Fatalf("nonce after the failed commit: %v", err)
	}
}

// TestDatabaseFailureFailsTheBatch: a write that hits a failure of the
// database itself (here SQLITE_FULL, from a page limit on the write
// connection) fails its whole batch, those before it and those after it,
// with ErrUnavailable, and nothing of the batch is committed.
func TestDatabaseFailureFailsTheBatch(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "unibus.db"))
	ctx := t.Context()
	alice := strings.Repeat("a", 64)
	if err := s.AddUser(ctx, user(alice, "alice")); err != nil {
		t.Fatal(err)
	}
	var pages int
	if err := s.w.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", pages)); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	release := holdCommitter(t, s)
	before := stats(s)
	results := []<-chan error{
		enqueue(t, s, func() error { return s.UseNonce(ctx, "k", "before", now, now.Add(time.Minute)) }),
		enqueue(t, s, func() error { return s.SetKEMKey(ctx, alice, make([]byte, 1<<20), []byte{1}, now) }), // needs new pages
		enqueue(t, s, func() error { return s.UseNonce(ctx, "k", "after", now, now.Add(time.Minute)) }),
	}
	release()
	for i, r := range results {
		if err := <-r; !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "full") {
			t.Errorf("write %d: %v, want SQLITE_FULL as ErrUnavailable", i, err)
		}
	}
	if commits, _ := commitsSince(s, before); commits != 0 {
		t.Errorf("%d commits of a failed batch", commits)
	}
	if _, err := s.w.ExecContext(ctx, "PRAGMA max_page_count = 4294967294"); err != nil {
		t.Fatal(err)
	}
	if n := countNonces(t, s); n != 0 {
		t.Errorf("%d nonces committed by a failed batch", n)
	}
	if err := s.UseNonce(ctx, "k", "before", now, now.Add(time.Minute)); err != nil {
		t.Errorf("write after the failure: %v", err)
	}
}

// TestCancelledWriteFailsAlone: a write whose context ends while it is
// queued returns at once and is not run; one whose context ends while it
// runs is rolled back; both get the context's error, and the other writes
// of their batch commit.
func TestCancelledWriteFailsAlone(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "unibus.db"))
	ctx := t.Context()
	a, b, c, d := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("c", 64), strings.Repeat("d", 64)
	release := holdCommitter(t, s)
	before := stats(s)

	queuedCtx, cancelQueued := context.WithCancel(ctx)
	runningCtx, cancelRunning := context.WithCancel(ctx)
	ra := enqueue(t, s, func() error { return s.AddUser(ctx, user(a, "a")) })
	rb := enqueue(t, s, func() error { return s.AddUser(queuedCtx, user(b, "b")) })
	// Cancelled during a long statement: SQLite would roll back the whole
	// batch if the statement were interrupted.
	rc := enqueue(t, s, func() error {
		return s.write(runningCtx, "add c, cancelled meanwhile", func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO users (`+userColumns+`) VALUES (?, 'c', 'member', 'active', NULL, NULL, 0, 0)`, c); err != nil {
				return err
			}
			stop := time.AfterFunc(time.Millisecond, cancelRunning)
			defer stop.Stop()
			_, err := tx.ExecContext(ctx, `INSERT INTO nonces (key_id, nonce, expires_at)
				WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) SELECT 'bulk', CAST(i AS TEXT), 0 FROM n`)
			cancelRunning()
			return err
		})
	})
	rd := enqueue(t, s, func() error { return s.AddUser(ctx, user(d, "d")) })

	cancelQueued()
	if err := <-rb; !errors.Is(err, context.Canceled) {
		t.Errorf("write cancelled while queued: %v, want context.Canceled", err)
	}
	release()
	if err := <-rc; !errors.Is(err, context.Canceled) {
		t.Errorf("write cancelled while running: %v, want context.Canceled", err)
	}
	for name, r := range map[string]<-chan error{"a": ra, "d": rd} {
		if err := <-r; err != nil {
			t.Errorf("write %s, in the same batch: %v", name, err)
		}
	}
	if commits, n := commitsSince(s, before); commits != 1 || n != 2 {
		t.Errorf("%d commits of %d writes, want 2 writes in 1", commits, n)
	}
	for _, u := range []string{b, c} {
		if _, err := s.GetUser(ctx, u); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a cancelled write's user %.1s: %v, want ErrNotFound", u, err)
		}
	}
	if n := countNonces(t, s); n != 0 {
		t.Errorf("%d nonces of a cancelled write", n)
	}
}

// TestBatchesForm: writes queued while a commit is in progress form the
// next batch, up to MaxBatch writes each; writes from many goroutines
// share commits.
func TestBatchesForm(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "unibus.db"))
	ctx := t.Context()
	now := time.Now()

	t.Run("bounded", func(t *testing.T) {
		release := holdCommitter(t, s)
		before := stats(s)
		const n = MaxBatch + MaxBatch/2
		errs := make(chan error, n)
		for i := range n {
			go func() { errs <- s.UseNonce(ctx, "bounded", fmt.Sprint(i), now, now.Add(time.Minute)) }()
		}
		harness.Eventually(t, 10*time.Second, func() bool { return s.queuedWrites() == n }, "%d writes queued", n)
		release()
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if commits, writes := commitsSince(s, before); commits != 2 || writes != n {
			t.Errorf("%d writes queued behind a commit took %d commits (%d writes); want %d in 2", n, commits, writes, n)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		before := stats(s)
		const goroutines, each = 32, 20
		var wg sync.WaitGroup
		errs := make(chan error, goroutines*each)
		for g := range goroutines {
			wg.Go(func() {
				for i := range each {
					errs <- s.UseNonce(ctx, "concurrent", fmt.Sprint(g, "-", i), now, now.Add(time.Minute))
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		commits, writes := commitsSince(s, before)
		t.Logf("%d writes from %d goroutines in %d commits", writes, goroutines, commits)
		if writes != goroutines*each || commits >= writes {
			t.Errorf("%d writes in %d commits: no batch formed", writes, commits)
		}
	})
}

// TestLoneWriteCommitsAlone: a write that finds the committer idle is
// committed at once, in a transaction of its own; the committer does not
// wait for company.
func TestLoneWriteCommitsAlone(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "unibus.db"))
	ctx := t.Context()
	now := time.Now()
	before := stats(s)
	for i := range 20 {
		if err := s.UseNonce(ctx, "k", fmt.Sprint(i), now, now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if commits, writes := commitsSince(s, before); commits != uint64(i+1) || writes != uint64(i+1) {
			t.Fatalf("after %d lone writes: %d commits of %d writes", i+1, commits, writes)
		}
	}
	// A lone write that fails its rule commits nothing.
	if err := s.UseNonce(ctx, "k", "0", now, now.Add(time.Minute)); !errors.Is(err, store.ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
	if commits, _ := commitsSince(s, before); commits != 20 {
		t.Errorf("a failed lone write committed (%d commits)", commits)
	}
}

// TestCloseFailsQueuedWrites: Close fails the writes still queued with
// ErrUnavailable at once, waits for the batch in progress, which commits,
// and returns; writes after Close fail the same way.
func TestCloseFailsQueuedWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unibus.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	alice := strings.Repeat("a", 64)
	entered, gate := make(chan struct{}), make(chan struct{})
	inProgress := make(chan error, 1)
	go func() {
		inProgress <- s.write(ctx, "add alice, slowly", func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO users (`+userColumns+`) VALUES (?, 'alice', 'member', 'active', NULL, NULL, 0, 0)`, alice)
			close(entered)
			<-gate
			return err
		})
	}()
	<-entered
	var queued []<-chan error
	for i := range 3 {
		queued = append(queued, enqueue(t, s, func() error { return s.AddUser(ctx, user(fmt.Sprintf("%064x", i+16), fmt.Sprint("q", i))) }))
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	for i, r := range queued {
		if err := <-r; !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "store closed") {
			t.Errorf("queued write %d: %v, want ErrUnavailable: store closed", i, err)
		}
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a batch was in progress", err)
	default:
	}
	close(gate)
	if err := <-inProgress; err != nil {
		t.Errorf("the batch in progress: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.AddUser(ctx, user(strings.Repeat("e", 64), "e")); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "store closed") {
		t.Errorf("write after Close: %v, want ErrUnavailable: store closed", err)
	}

	s = openTest(t, path)
	if us, err := s.ListUsers(t.Context()); err != nil || len(us) != 1 || us[0].SignPub != alice {
		t.Errorf("users after Close: %+v, %v; want the batch in progress's alice only", us, err)
	}
}

// TestPanickingWriteFailsItsBatch: a write body that panics fails its
// batch, whose other writes get ErrUnavailable, and panics in its
// caller's goroutine, not in the committer's: the store goes on.
func TestPanickingWriteFailsItsBatch(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "unibus.db"))
	ctx := t.Context()
	release := holdCommitter(t, s)
	before := stats(s)
	ra := enqueue(t, s, func() error { return s.AddUser(ctx, user(strings.Repeat("a", 64), "a")) })
	rp := enqueue(t, s, func() (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = fmt.Errorf("recovered: %v", v)
			}
		}()
		return s.write(ctx, "panic", func(context.Context, *sql.Tx) error { panic("boom") })
	})
	release()
	if err := <-rp; err == nil || !strings.HasPrefix(err.Error(), "recovered: panic: boom") {
		t.Errorf("the panicking write's caller: %v, want it to panic with boom", err)
	}
	if err := <-ra; !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("the other write of the batch: %v, want ErrUnavailable", err)
	}
	if commits, _ := commitsSince(s, before); commits != 0 {
		t.Errorf("%d commits of a batch with a panic", commits)
	}
	if err := s.AddUser(ctx, user(strings.Repeat("a", 64), "a")); err != nil {
		t.Errorf("write after the panic: %v", err)
	}
}
