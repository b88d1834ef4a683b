package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/scrub"
)

// checkResult is `check --json`'s output.
type checkResult struct {
	scrub.Report
	Repairs []repairResult `json:"repairs,omitempty"`
}

type repairResult struct {
	Account string   `json:"account"`
	Stream  string   `json:"stream"`
	Steps   []string `json:"steps"`
	Err     string   `json:"err,omitempty"`
}

func newCheckCmd(stdout io.Writer) *cobra.Command {
	var k kvFlags
	var asJSON, repair bool
	var wait, repairWait time.Duration
	cmd := &cobra.Command{
		Use:   "check [--repair]",
		Short: "Compare every replica of every stream across the cluster; --repair rebuilds divergent ones from the majority",
		Long: `Ask every node of a live cluster (over the node's internal identity:
--nats-url, --internal-id-file, --ca) for its own replica of every stream
membershipd keeps — the KV buckets, the object store, the shared room stream
and every room stream — and compare them: messages, bytes, first and last
sequence, as each replica's store holds them. A replica that differs from a
state a majority of the stream's replicas agree on, in two rounds a second
apart, is divergent: its files were damaged or truncated, and if it leads it
serves what it lost as missing.

With --repair, each divergent replica is fenced and rebuilt from the
majority: a divergent leader is made to step down, then the replica is
removed from the stream's peers and a new one is copied from the leader (on
three nodes, by scaling the stream down and back up). Nothing is changed
without a quorum of the cluster and a majority of agreeing replicas.

Exit status: 0 every replica agrees (or was repaired), 1 a divergent or
unsettled stream (no majority agrees: run it again) or a repair that failed,
2 usage, 3 the node could not be reached. See docs/OPERATIONS.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := k.checkTarget(); err != nil {
				return err
			}
			ctx := cmd.Context()
			cnc, err := k.dial(ctx)
			if err != nil {
				return err
			}
			defer cnc.Close()
			opts := scrub.Options{Wait: wait}
			report, err := scrub.Check(ctx, cnc, opts)
			if errors.Is(err, scrub.ErrNoAnswer) {
				return &exitError{3, err}
			}
			if err != nil {
				return err
			}
			res := checkResult{Report: report}
			if !asJSON {
				printCheck(stdout, report)
			}
			failed := false
			if repair && len(report.Divergent()) > 0 {
				bnc, err := k.dial(ctx, natsnode.BusLogin())
				if err != nil {
					return err
				}
				defer bnc.Close()
				conns := scrub.Conns{Control: cnc, Accounts: map[string]*nats.Conn{natsnode.ControlAccount: cnc, natsnode.BusAccount: bnc}}
				for _, sr := range report.Divergent() {
					rr := repairResult{Account: sr.Account, Stream: sr.Stream}
					err := scrub.Repair(ctx, conns, sr, scrub.RepairOptions{Wait: repairWait, Check: opts, Step: func(stream, step string) {
						rr.Steps = append(rr.Steps, step)
						if !asJSON {
							fmt.Fprintf(stdout, "repair %s: %s\n", stream, step)
						}
					}})
					if err != nil {
						rr.Err, failed = err.Error(), true
						if !asJSON {
							fmt.Fprintf(stdout, "repair %s: FAILED: %v\n", sr.Stream, err)
						}
					}
					res.Repairs = append(res.Repairs, rr)
				}
			}
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			}
			divergent, unsettled := 0, 0
			for _, s := range report.Streams {
				switch s.Verdict {
				case scrub.Diverged:
					divergent++
				case scrub.Unsettled:
					unsettled++
				}
			}
			switch {
			case failed:
				return &exitError{1, errors.New("a repair failed: see above; nothing is changed without a majority, run the check again")}
			case divergent > 0 && !repair:
				return &exitError{1, fmt.Errorf("%d stream(s) with a divergent replica: run with --repair to rebuild them from the majority", divergent)}
			case unsettled > 0:
				return &exitError{1, fmt.Errorf("%d stream(s) unsettled (no majority of replicas agrees, or a node did not answer): run the check again", unsettled)}
			case !report.Quorum:
				return &exitError{1, errors.New("fewer than a majority of the cluster's nodes answered with a quorum: nothing can be judged")}
			}
			return nil
		},
	}
	f := cmd.Flags()
	k.register(f, "kv-replicas")
	_ = f.MarkHidden("kv-replicas") // kvFlags' creation replicas: check creates nothing
	f.BoolVar(&asJSON, "json", false, "print the report (and the repairs) as JSON")
	f.BoolVar(&repair, "repair", false, "rebuild each divergent replica from the majority (steps a divergent leader down first)")
	f.DurationVar(&wait, "wait", 2*time.Second, "how long to collect the nodes' answers")
	f.DurationVar(&repairWait, "repair-wait", 2*time.Minute, "bound on each repair step (a new leader, a replica rebuilt)")
	return cmd
}

func printCheck(w io.Writer, r scrub.Report) {
	fmt.Fprintf(w, "nodes answering: %d %v (quorum: %v)\n", len(r.Servers), r.Servers, r.Quorum)
	for _, s := range r.Streams {
		fmt.Fprintln(w, s)
	}
	if d := r.Divergent(); len(d) > 0 {
		fmt.Fprintf(w, "%d stream(s), %d replica(s) DIVERGENT\n", len(d), r.DivergentReplicas())
	} else {
		fmt.Fprintln(w, "no divergent replica")
	}
}
