package harness

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The pause between two checks of a condition starts at pollFirst, so that
// a test goes on soon after the condition holds, and doubles up to
// pollMax, so that a costly check (a process, a request to a cluster) does
// not load the machine it waits on.
const (
	pollFirst = 5 * time.Millisecond
	pollMax   = 250 * time.Millisecond
)

// Wait calls cond until it returns nil or ctx ends. It returns nil, or
// cond's last error once ctx has ended (cond is called at least once).
func Wait(ctx context.Context, cond func() error) error {
	pause := pollFirst
	for {
		err := cond()
		if err == nil {
			return nil
		}
		timer := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			timer.Stop()
			return err
		case <-timer.C:
		}
		pause = min(2*pause, pollMax)
	}
}

// errNotYet is what Eventually's condition reports while it is false.
var errNotYet = errors.New("not yet")

// Eventually checks cond until it returns true, and fails the test if it
// has not within timeout; the message says what was waited for. Call it
// from the test's goroutine.
func Eventually(t TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	err := within(timeout, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("%s: not within %v", fmt.Sprintf(format, args...), timeout)
	}
}

// EventuallyNoError calls f until it returns nil, and fails the test with
// f's last error if it has not within timeout. Call it from the test's
// goroutine.
func EventuallyNoError(t TB, timeout time.Duration, f func() error, format string, args ...any) {
	t.Helper()
	if err := within(timeout, f); err != nil {
		t.Fatalf("%s: not within %v; last: %v", fmt.Sprintf(format, args...), timeout, err)
	}
}

func within(timeout time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return Wait(ctx, cond)
}
