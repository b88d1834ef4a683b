package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/unibus/unibus/internal/daemon"
)

// startServer starts the daemon. On a cluster node (node settings beside
// the binary, or UNIBUS_NODE_ENV), every server — the unit's, or a
// temporary one an operator starts by hand — uses the node's internal
// identity and creates no bootstrap admin: a node's admins are the ones
// its operator adds. A clustered start first moves aside a JetStream store
// that a standalone server wrote, and then imports the cluster seed that
// migrate-to-kv kept (see clusterseed.go).
func startServer(ctx context.Context, cmd *cobra.Command, cfg *daemon.Config) (*daemon.Daemon, error) {
	log := cfg.Logger
	node, err := findNodeSettings(os.Getenv("UNIBUS_NODE_ENV"))
	if err != nil {
		return nil, &exitError{2, err}
	}
	if node != nil {
		cfg.Bootstrap = false
		if v := node.get("INTERNAL_ID_FILE"); v != "" && !cmd.Flags().Changed("internal-id-file") {
			cfg.InternalIDFile = v
		}
		log.Info("cluster node: the node's internal identity, no bootstrap admin", "settings", node.path, "internal_id_file", cfg.InternalIDFile)
	}
	dataDir := cfg.DataDir
	if dataDir == "" {
		dataDir = "local_files"
	}
	clustered := cfg.ClusterName != ""
	if clustered {
		storeDir := cfg.NATSStore
		if storeDir == "" {
			storeDir = filepath.Join(dataDir, "jetstream")
		}
		aside, err := moveStandaloneStore(storeDir, time.Now())
		if err != nil {
			return nil, err
		}
		if aside != "" {
			log.Warn("a standalone server wrote this JetStream store; a cluster cannot use it, so it was moved aside (what was migrated into it is imported from the cluster seed, if kept)", "moved_to", aside)
		}
	}
	d, err := daemon.Start(ctx, *cfg)
	if err != nil || !clustered {
		return d, err
	}
	seed := filepath.Join(dataDir, clusterSeedName)
	if _, err := os.Stat(seed); err == nil {
		importClusterSeed(ctx, d, *cfg, seed, log)
	} else if !errors.Is(err, fs.ErrNotExist) {
		log.Warn("cluster seed: cannot read it", "seed", seed, "err", err)
	}
	return d, nil
}
