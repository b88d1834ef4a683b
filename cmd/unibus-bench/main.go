// Command unibus-bench measures unibus against the raw engine side by side
// in one run: room messages raw through JetStream and end to end through
// the SDK, the crypto ceilings of this machine, signed control-plane
// requests per store, data-plane logins, and blob transfers. It prints a
// table (or --json) and exits 0 unless something failed; a slow figure is
// reported, never an error.
//
//	go run ./cmd/unibus-bench            # full run, under 3 minutes on 2 cores
//	go run ./cmd/unibus-bench --quick    # smoke run, seconds
//
// By default it builds and starts its own membershipd processes (random
// loopback ports, temporary data directories). With --server, --nats and
// --identity (an admin's) it measures that deployment instead, where it
// creates rooms and users named bench-…: use a scratch deployment; the raw
// room baseline there also needs --internal-identity (members have no
// JetStream). Unlike
// the other commands it reads nothing from UNIBUS_* variables, so that a
// shell set up for a real deployment never sends it there by accident.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses: 0 every scenario ran (timings are never judged), 1 a
// scenario failed, 2 usage.
const (
	exitFailed = 1
	exitUsage  = 2
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("unibus-bench", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o                           bench.Options
		jsonOut, quick              bool
		blobMiB                     int
		membershipd                 string
		servers, natsURLs           []string
		idFile, internalFile        string
		caFile                      string
		cpuProfile, memProfile      string
		render, serveRaw, serveBare string
		sizes                       []int
		stores, jsSync, scenarios   []string
		soak                        bench.SoakOptions
		scale                       bench.ScaleOptions
		runScaleScenario            bool
	)
	fs.BoolVar(&jsonOut, "json", false, "print the report as JSON")
	fs.BoolVar(&quick, "quick", false, "smoke run: short measurements, a 4 MiB blob, js-sync always only (seconds, not minutes)")
	fs.DurationVar(&o.Duration, "duration", bench.DefaultDuration, "length of each timed measurement")
	fs.IntSliceVar(&sizes, "sizes", bench.DefaultSizes, "room message payload sizes in bytes")
	fs.StringSliceVar(&stores, "stores", []string{"sqlite", "kv"}, "control-plane stores to start membershipd with (a store it does not implement is skipped)")
	fs.StringSliceVar(&jsSync, "js-sync", []string{"always", "2m"}, "membershipd --js-sync policies the room scenario runs under")
	fs.StringSliceVar(&scenarios, "scenarios", bench.AllScenarios, "scenarios to run")
	fs.IntVar(&blobMiB, "blob-mib", bench.DefaultBlobSize>>20, "blob size in MiB")
	fs.IntVar(&o.Workers, "workers", bench.DefaultWorkers, "concurrent clients of the control-plane and login scenarios")
	fs.StringVar(&membershipd, "membershipd", "", "membershipd binary (default: build ./cmd/membershipd when run inside the unibus module, else membershipd from PATH)")
	fs.StringSliceVar(&servers, "server", nil, "measure this deployment's control plane (with --nats and --identity) instead of starting membershipd")
	fs.StringSliceVar(&natsURLs, "nats", nil, "the target deployment's data-plane URLs")
	fs.StringVar(&idFile, "identity", "", "an admin identity file of the target deployment")
	fs.StringVar(&internalFile, "internal-identity", "", "the target deployment's internal identity file (local_files/internal.id), for the raw room baseline")
	fs.StringVar(&caFile, "ca", "", "CA bundle of the target deployment's TLS certificates")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the SDK side) to this file")
	fs.StringVar(&memProfile, "memprofile", "", "write an allocation profile of this process to this file")
	fs.StringVar(&render, "render", "", "measure nothing: print the table of a report saved with --json")
	fs.DurationVar(&soak.Duration, "soak", 0, "instead of the scenarios, run mixed load for this long against one membershipd (the first --stores) and print its memory curve")
	fs.DurationVar(&soak.Interval, "soak-interval", 10*time.Second, "time between the soak's samples")
	fs.BoolVar(&runScaleScenario, "scale", false, "instead of the scenarios, measure how costs grow with rooms, a user's rooms and rotations on one SQLite membershipd (--quick for a smoke run)")
	fs.IntVar(&scale.Rooms, "scale-rooms", 100000, "rooms created on the node")
	fs.IntVar(&scale.UserRooms, "scale-user-rooms", 10000, "rooms of the user whose login is timed (part of --scale-rooms)")
	fs.IntVar(&scale.Changes, "scale-changes", 200, "membership changes timed on a live connection")
	fs.IntVar(&scale.Rotations, "scale-rotations", 10000, "rotations of the room a fresh client then sends in")
	fs.IntVar(&scale.Concurrency, "scale-clients", 16, "clients creating rooms at once")
	fs.IntVar(&scale.Logins, "scale-logins", 50, "logins timed per user")
	fs.StringVar(&serveRaw, bench.RawNATSFlag, "", "serve one raw login baseline (the bench starts itself with it)")
	fs.MarkHidden(bench.RawNATSFlag)
	fs.StringVar(&serveBare, bench.BareHTTPFlag, "", "serve one bare signed-request server (the bench starts itself with it)")
	fs.MarkHidden(bench.BareHTTPFlag)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unibus-bench: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	if render != "" {
		return renderReport(render, stdout, stderr)
	}
	if serveRaw != "" {
		if err := bench.ServeRawNATS(ctx, serveRaw, os.Stdin, stdout); err != nil {
			fmt.Fprintln(stderr, "unibus-bench:", err)
			return exitFailed
		}
		return 0
	}
	if serveBare != "" {
		if err := bench.ServeBareHTTP(ctx, serveBare, os.Stdin, stdout); err != nil {
			fmt.Fprintln(stderr, "unibus-bench:", err)
			return exitFailed
		}
		return 0
	}
	if runScaleScenario {
		return runScale(ctx, scale, quick, membershipd, jsonOut, len(servers) > 0 || len(natsURLs) > 0 || idFile != "" || internalFile != "", stdout, stderr)
	}
	if fs.Changed("soak") {
		soak.Store, soak.JSSync, soak.Progress = stores[0], "always", stderr
		if fs.Changed("js-sync") {
			soak.JSSync = jsSync[0]
		}
		return runSoak(ctx, soak, membershipd, jsonOut, len(servers) > 0 || len(natsURLs) > 0 || idFile != "" || internalFile != "", stdout, stderr)
	}
	o.Sizes, o.Stores, o.JSSync, o.Scenarios = sizes, stores, jsSync, scenarios
	o.BlobSize = int64(blobMiB) << 20
	if quick {
		d := o.Duration // as given: Quick overwrites it
		o = bench.Quick(o)
		if !fs.Changed("js-sync") {
			o.JSSync = []string{"always"}
		}
		if fs.Changed("duration") {
			o.Duration = d
		}
	}
	o.Progress = stderr

	if len(servers) > 0 || len(natsURLs) > 0 || idFile != "" || internalFile != "" {
		t, err := target(servers, natsURLs, idFile, internalFile, caFile)
		if err != nil {
			fmt.Fprintln(stderr, "unibus-bench:", err)
			return exitUsage
		}
		o.Target = t
	} else {
		bin, cleanup, err := findMembershipd(ctx, membershipd, stderr)
		if err != nil {
			fmt.Fprintln(stderr, "unibus-bench:", err)
			return exitFailed
		}
		defer cleanup()
		o.Membershipd = bin
		// The raw login baselines run as this executable, each in a
		// process of its own; without one, in this process.
		o.Self, _ = os.Executable()
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintln(stderr, "unibus-bench:", err)
		return exitUsage
	}

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "unibus-bench:", err)
			return exitUsage
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "unibus-bench:", err)
			return exitFailed
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.Run(ctx, o)
	if memProfile != "" {
		if werr := writeHeapProfile(memProfile); werr != nil {
			fmt.Fprintln(stderr, "unibus-bench:", werr)
		}
	}
	if rep != nil {
		if jsonOut {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			enc.Encode(rep)
		} else {
			rep.WriteTable(stdout)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "unibus-bench:", err)
		return exitFailed
	}
	return 0
}

