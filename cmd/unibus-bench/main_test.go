package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/unibus/unibus/internal/bench"
	"github.com/unibus/unibus/internal/harness"
)

// TestMain lets the test binary stand in for unibus-bench when the bench
// starts itself to serve a raw login baseline.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (strings.HasPrefix(os.Args[1], "--"+bench.RawNATSFlag) || strings.HasPrefix(os.Args[1], "--"+bench.BareHTTPFlag)) {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// The command runs a quick bench against a real membershipd, prints JSON
// that --render turns back into the table, and exits 0.
func TestQuickJSONAndRender(t *testing.T) {
	if testing.Short() {
		t.Skip("starts membershipd")
	}
	bin := filepath.Join(harness.Build(t), "membershipd")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--quick", "--json", "--membershipd", bin, "--stores", "sqlite",
		"--sizes", "1024", "--scenarios", "rooms,connect,control", "--duration", "50ms"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errb.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not a JSON report: %v\n%s", err, out.String())
	}
	if len(rep.Rooms) != 2 || len(rep.Connect) != 4 || len(rep.Control) != 4 || len(rep.Blobs) != 0 || rep.Options.DurationMs != 50 {
		t.Fatalf("report: %d rooms, %d connect, %d control, %d blobs, %d ms", len(rep.Rooms), len(rep.Connect), len(rep.Control), len(rep.Blobs), rep.Options.DurationMs)
	}
	for _, c := range rep.Connect {
		if c.Server != bench.ServerUnibus && (c.InProcess || c.ServerCPUUS <= 0) {
			t.Errorf("raw baseline not in a process of its own: %+v", c)
		}
	}
	for _, c := range rep.Control {
		if c.Endpoint == bench.EndpointBare && c.ServerCPUUS <= 0 {
			t.Errorf("bare server not in a process of its own: %+v", c)
		}
	}
	if len(rep.Memory) != 2 || rep.Memory[0].What != bench.MemIdle || rep.Memory[0].KiB <= 0 {
		t.Errorf("memory rows: %+v", rep.Memory)
	}
	if !strings.Contains(errb.String(), "room messages") {
		t.Errorf("no progress on stderr:\n%s", errb.String())
	}
	saved := filepath.Join(t.TempDir(), "report.json")
	if err := os.WriteFile(saved, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run(context.Background(), []string{"--render", saved}, &out, &errb); code != 0 {
		t.Fatalf("render: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "publish→consume") || !strings.Contains(out.String(), "Data-plane logins") {
		t.Fatalf("rendered table:\n%s", out.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"extra-argument"},
		{"--server", "http://127.0.0.1:1"},                 // a target needs --nats and --identity too
		{"--internal-identity", "local_files/internal.id"}, // only with a target
		{"--membershipd", "/bin/true", "--stores", "mysql"},
		{"--membershipd", "/bin/true", "--sizes", "4"},
		{"--render", filepath.Join(os.TempDir(), "no-such-report.json")},
		{"--soak", "1s"}, // shorter than one sample
		{"--soak", "1m", "--soak-interval", "0s"},
		{"--soak", "1m", "--stores", "mysql"},
		{"--soak", "1m", "--server", "http://127.0.0.1:1", "--nats", "nats://127.0.0.1:1", "--identity", "admin.id"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != exitUsage {
			t.Errorf("%q: exit %d, want %d (%s)", args, code, exitUsage, errb.String())
		}
	}
}

// A failed scenario is an error exit; a slow one never is.
func TestFailureExit(t *testing.T) {
	var out, errb bytes.Buffer
	// A "membershipd" that exits at once: every deployment scenario fails.
	code := run(context.Background(), []string{"--membershipd", "/bin/false", "--quick", "--scenarios", "control", "--stores", "sqlite"}, &out, &errb)
	if code != exitFailed {
		t.Fatalf("exit %d, want %d\n%s", code, exitFailed, errb.String())
	}
	if !strings.Contains(out.String(), "ERROR") {
		t.Fatalf("the table does not show the error:\n%s", out.String())
	}
}

// --scale --quick runs the scale scenario at smoke size and prints its
// report as JSON; --scale refuses a target deployment.
func TestScaleQuickJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("starts membershipd")
	}
	bin := filepath.Join(harness.Build(t), "membershipd")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--scale", "--quick", "--json", "--membershipd", bin, "--scale-clients", "4"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s", code, errb.String())
	}
	var rep bench.ScaleReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Rooms == 0 || rep.RoomsPerSecond <= 0 {
		t.Fatalf("stdout is not a scale report: %v\n%s", err, out.String())
	}
	if code := run(context.Background(), []string{"--scale", "--server", "http://127.0.0.1:1"}, &out, &errb); code != exitUsage {
		t.Fatalf("--scale with --server: exit %d", code)
	}
}
