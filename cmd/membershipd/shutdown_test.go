package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type closeFunc func() error

func (f closeFunc) Close() error { return f() }

// stuckInClose blocks until release is closed; its name is what the
// logged stacks must show.
func stuckInClose(release chan struct{}) error {
	<-release
	return nil
}

func TestCloseWithinReturnsWhatCloseReturns(t *testing.T) {
	want := errors.New("store close failed")
	var out bytes.Buffer
	err := closeWithin(closeFunc(func() error { return want }), slog.New(slog.NewJSONHandler(&out, nil)), time.Minute)
	if !errors.Is(err, want) {
		t.Fatalf("closeWithin = %v, want %v", err, want)
	}
	if out.Len() != 0 {
		t.Errorf("a close that finished logged: %s", out.String())
	}
}

func TestCloseWithinBoundsAStuckClose(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var out bytes.Buffer
	err := closeWithin(closeFunc(func() error { return stuckInClose(release) }), slog.New(slog.NewJSONHandler(&out, nil)), 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not finish within 100ms") {
		t.Fatalf("closeWithin on a stuck close = %v", err)
	}
	var line struct {
		Level, Msg, Stacks string
	}
	if err := json.Unmarshal(out.Bytes(), &line); err != nil {
		t.Fatalf("log %q: %v", out.String(), err)
	}
	if line.Level != "ERROR" || !strings.Contains(line.Msg, "shutdown did not finish") {
		t.Errorf("logged %+v", line)
	}
	if !strings.Contains(line.Stacks, "stuckInClose") {
		t.Errorf("the logged stacks do not show where the close waits:\n%s", line.Stacks)
	}
}