func renderReport(path string, stdout, stderr io.Writer) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "unibus-bench:", err)
		return exitUsage
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		fmt.Fprintf(stderr, "unibus-bench: %s is not a report: %v\n", path, err)
		return exitUsage
	}
	rep.WriteTable(stdout)
	return 0
}

func target(servers, natsURLs []string, idFile, internalFile, caFile string) (*bench.Target, error) {
	if len(servers) == 0 || len(natsURLs) == 0 || idFile == "" {
		return nil, errors.New("a target needs --server, --nats and --identity together")
	}
	id, err := identity.Load(idFile)
	if err != nil {
		return nil, err
	}
	t := &bench.Target{Servers: servers, NATS: natsURLs, Identity: id}
	if internalFile != "" {
		if t.Internal, err = identity.Load(internalFile); err != nil {
			return nil, err
		}
	}
	if caFile != "" {
		if t.RootCAs, err = client.LoadCA(caFile); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// findMembershipd returns the binary to start: the flag's, a fresh build
// of the module the working directory is in, or membershipd from PATH.
func findMembershipd(ctx context.Context, flag string, stderr io.Writer) (string, func(), error) {
	nop := func() {}
	if flag != "" {
		return flag, nop, nil
	}
	wd, _ := os.Getwd()
	if root := bench.ModuleRoot(wd); root != "" {
		dir, err := os.MkdirTemp("", "unibus-bench-bin-")
		if err != nil {
			return "", nop, err
		}
		fmt.Fprintf(stderr, "building membershipd from %s\n", root)
		bin, err := bench.BuildMembershipd(ctx, root, dir)
		if err != nil {
			os.RemoveAll(dir)
			return "", nop, err
		}
		return bin, func() { os.RemoveAll(dir) }, nil
	}
	bin, err := exec.LookPath("membershipd")
	if err != nil {
		return "", nop, errors.New("no membershipd: run inside the unibus module, put membershipd on PATH, or pass --membershipd")
	}
	return bin, nop, nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	return errors.Join(pprof.Lookup("allocs").WriteTo(f, 0), f.Close())
}
