package bench

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/harness"
)

// TestSoakShort runs the soak's mixed load briefly against a real
// membershipd (messages, signed requests and logins; the member changes
// and blobs come later in a real soak): every message arrives, and each
// sample reads the server's memory. It asserts no timing and no trend.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts membershipd")
	}
	bin := filepath.Join(harness.Build(t), "membershipd")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := Soak(ctx, SoakOptions{Membershipd: bin, Duration: 2 * time.Second, Interval: 500 * time.Millisecond, Progress: &progress})
	if err != nil {
		t.Fatalf("soak: %v\n%s", err, progress.String())
	}
	// At least the first and the last sample: a loaded machine may skip
	// ticks in between, and no test here depends on timing.
	if len(rep.Samples) < 2 || rep.IdleKiB <= 0 {
		t.Fatalf("%d samples, idle %d KiB", len(rep.Samples), rep.IdleKiB)
	}
	last := rep.Samples[len(rep.Samples)-1]
	if last.RSSKiB <= 0 || last.Goroutines <= 0 || last.HeapInuse <= 0 || last.OpenFDs <= 0 {
		t.Errorf("last sample lacks a reading: %+v", last)
	}
	if rep.MsgsSent == 0 || rep.LostOrUndeliverable != 0 || last.Requests == 0 || last.Logins == 0 {
		t.Errorf("load: %d sent, %d lost, last sample %+v", rep.MsgsSent, rep.LostOrUndeliverable, last)
	}
	var table bytes.Buffer
	rep.WriteTable(&table)
	if !strings.Contains(table.String(), "RSS MiB") || !strings.Contains(table.String(), "least squares") {
		t.Errorf("table:\n%s", table.String())
	}
}

// A soak that cannot run says why instead of starting anything.
func TestSoakRefusesNonsense(t *testing.T) {
	for _, o := range []SoakOptions{
		{Duration: time.Minute}, // no binary
		{Membershipd: "membershipd", Duration: time.Second, Interval: time.Minute}, // shorter than one sample
	} {
		if _, err := Soak(context.Background(), o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
