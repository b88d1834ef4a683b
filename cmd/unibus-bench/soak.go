package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/unibus/unibus/internal/bench"
)

// runSoak runs --soak: mixed load against one membershipd the bench
// starts, its memory sampled every --soak-interval, printed as a curve.
func runSoak(ctx context.Context, o bench.SoakOptions, membershipd string, jsonOut, target bool, stdout, stderr io.Writer) int {
	switch {
	case target:
		fmt.Fprintln(stderr, "unibus-bench: --soak starts its own membershipd (it reads the server's memory); it does not take --server, --nats or --identity")
		return exitUsage
	case o.Duration < o.Interval || o.Interval <= 0:
		fmt.Fprintf(stderr, "unibus-bench: --soak %v must be at least one --soak-interval (%v), which must be positive\n", o.Duration, o.Interval)
		return exitUsage
	case o.Store != "sqlite" && o.Store != "kv":
		fmt.Fprintf(stderr, "unibus-bench: store must be sqlite or kv, not %q\n", o.Store)
		return exitUsage
	}
	bin, cleanup, err := findMembershipd(ctx, membershipd, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "unibus-bench:", err)
		return exitFailed
	}
	defer cleanup()
	o.Membershipd = bin
	rep, err := bench.Soak(ctx, o)
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
