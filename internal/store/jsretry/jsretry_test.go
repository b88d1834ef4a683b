package jsretry

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/store"
)

var discard = slog.New(slog.DiscardHandler)

// Until retries until success, stops at once on a Permanent error, and
// after the deadline returns the last error through wrapLast.
func TestUntil(t *testing.T) {
	ctx := t.Context()
	n := 0
	if err := Until(ctx, "s", time.Now().Add(time.Minute), discard, nil, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Fatalf("success on the third attempt: %v after %d", err, n)
	}

	gone := errors.New("no such bucket")
	n = 0
	err := Until(ctx, "s", time.Now().Add(time.Minute), discard, nil, func() error { n++; return &Permanent{Err: gone} })
	if !errors.Is(err, gone) || n != 1 {
		t.Fatalf("permanent error: %v after %d attempts", err, n)
	}

	last := errors.New("no meta leader")
	err = Until(ctx, "s", time.Now(), discard, func(e error) error { return errors.Join(store.ErrUnavailable, e) }, func() error { return last })
	if !errors.Is(err, last) || !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "bootstrap budget") {
		t.Fatalf("past the deadline: %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Until(cctx, "s", time.Now().Add(time.Minute), discard, nil, func() error { return last }); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// An Opening says "not open yet" until its open succeeds, why after it
// failed, and Stop ends an open in progress.
func TestOpening(t *testing.T) {
	release := make(chan struct{})
	o := Start("thing", func(ctx context.Context) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if err := o.Check(); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "thing not open yet") {
		t.Fatalf("before the open: %v", err)
	}
	close(release)
	if err := o.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := o.Check(); err != nil {
		t.Fatalf("after the open: %v", err)
	}
	o.Stop()

	failed := Start("thing", func(context.Context) error { return errors.New("refused") })
	if err := failed.Wait(t.Context()); err == nil {
		t.Fatal("Wait: no error from a failed open")
	}
	if err := failed.Check(); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("after a failed open: %v", err)
	}

	stuck := Start("thing", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	wctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if err := stuck.Wait(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its context: %v", err)
	}
	stuck.Stop() // returns: the open ends with its context
}
