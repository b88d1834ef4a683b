package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/migrate"
)

// The cluster seed carries what an operator migrated into a temporary,
// standalone server on a cluster node (the first admin, or a whole SQLite
// deployment) into the cluster. A standalone server's JetStream streams are
// not the cluster's: started clustered on them, nats-server neither
// replicates them nor keeps them (it deletes them as orphans once the meta
// group is current). So migrate-to-kv on a node also keeps the SQLite file
// as <DATA_DIR>/cluster-seed.db; the node's first clustered start moves
// the standalone streams aside (never deleting them) and, once the
// cluster's KV is open, imports the seed with the same idempotent copy,
// then renames it cluster-seed.db.imported.

// clusterSeedName is the seed's file name in the data directory.
const clusterSeedName = "cluster-seed.db"

// seedPath is where migrate-to-kv keeps the seed on this node ("" when
// these are not a cluster node's settings).
func (s *nodeSettings) seedPath() string {
	if s.get("CLUSTER_NAME") == "" || s.get("DATA_DIR") == "" {
		return ""
	}
	return filepath.Join(s.get("DATA_DIR"), clusterSeedName)
}

// keepClusterSeed copies the SQLite file db (and its write-ahead log, if
// any) to seed, 0600, replacing an older seed.
func keepClusterSeed(db, seed string) error {
	if err := os.MkdirAll(filepath.Dir(seed), 0o700); err != nil {
		return err
	}
	for _, suffix := range []string{"-wal", ""} { // the log first: the file names the pair
		err := copyFile(db+suffix, seed+suffix)
		if suffix != "" && errors.Is(err, fs.ErrNotExist) {
			err = os.Remove(seed + suffix)
			if errors.Is(err, fs.ErrNotExist) {
				err = nil
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies src to dst through a 0600 temporary file and a rename.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(out.Name(), dst)
}

// moveStandaloneStore moves a JetStream store that a standalone server
// wrote (control-plane streams, no meta group) aside before a clustered
// start, which would otherwise discard it. It returns where it went ("" when
// nothing moved).
func moveStandaloneStore(storeDir string, now time.Time) (string, error) {
	js := filepath.Join(storeDir, "jetstream")
	streams, err := os.ReadDir(filepath.Join(js, natsnode.ControlAccount, "streams"))
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(streams) == 0) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(js, "$SYS", "_js_", "_meta_")); err == nil {
		return "", nil // a cluster wrote it
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	aside := storeDir + ".standalone-" + now.UTC().Format("20060102T150405Z")
	if err := os.Rename(storeDir, aside); err != nil {
		return "", err
	}
	return aside, nil
}

// seedRetry is how often importClusterSeed tries again while the
// cluster's KV is not open yet.
const seedRetry = 5 * time.Second

// importClusterSeed copies seed into the running node's KV over its
// internal identity, retrying until it is done, ctx ends or the daemon
// stops; then renames seed to seed.imported. Conflicts (a user that
// differs) are logged and leave the seed where it is.
func importClusterSeed(ctx context.Context, d *daemon.Daemon, cfg daemon.Config, seed string, log *slog.Logger) {
	idFile := cfg.InternalIDFile
	if idFile == "" {
		idFile = filepath.Join(cfg.DataDir, "internal.id")
	}
	id, err := identity.Load(idFile)
	if err != nil {
		log.Error("cluster seed: cannot load the internal identity; not imported", "seed", seed, "err", err)
		return
	}
	opts := []nats.Option{nats.Nkey(id.NKey(), id.SignNonce), nats.Name("membershipd-seed"), nats.Timeout(5 * time.Second)}
	if cfg.TLSCert != "" {
		// The node's own certificate is the one root it needs for itself.
		pem, err := os.ReadFile(cfg.TLSCert)
		pool := x509.NewCertPool()
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			log.Error("cluster seed: cannot read the node's certificate; not imported", "seed", seed, "err", err)
			return
		}
		opts = append(opts, nats.Secure(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	actor := id.SignPub().String()
	record := func(ctx context.Context, l store.AuditLog, rec audit.Record, apply func() error) error {
		return store.AuditedAs(ctx, l, actor, audit.ViaCLI, rec, apply)
	}
	log.Info("cluster seed: importing once the cluster's KV is open", "seed", seed)
	for {
		rep, err := importSeedOnce(ctx, d.NATSURL(), opts, seed, cfg.KVReplicas, record)
		rep.Conflicts = slices.DeleteFunc(rep.Conflicts, func(c string) bool {
			// The cluster made its own deployment id at its first
			// start, before any client could pin the seed's: keep it.
			return strings.HasPrefix(c, "the deployment id ")
		})
		switch {
		case err == nil && len(rep.Conflicts) > 0:
			log.Warn("cluster seed: records differ from the cluster's and were left unchanged; the seed is kept", "seed", seed, "conflicts", rep.Conflicts)
			return
		case err == nil:
			if err := os.Rename(seed, seed+".imported"); err != nil {
				log.Error("cluster seed: imported, but not renamed", "seed", seed, "err", err)
			}
			_ = os.Rename(seed+"-wal", seed+".imported-wal")
			log.Info("cluster seed imported", "seed", seed+".imported", "users", rep.Users, "users_present", rep.UsersPresent, "rooms", rep.Rooms)
			return
		}
		log.Debug("cluster seed: not imported yet", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-d.Done():
			return
		case <-time.After(seedRetry):
		}
	}
}

func importSeedOnce(ctx context.Context, url string, opts []nats.Option, seed string, replicas int, record migrate.Recorder) (migrate.Report, error) {
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return migrate.Report{}, fmt.Errorf("connect: %w", err)
	}
	defer nc.Close()
	return migrate.ToKV(ctx, migrate.Options{DB: seed, Conn: nc, Replicas: replicas, Record: record})
}
