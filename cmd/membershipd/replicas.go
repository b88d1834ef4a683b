package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/subjects"
)

func newKVCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "Operate on a live cluster's JetStream state (raise-replicas)",
	}
	cmd.AddCommand(newRaiseReplicasCmd(stdout))
	return cmd
}

func newRaiseReplicasCmd(stdout io.Writer) *cobra.Command {
	var k kvFlags
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "raise-replicas --replicas N",
		Short: "Raise every bucket, the object store and every room stream (the shared one too) to N replicas, in place",
		Long: `Raise the replicas of every stream membershipd keeps — the KV buckets, the
blob object store (and anything else in the control account), the shared
room stream UNIBUS_MSGS, which holds the messages of every room without a
stream of its own, and every room stream of its own (bus account) — to
--replicas, on a live cluster, over the node's internal identity
(--nats-url, --internal-id-file, --ca), and wait until every new replica is
current. JetStream copies the data from each stream's leader to its new
followers: nothing stops and nothing is lost.

It never lowers: a stream with more replicas than asked for is refused before
anything is changed, as is a target above the number of JetStream servers up
now, and a bus account without the shared room stream (a node that is not
serving yet). It is idempotent: streams already at the target are only
reported, so a run that timed out can be repeated. After it, set
--kv-replicas to the same number on every node (rooms with a stream of their
own are created with the node's --kv-replicas) and run it once more after
the rolling restart. See docs/CLUSTER.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if k.replicas < 1 || k.replicas > 5 {
				return &exitError{2, errors.New("--replicas must be 1 to 5")}
			}
			if err := k.checkTarget(); err != nil {
				return err
			}
			ctx := cmd.Context()
			cnc, err := k.dial(ctx)
			if err != nil {
				return err
			}
			defer cnc.Close()
			bnc, err := k.dial(ctx, natsnode.BusLogin())
			if err != nil {
				return err
			}
			defer bnc.Close()
			cjs, err := jetstream.New(cnc)
			if err != nil {
				return err
			}
			bjs, err := jetstream.New(bnc)
			if err != nil {
				return err
			}
			targets := []kvstore.RaiseTarget{
				{Account: "control", JS: cjs},
				{Account: "bus", JS: bjs, Required: []string{subjects.SharedStream}},
			}
			_, err = kvstore.RaiseReplicas(ctx, targets,
				kvstore.RaiseOptions{Replicas: k.replicas, Wait: wait, Report: func(r kvstore.Replication) { fmt.Fprintln(stdout, r) }})
			if errors.Is(err, kvstore.ErrWouldLower) || errors.Is(err, kvstore.ErrTooFewPeers) ||
				errors.Is(err, kvstore.ErrNotCurrent) || errors.Is(err, kvstore.ErrNotKV) || errors.Is(err, kvstore.ErrMissingStream) {
				return &exitError{1, err}
			}
			return err
		},
	}
	f := cmd.Flags()
	k.register(f, "replicas")
	f.Lookup("replicas").Usage = "the replicas every stream must have (1-5; never lowers; 3 for a three-node cluster)"
	_ = cmd.MarkFlagRequired("replicas")
	f.DurationVar(&wait, "wait", 5*time.Minute, "how long to wait for every new replica to catch up")
	return cmd
}
