package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/migrate"
)

func newMigrateCmd(stdout io.Writer) *cobra.Command {
	var db, blobDir string
	var k kvFlags
	cmd := &cobra.Command{
		Use:   "migrate-to-kv --db FILE --nats-url URL --replicas N [--ca FILE]",
		Short: "Copy a SQLite deployment (users, rooms, members, keys, blobs) into a live node's KV buckets",
		Long: `Copy a SQLite deployment into the KV buckets and blob object store of a
live membershipd (any mode; the buckets are created with --replicas when
absent), over its internal identity.

It is idempotent: what is already in the KV is left as it is (a user or room
that differs is reported, never overwritten), so a second run changes
nothing and says so. A non-loopback --nats-url is refused without --ca, before
any connection is made.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := k.checkTarget(); err != nil {
				return err
			}
			if k.replicas < 1 || k.replicas > 5 {
				return &exitError{2, errors.New("--replicas must be 1 to 5")}
			}
			if _, err := os.Stat(db); err != nil {
				return &exitError{2, fmt.Errorf("--db: %w", err)}
			}
			ctx := cmd.Context()
			nc, err := k.dial(ctx)
			if err != nil {
				return err
			}
			defer nc.Close()
			rep, err := migrate.ToKV(ctx, migrate.Options{DB: db, BlobDir: blobDir, Conn: nc, Replicas: k.replicas,
				Record: func(ctx context.Context, log store.AuditLog, rec audit.Record, apply func() error) error {
					// Recorded like every admin command run on the host:
					// the internal identity acting, via the CLI.
					return store.AuditedAs(ctx, log, k.actor, audit.ViaCLI, rec, apply)
				}})
			fmt.Fprint(stdout, rep)
			if err != nil {
				return err
			}
			if rep.Copied() == 0 {
				fmt.Fprintln(stdout, "nothing to do: the KV already holds everything in", db)
			}
			if n := len(rep.Conflicts); n > 0 {
				return &exitError{1, fmt.Errorf("%d records differ between SQLite and the KV and were left unchanged", n)}
			}
			// On a cluster node, a standalone (temporary) server's store is
			// not the cluster's: keep the file for the cluster's first start.
			if seed := k.node.seedPath(); seed != "" && nc.ConnectedClusterName() == "" {
				if err := keepClusterSeed(db, seed); err != nil {
					return fmt.Errorf("keep %s for the cluster's first start: %w", db, err)
				}
				fmt.Fprintf(stdout, "cluster node: %s is not the cluster's store; kept a copy as %s, which the node imports when the cluster starts\n", k.natsURL, seed)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&db, "db", filepath.Join("local_files", "unibus.db"), "the SQLite file to copy")
	f.StringVar(&blobDir, "blob-dir", filepath.Join("local_files", "blobs"), "the SQLite deployment's blob directory")
	k.register(f, "replicas")
	return cmd
}
