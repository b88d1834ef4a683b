// Package jsretry retries the JetStream requests that open a store's
// streams while a cold cluster has no meta leader yet: JetStream refuses
// to create or bind streams until a quorum of nodes has elected one. Both
// JetStream-backed stores (store/kvstore and blobstore/objblobs) open
// through it.
//
// It is not for requests made once a store is open: those fail at once
// with store.ErrUnavailable and the caller denies.
package jsretry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// AttemptTimeout bounds one attempt to create or bind a stream while a
// store opens. It is short on purpose: when every node of a cold cluster
// asks for the same stream at the same moment, an attempt can go
// unanswered, and a long timeout made the nodes wait it out together,
// stream after stream.
const AttemptTimeout = 4 * time.Second

// Backoff bounds the wait between two attempts: it starts at FirstWait
// and doubles up to MaxWait, each wait jittered.
const (
	FirstWait = 250 * time.Millisecond
	MaxWait   = 2 * time.Second
)

// Jitter returns d plus up to half of d at random, so that nodes retrying
// the same creation drift apart instead of colliding again.
func Jitter(d time.Duration) time.Duration {
	return d + rand.N(d/2+1)
}

// Permanent marks an error that no retry can fix (a bucket that a
// bind-only open does not find): Until returns it at once.
type Permanent struct{ Err error }

func (p *Permanent) Error() string { return p.Err.Error() }
func (p *Permanent) Unwrap() error { return p.Err }

// Until runs once until it succeeds, fails with a *Permanent error, ctx
// ends or deadline passes, waiting a jittered, doubling backoff between
// attempts and logging progress every few seconds. The error after the
// deadline wraps the last attempt's error through wrapLast (the caller's
// "unavailable" marking); wrapLast may be nil.
func Until(ctx context.Context, what string, deadline time.Time, log *slog.Logger, wrapLast func(error) error, once func() error) error {
	start, wait := time.Now(), FirstWait
	lastLog := time.Time{}
	for {
		err := once()
		if err == nil {
			if time.Since(start) > time.Second {
				log.Info(what+" open", "after", time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("open %s: %w", what, ctx.Err())
		}
		if p := (*Permanent)(nil); errors.As(err, &p) {
			return p.Err
		}
		if time.Now().After(deadline) {
			if wrapLast != nil {
				err = wrapLast(err)
			}
			return fmt.Errorf("open %s: JetStream did not accept it within the bootstrap budget (%v); is a quorum of the cluster up? last error: %w",
				what, time.Since(start).Round(time.Second), err)
		}
		if time.Since(lastLog) > 5*time.Second {
			log.Warn("waiting for JetStream to open a stream (a cold cluster has no meta leader until a quorum of nodes is up)",
				"stream", what, "waited", time.Since(start).Round(time.Second), "err", err)
			lastLog = time.Now()
		}
		if err := Sleep(ctx, Jitter(wait)); err != nil {
			return fmt.Errorf("open %s: %w", what, err)
		}
		wait = min(wait*2, MaxWait)
	}
}

// Sleep waits for d or until ctx ends, whichever comes first, and returns
// ctx's error in the second case.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
