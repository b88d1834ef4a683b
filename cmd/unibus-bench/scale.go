package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/unibus/unibus/internal/bench"
)

// runScale runs --scale: how costs grow with rooms, a user's rooms and a
// room's rotations, on one SQLite membershipd the bench starts (minutes at
// full size; --quick for a smoke run).
func runScale(ctx context.Context, o bench.ScaleOptions, quick bool, membershipd string, jsonOut, target bool, stdout, stderr io.Writer) int {
	if target {
		fmt.Fprintln(stderr, "unibus-bench: --scale starts its own membershipd (it restarts it and reads its memory); it does not take --server, --nats or --identity")
		return exitUsage
	}
	if quick {
		o = bench.QuickScale(o)
	}
	if o.Rooms < o.UserRooms || o.UserRooms < 1 || o.Concurrency < 1 {
		fmt.Fprintf(stderr, "unibus-bench: --scale-rooms %d must be at least --scale-user-rooms %d (>= 1), with --scale-clients >= 1\n", o.Rooms, o.UserRooms)
		return exitUsage
	}
	bin, cleanup, err := findMembershipd(ctx, membershipd, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "unibus-bench:", err)
		return exitFailed
	}
	defer cleanup()
	o.Bin = bin
	o.Progress = func(s string) { fmt.Fprintln(stderr, s) }
	rep, err := bench.RunScale(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "unibus-bench:", err)
		return exitFailed
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		rep.WriteScaleTable(stdout)
	}
	return 0
}
