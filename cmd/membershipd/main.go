// Command membershipd runs unibus: the HTTP control plane and the embedded
// NATS + JetStream data plane, on one node. With no flags it serves on
// loopback with state under ./local_files, and on first run creates an admin
// identity there. Subcommands administer users offline (user add|list|revoke).
//
// Every flag can also come from the environment: --http-port from
// UNIBUS_HTTP_PORT, and so on.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/unibus/unibus/internal/api"
	"github.com/unibus/unibus/internal/daemon"
	"github.com/unibus/unibus/internal/envflag"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// exitError carries an exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	root := newRoot(os.Stdout, os.Stderr)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "membershipd:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	var cfg daemon.Config
	var noBootstrap bool
	var diskReserve int64
	var userReads, userChanges float64
	var quotas *quotaFlags
	var logLevel, logFormat string
	root := &cobra.Command{
		Use:           "membershipd",
		Short:         "unibus server: signed control plane (HTTP) and ACL'd NATS data plane",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			cfg.ClusterPassOnArgv = cmd.Flags().Changed("cluster-pass")
			return applyEnv(cmd)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(stderr, logLevel, logFormat)
			if err != nil {
				return &exitError{2, err}
			}
			cfg.Logger, cfg.Version, cfg.Bootstrap = log, version, !noBootstrap
			if diskReserve < 0 {
				return &exitError{2, errors.New("--disk-reserve must be 0 (no reserve) or a number of bytes")}
			}
			cfg.DiskReserve = diskReserve
			if diskReserve == 0 {
				cfg.DiskReserve = -1 // no reserve
			}
			if userReads < 0 || userChanges < 0 {
				return &exitError{2, errors.New("--user-read-rate and --user-change-rate must be 0 (no limit) or a rate per second")}
			}
			cfg.UserReads, cfg.UserChanges = userReads, userChanges
			if userReads == 0 {
				cfg.UserReads = -1 // no limit
			}
			if userChanges == 0 {
				cfg.UserChanges = -1
			}
			if err := quotas.apply(&cfg); err != nil {
				return &exitError{2, err}
			}
			if cfg.ScrubInterval == 0 {
				cfg.ScrubInterval = -1 // the flag's 0 is "off"; Config's is the default
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			d, err := startServer(ctx, cmd, &cfg)
			if err != nil {
				return err
			}
			if d.AdminIDFile != "" {
				fmt.Fprintf(stderr, "membershipd: created admin identity %s\n  try: unibus --identity %s room create demo\n", d.AdminIDFile, d.AdminIDFile)
			}
			select {
			case <-ctx.Done():
				log.Info("shutting down")
			case <-d.Done():
			}
			return errors.Join(d.Err(), closeWithin(d, log, shutdownBound))
		},
	}
	f := root.Flags()
	f.StringVar(&cfg.Bind, "bind", "127.0.0.1", "address both planes listen on")
	f.IntVar(&cfg.HTTPPort, "http-port", 8470, "HTTP control-plane port")
	f.IntVar(&cfg.NATSPort, "nats-port", 4250, "NATS data-plane port")
	f.IntVar(&cfg.ClusterPort, "cluster-port", 6250, "NATS cluster route port (cluster mode)")
	f.StringVar(&cfg.ClusterName, "cluster-name", "", "cluster name: turns cluster mode on (needs --store kv, --bus-auth enforce, --node-name, a route secret)")
	f.StringSliceVar(&cfg.Routes, "routes", nil, "the other nodes' route URLs, bare (nats://host:6250); the secret is injected")
	f.StringVar(&cfg.ClusterPassFile, "cluster-pass-file", "", "file (0600) holding the route secret; or set UNIBUS_CLUSTER_PASS")
	f.StringVar(&cfg.ClusterPass, "cluster-pass", "", "route secret on the command line (discouraged: visible in ps; use --cluster-pass-file or UNIBUS_CLUSTER_PASS)")
	f.StringVar(&cfg.RouteTLSCert, "route-tls-cert", "", "this node's route certificate (signed by the route CA)")
	f.StringVar(&cfg.RouteTLSKey, "route-tls-key", "", "key of --route-tls-cert")
	f.StringVar(&cfg.RouteTLSCA, "route-tls-ca", "", "the route CA (must not be the data-plane CA)")
	f.StringVar(&cfg.DataDir, "data-dir", "local_files", "writable state directory")
	f.StringVar((*string)(&cfg.BusAuth), "bus-auth", "enforce", "data-plane auth: enforce (nkey login + per-room ACL) or off (loopback only)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate for both planes (required off loopback)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key for --tls-cert")
	f.BoolVar(&cfg.InsecureNoTLS, "insecure-no-tls", false, "allow a non-loopback bind without TLS (traffic and metadata in clear)")
	f.StringVar((*string)(&cfg.Store), "store", "sqlite", "control-plane store: sqlite (one file) or kv (replicated JetStream KV buckets)")
	f.StringVar(&cfg.DB, "db", "", "SQLite file (default <data-dir>/unibus.db)")
	f.StringVar(&cfg.NATSStore, "nats-store", "", "JetStream directory (default <data-dir>/jetstream)")
	f.StringVar(&cfg.NATSURL, "nats-url", "", "run in front of an external NATS (nats-server >= 2.10, comma-separated seeds) through its auth callout instead of the embedded engine; needs --nats-creds and --store kv (docs/OPERATIONS.md, External NATS)")
	f.StringVar(&cfg.NATSCreds, "nats-creds", "", "with --nats-url: membershipd's credentials file (0600; 'membershipd external-nats init')")
	f.StringVar(&cfg.NATSCA, "nats-ca", "", "with --nats-url: CA certificate that signed the NATS servers' TLS certificates")
	f.IntVar(&cfg.KVReplicas, "kv-replicas", 1, "replicas of room streams, KV buckets and the blob object store (3 in a cluster)")
	f.DurationVar(&cfg.KVBootstrap, "kv-bootstrap", 120*time.Second, "how long --store kv retries opening its buckets while JetStream has no meta leader (cold cluster start)")
	f.StringVar(&cfg.InternalIDFile, "internal-id-file", "", "membershipd's internal identity, created 0600 on first start (default <data-dir>/internal.id)")
	f.StringVar(&cfg.NodeName, "node-name", "", "node name (default unibus-<http-port>)")
	f.StringVar((*string)(&cfg.JSSync), "js-sync", "always", "JetStream fsync: 'always' (fsync before ack) or an interval such as 2m; see docs/OPERATIONS.md")
	f.DurationVar(&cfg.Window, "sig-window", daemonDefaultWindow, "allowed clock skew of a signed request's 'created' (nonces are kept twice as long)")
	f.DurationVar(&cfg.RoomMaxAge, "room-max-age", 0, "cap and default for a room stream's message age (0 = unlimited)")
	f.Int64Var(&cfg.RoomMaxBytes, "room-max-bytes", 0, "cap and default for a room stream's size in bytes (0 = unlimited)")
	f.Int32Var(&cfg.RoomMaxMsgSize, "room-max-msg-size", 1<<20, "largest message a room stream accepts, in bytes")
	f.DurationVar(&cfg.DedupWindow, "dedup-window", daemonDefaultDedup, "JetStream de-duplication window of room streams (Nats-Msg-Id)")
	f.StringVar(&cfg.BlobDir, "blob-dir", "", "encrypted blob directory (default <data-dir>/blobs)")
	f.Int64Var(&cfg.BlobMaxSize, "blob-max-size", 1<<30, "largest blob (ciphertext bytes) an upload may carry; larger is refused with 413")
	f.Int64Var(&diskReserve, "disk-reserve", daemon.DefaultDiskReserve, "free bytes kept on the state's file systems: below it new room messages and blobs are refused (507) and /healthz is 503 disk_low (0 = no reserve)")
	f.Float64Var(&userReads, "user-read-rate", api.DefaultUserRates.Reads, "signed reads (GET) per second allowed to each non-admin user, in bursts of ten seconds' worth; more get 429 (0 = no limit)")
	f.Float64Var(&userChanges, "user-change-rate", api.DefaultUserRates.Changes, "signed changes (POST, PUT, DELETE) per second allowed to each non-admin user, in bursts of ten seconds' worth; more get 429 (0 = no limit)")
	f.BoolVar(&noBootstrap, "no-bootstrap", false, "do not create an admin identity on first run")
	quotas = addQuotaFlags(f)
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&logFormat, "log-format", "auto", "log format: text, json, or auto (text on a terminal)")
	f.DurationVar(&cfg.ScrubInterval, "scrub-interval", daemon.DefaultScrubInterval, "cluster mode: how often every replica of every stream is compared (and divergent ones repaired from the majority by the meta leader); 0 = off")
	root.AddCommand(newUserCmd(stdout), newMigrateCmd(stdout), newKVCmd(stdout), newAuditCmd(stdout))
	root.AddCommand(newOperatorCredsCmd(stdout))
	root.AddCommand(newCheckCmd(stdout), newExternalNATSCmd(stdout))
	return root
}

const (
	// shutdownBound is how long membershipd waits for its own shutdown
	// (HTTP drained within 5 s, then the goroutines, the engine and the
	// stores) before it exits anyway; well inside systemd's and
	// Kubernetes' stop timeouts, so a stuck close never ends in SIGKILL.
	shutdownBound = 10 * time.Second

	daemonDefaultWindow = 60 * time.Second
	daemonDefaultDedup  = 2 * time.Minute
)

// applyEnv fills every flag not given on the command line from UNIBUS_*.
func applyEnv(cmd *cobra.Command) error {
	if err := envflag.Apply(cmd.Flags(), nil); err != nil {
		return &exitError{2, err}
	}
	if err := envflag.Apply(cmd.InheritedFlags(), nil); err != nil {
		return &exitError{2, err}
	}
	return nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level must be debug, info, warn or error, not %q", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "auto":
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return slog.New(slog.NewTextHandler(w, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text, json or auto, not %q", format)
}
