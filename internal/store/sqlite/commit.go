package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/unibus/unibus/internal/store"
)

// MaxBatch is the most writes one transaction commits together, so that
// the latency of a batch, and of the writes queued behind it, stays
// bounded.
const MaxBatch = 128

// Group commit.
//
// Every write method hands its transaction body to one goroutine, the
// committer, and waits for its verdict. The committer takes every write
// queued at that moment (at most MaxBatch), runs them one after another in
// one BEGIN IMMEDIATE transaction, each inside a SAVEPOINT of its own, and
// commits them with one COMMIT, so one fsync. Writes that arrive while it
// commits wait for the next batch. A write alone in its batch needs no
// savepoint: the transaction is its own, as it was before group commit.
//
//	callers ──queue──▶ committer: BEGIN IMMEDIATE
//	                     SAVEPOINT; write 1; RELEASE
//	                     SAVEPOINT; write 2 fails; ROLLBACK TO; RELEASE
//	                     SAVEPOINT; write 3; RELEASE
//	                   COMMIT (fsync) ─▶ report 1, 3 to Watch ─▶ answer 1, 2, 3
//
// Why the guarantees of a transaction per write still hold:
//
//   - Durable before acknowledged: a write's method returns success only
//     after the COMMIT that contains it returned, with synchronous=FULL.
//     If the COMMIT fails, or the database fails during the batch (an
//     error that marks it unavailable, or a savepoint that can no longer
//     be rolled back to or released, which is how SQLite shows a
//     transaction it rolled back on its own), the transaction is rolled
//     back and every write of the batch gets that error, wrapped in
//     store.ErrUnavailable: none is acknowledged. That includes the writes
//     whose rule failed, since their verdict may rest on an earlier write
//     of the batch that was not committed after all.
//   - Serial order: the writes of a batch run one at a time, in queue
//     order, on the one write connection, each seeing the effects of those
//     before it. What a committed batch leaves, and each write's verdict,
//     are exactly those of running the writes one transaction each in that
//     order; the writer lock (BEGIN IMMEDIATE) keeps other processes out
//     for the whole batch.
//   - Each rule is still atomic: a write whose body fails (a handle taken,
//     a stale epoch, a replayed nonce) is rolled back to its savepoint and,
//     once the batch is committed, gets its own error; what it wrote
//     before failing is gone, and the others go on. Its check-then-write
//     ran inside the writer lock, with nothing else running in between.
//   - Watch: the committer reports each committed write's change, in
//     commit order, before it answers that write, so the method still
//     returns after its change was reported.
//   - Contexts: the caller's context is checked when the write's turn
//     comes (a write whose caller gave up is not run) and again after its
//     body ran (a write cancelled meanwhile is rolled back to its
//     savepoint and gets the context's error). It is not handed to the
//     statements: SQLite answers an interrupted write statement by rolling
//     back the whole transaction, which would undo the writes before it in
//     the batch. A caller whose context ends while its write waits in the
//     queue returns at once; once its write has begun, it waits for the
//     verdict, so that an error always means "not committed".
//   - Latency: the committer never waits for company. A write that finds
//     it idle is committed alone at once; batches form only from the
//     writes that queued while the previous batch committed, and MaxBatch
//     bounds how long one batch takes.
//
// Close stops taking writes, fails those still queued with
// store.ErrUnavailable, and waits for the batch in progress to commit.
type committer struct {
	mu     sync.Mutex
	cond   sync.Cond // signalled when the queue grows or the committer is closed
	queue  []*pendingWrite
	closed bool
	done   chan struct{} // closed when runCommitter has returned; nil until started

	// For tests and benchmarks: transactions committed, and the writes
	// they committed.
	commits, committed atomic.Uint64
}

// A txFunc is one write's transaction body. It runs inside the batch's
// transaction, after the writes queued before it, and returns the change
// Watch reports once it is committed (nil: none).
type txFunc func(ctx context.Context, tx *sql.Tx) (*store.Change, error)

