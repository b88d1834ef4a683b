package main

import (
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"
)

// closer is what closeWithin closes: the daemon.
type closer interface{ Close() error }

// closeWithin closes c, but returns after bound whatever Close is doing.
// A close that does not finish is a bug: membershipd logs the stacks of
// its own goroutines (where it waits) and exits with an error, instead of
// hanging until its supervisor kills it. Everything acknowledged is on
// disk before the close begins (--js-sync always, SQLite's FULL sync), so
// exiting early loses nothing acknowledged.
func closeWithin(c closer, log *slog.Logger, bound time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(bound):
		log.Error("shutdown did not finish; exiting without waiting for it", "after", bound, "stacks", ownStacks())
		return fmt.Errorf("shutdown did not finish within %v (the log names where it waited)", bound)
	}
}

// ownStacks returns the stacks of the goroutines running unibus code; the
// engine's own are many and idle.
func ownStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var ours []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/unibus/") && !strings.Contains(g, "main.ownStacks") {
			ours = append(ours, g)
		}
	}
	return strings.Join(ours, "\n\n")
}
