package jsretry

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/unibus/unibus/internal/store"
)

// Opening is a store's open running in the background, for a store that
// must exist before it can open (a cold cluster's stores wait for a
// quorum). Until the open has succeeded, Check fails with an error
// wrapping store.ErrUnavailable, which every caller treats as a denial.
type Opening struct {
	what   string
	cancel context.CancelFunc
	done   chan struct{} // closed when open has returned
	err    error         // what open returned; read after done
	open   atomic.Bool
}

// Start runs open in a goroutine that the Opening owns, with a context
// that Stop cancels. what names the store in errors ("kv store").
func Start(what string, open func(ctx context.Context) error) *Opening {
	ctx, cancel := context.WithCancel(context.Background())
	o := &Opening{what: what, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(o.done)
		if err := open(ctx); err != nil {
			o.err = err
			return
		}
		o.open.Store(true)
	}()
	return o
}

// Check returns nil once the store is open. Before, it returns an error
// wrapping store.ErrUnavailable that says the store is not open yet; after
// a failed open, one that says why.
func (o *Opening) Check() error {
	if o.open.Load() {
		return nil
	}
	select {
	case <-o.done:
		return fmt.Errorf("%s failed to open: %w: %w", o.what, store.ErrUnavailable, o.err)
	default:
		return fmt.Errorf("%s not open yet (waiting for a JetStream quorum): %w", o.what, store.ErrUnavailable)
	}
}

// Wait blocks until the open has ended, and returns its error, or until
// ctx ends, and returns ctx's.
func (o *Opening) Wait(ctx context.Context) error {
	select {
	case <-o.done:
		return o.err
	case <-ctx.Done():
		return fmt.Errorf("open %s: %w", o.what, ctx.Err())
	}
}

// Stop cancels an open still in progress and waits for its goroutine.
func (o *Opening) Stop() {
	o.cancel()
	<-o.done
}
