package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/unibus/unibus/internal/harness"
)

// TestScaleQuick runs the scale scenario at smoke size: it must complete,
// and its figures must be consistent (every room made, no login failed, no
// disconnect from a membership change). Timings are not judged.
func TestScaleQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts membershipd")
	}
	bin := harness.Build(t) + "/membershipd"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	o := QuickScale(ScaleOptions{Bin: bin, Concurrency: 4, Progress: func(s string) { t.Log(s) }})
	rep, err := RunScale(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	rep.WriteScaleTable(os.Stdout)
	if rep.RoomsPerSecond <= 0 || rep.RSSKiB <= 0 || rep.RestartSeconds <= 0 || rep.LoginFailures != 0 || rep.Disconnects != 0 || rep.FirstSendMs <= 0 {
		t.Fatalf("inconsistent report: %+v", rep)
	}
}
