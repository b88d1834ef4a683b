package sqlite

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/unibus/unibus/internal/store"
)

// DefaultWatchPoll is how often a watched store looks for commits by other
// connections to its file (WithWatchPoll changes it).
const DefaultWatchPoll = time.Second

// WithWatchPoll sets how often a watched store polls for commits by other
// processes; d <= 0 keeps DefaultWatchPoll.
func WithWatchPoll(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.watch.poll = d
		}
	}
}

// watchers are the store's Watch callbacks and the poller that finds
// commits by other processes.
//
// This store's own writes are reported by the committer (commit.go), in
// commit order, after their commit and before their methods return.
// Another process's commits are found by polling PRAGMA data_version on
// the write connection: SQLite changes it for commits by any other
// connection and never for the connection's own, and every write of this
// store goes through that one connection (the read pool is query-only),
// so a new value means another process committed. The poller starts with
// the first Watch and stops on Close.
type watchers struct {
	mu     sync.Mutex // held while callbacks run: one report at a time
	list   []*watcher
	poll   time.Duration
	stop   context.CancelFunc // the poller's, nil until the first Watch
	done   chan struct{}      // closed when the poller has returned
	closed bool
}

type watcher struct {
	ctx context.Context
	fn  func(store.Change)
}

// Watch implements store.Store: this store's own writes are reported
// before their methods return (Own), other processes' commits as
// store.ChangeAll within the poll interval. fn is called on the
// committer's goroutine for this store's own writes, so a slow fn holds
// up every write after it.
func (s *Store) Watch(ctx context.Context, fn func(store.Change)) error {
	w := &s.watch
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("watch: the store is closed: %w", store.ErrUnavailable)
	}
	if w.stop == nil {
		// The baseline is read before Watch returns: a commit after it is
		// seen by the first poll.
		dv, err := s.writerDataVersion(ctx)
		if err != nil {
			return wrap("watch", err)
		}
		pctx, cancel := context.WithCancel(context.Background())
		w.stop, w.done = cancel, make(chan struct{})
		go s.pollOthers(pctx, dv)
	}
	w.list = append(w.list, &watcher{ctx: ctx, fn: fn})
	return nil
}

// report calls every live watcher's fn with c, one report at a time, and
// forgets the watchers whose context ended.
func (s *Store) report(c store.Change) {
	w := &s.watch
	w.mu.Lock()
	defer w.mu.Unlock()
	live := w.list[:0]
	for _, x := range w.list {
		if x.ctx.Err() == nil {
			live = append(live, x)
		}
	}
	clear(w.list[len(live):])
	w.list = live
	for _, x := range w.list {
		x.fn(c)
	}
}

// pollOthers reports store.ChangeAll whenever the write connection's
// data_version moves, that is when another process committed. A failed
// poll is reported the same way at the next successful one: what happened
// meanwhile is unknown.
func (s *Store) pollOthers(ctx context.Context, last int64) {
	defer close(s.watch.done)
	t := time.NewTicker(s.watch.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		dv, err := s.writerDataVersion(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("cannot poll the database for other processes' commits; retrying", "err", err)
			last = -1
			continue
		}
		if dv != last {
			s.report(store.Change{Kind: store.ChangeAll})
			last = dv
		}
	}
}

// writerDataVersion reads PRAGMA data_version on the write connection.
func (s *Store) writerDataVersion(ctx context.Context) (int64, error) {
	var dv int64
	if err := s.w.QueryRowContext(ctx, "PRAGMA data_version").Scan(&dv); err != nil {
		return 0, err
	}
	return dv, nil
}

// stopWatch stops the poller and drops the watchers (Close).
func (w *watchers) stopWatch() {
	w.mu.Lock()
	w.closed = true
	w.list = nil
	stop, done := w.stop, w.done
	w.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}