// A pendingWrite is one write method's call, from queue to verdict.
type pendingWrite struct {
	ctx    context.Context
	op     string
	fn     txFunc
	state  atomic.Int32  // queued, running or abandoned
	change *store.Change // what fn returned, reported if it is committed
	err    error         // fn's error: the write's own verdict
	done   chan error    // buffered: the committer never waits for the caller
}

const (
	queued int32 = iota
	running
	abandoned // the caller's context ended while it was queued
)

// write runs fn as one write (see committer) and returns once it is
// committed, or the error that kept it from being committed.
func (s *Store) write(ctx context.Context, op string, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.submit(ctx, op, func(ctx context.Context, tx *sql.Tx) (*store.Change, error) {
		return nil, fn(ctx, tx)
	})
}

// writeReported is write for a write that Watch reports: c, as this
// store's own change, once the write is committed and before this returns.
func (s *Store) writeReported(ctx context.Context, op string, c store.Change, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.submit(ctx, op, func(ctx context.Context, tx *sql.Tx) (*store.Change, error) {
		return &c, fn(ctx, tx)
	})
}

// submit queues fn for the committer and waits for its verdict.
func (s *Store) submit(ctx context.Context, op string, fn txFunc) error {
	if err := ctx.Err(); err != nil {
		return wrap(op, err)
	}
	w := &pendingWrite{ctx: ctx, op: op, fn: fn, done: make(chan error, 1)}
	c := &s.commit
	c.mu.Lock()
	if c.closed || c.done == nil {
		c.mu.Unlock()
		return closedError(op)
	}
	c.queue = append(c.queue, w)
	c.cond.Signal()
	c.mu.Unlock()
	var err error
	select {
	case err = <-w.done:
	case <-ctx.Done():
		if w.state.CompareAndSwap(queued, abandoned) {
			return wrap(op, ctx.Err())
		}
		err = <-w.done // it is running: wait for the verdict
	}
	if p, ok := errors.AsType[*writePanic](err); ok && p.of == w {
		panic(fmt.Sprintf("%s: %v\n\ncommitter's stack:\n%s", op, p.value, p.stack))
	}
	return err
}

// A writePanic is a write body's panic, recovered by the committer so
// that it fails one batch rather than the process; the write's caller
// panics with it.
type writePanic struct {
	of    *pendingWrite
	value any
	stack []byte
}

func (p *writePanic) Error() string { return fmt.Sprintf("a write of the batch panicked: %v", p.value) }

func closedError(op string) error {
	return fmt.Errorf("%s: %w: store closed", op, store.ErrUnavailable)
}

// startCommitter starts the committer; Close stops it.
func (s *Store) startCommitter() {
	c := &s.commit
	c.cond.L = &c.mu
	c.done = make(chan struct{})
	go s.runCommitter()
}

// stopCommitter fails the writes still queued, lets the batch in progress
// finish and waits for the committer to return.
func (s *Store) stopCommitter() {
	c := &s.commit
	c.mu.Lock()
	c.closed = true
	left := c.queue
	c.queue = nil
	done := c.done
	c.cond.Broadcast()
	c.mu.Unlock()
	for _, w := range left {
		if w.state.CompareAndSwap(queued, running) {
			w.done <- closedError(w.op)
		}
	}
	if done != nil {
		<-done
	}
}

func (s *Store) runCommitter() {
	c := &s.commit
	defer close(c.done)
	for {
		batch := c.next()
		if batch == nil {
			return
		}
		s.runBatch(batch)
	}
}

// next waits for queued writes and takes up to MaxBatch of them; nil once
// the committer is closed.
func (c *committer) next() []*pendingWrite {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.queue) == 0 && !c.closed {
		c.cond.Wait()
	}
	if c.closed {
		return nil
	}
	n := min(len(c.queue), MaxBatch)
	batch := c.queue[:n:n]
	if n == len(c.queue) {
		c.queue = nil
	} else {
		c.queue = append([]*pendingWrite(nil), c.queue[n:]...)
	}
	return batch
}

// runBatch runs the writes of batch in one transaction and answers each.
func (s *Store) runBatch(batch []*pendingWrite) {
	// The batch's own context: it must not end while the batch runs,
	// since database/sql rolls back a transaction whose context ended.
	tx, err := s.w.BeginTx(context.Background(), nil)
	if err != nil {
		failBatch(batch, err)
		return
	}
	ran := make([]*pendingWrite, 0, len(batch))
	committing := 0 // writes in ran whose body succeeded
	for i, w := range batch {
		if !w.state.CompareAndSwap(queued, running) {
			continue // its caller gave up while it was queued
		}
		if err := w.ctx.Err(); err != nil {
			w.done <- wrap(w.op, err) // not run
			continue
		}
		var txErr error
		w.err, txErr = runOne(tx, w, len(batch) > 1)
		if txErr != nil {
			_ = tx.Rollback()
			failBatch(append(ran, batch[i:]...), txErr)
			return
		}
		ran = append(ran, w)
		if w.err == nil {
			committing++
		}
	}
	if committing == 0 {
		_ = tx.Rollback() // nothing to keep: no fsync
	} else if err := tx.Commit(); err != nil {
		// Every write of the batch fails, those whose rule failed too:
		// their verdict may rest on a write that was not committed. The
		// driver rolls the transaction back, so the connection is clean
		// for the next batch.
		failBatch(ran, err)
		return
	} else {
		s.commit.commits.Add(1)
		s.commit.committed.Add(uint64(committing))
	}
	for _, w := range ran {
		if w.err != nil {
			w.done <- wrap(w.op, w.err)
			continue
		}
		if w.change != nil {
			c := *w.change
			c.Own = true
			s.report(c)
		}
		w.done <- nil
	}
}

// runOne runs w in tx, inside a savepoint unless w is alone in its batch
// (then the batch's transaction is its own, which runBatch rolls back if
// it fails). werr is w's own error, with its changes undone; txErr means
// the transaction itself failed, and with it the whole batch.
func runOne(tx *sql.Tx, w *pendingWrite, savepoint bool) (werr, txErr error) {
	defer func() {
		if v := recover(); v != nil {
			// What the body left undone is unknown: the batch fails, and
			// the panic goes on in the caller's goroutine (submit).
			werr, txErr = nil, &writePanic{of: w, value: v, stack: debug.Stack()}
		}
	}()
	bg := context.Background()
	if savepoint {
		if _, err := tx.ExecContext(bg, "SAVEPOINT write"); err != nil {
			return nil, err
		}
	}
	w.change, werr = w.fn(context.WithoutCancel(w.ctx), tx)
	if werr == nil {
		werr = w.ctx.Err() // cancelled while it ran: undo it
	}
	if werr != nil {
		w.change = nil
		if unavailable(werr) {
			return nil, werr // the database failed, not the write's rule
		}
	}
	if !savepoint {
		return werr, nil
	}
	if werr != nil {
		// ROLLBACK TO keeps the savepoint open; RELEASE ends it. Either
		// fails if SQLite has rolled back the transaction on its own.
		if _, err := tx.ExecContext(bg, "ROLLBACK TO write"); err != nil {
			return nil, err
		}
	}
	if _, err := tx.ExecContext(bg, "RELEASE write"); err != nil {
		return nil, err
	}
	return werr, nil
}

// failBatch gives every write of batch that is not abandoned the batch's
// error, as unavailability: none of them was committed.
func failBatch(batch []*pendingWrite, err error) {
	for _, w := range batch {
		if w.state.CompareAndSwap(queued, running) || w.state.Load() == running {
			w.done <- unavailableError(w.op, err)
		}
	}
}

// unavailableError is wrap's error with store.ErrUnavailable whatever err
// is: a batch that failed says nothing about the write's own rules.
func unavailableError(op string, err error) error {
	if unavailable(err) {
		return wrap(op, err)
	}
	return fmt.Errorf("%s: %w: %w", op, store.ErrUnavailable, err)
}

// commitStats returns the transactions the committer has committed and
// the writes in them.
func (s *Store) commitStats() (commits, writes uint64) {
	return s.commit.commits.Load(), s.commit.committed.Load()
}

// queuedWrites is how many writes wait for the committer.
func (s *Store) queuedWrites() int {
	s.commit.mu.Lock()
	defer s.commit.mu.Unlock()
	return len(s.commit.queue)
}
