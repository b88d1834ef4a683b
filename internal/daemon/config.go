// Package daemon assembles membershipd: the store, the embedded NATS node
// with its authenticator, the internal identity, the HTTP control plane and
// the first-run admin bootstrap. cmd/membershipd only fills a Config from
// flags and environment and calls Start; every decision lives here, where
// tests reach it directly.
package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/unibus/unibus/internal/api"
	"github.com/unibus/unibus/internal/natsnode"
)

// BusAuth is the data plane's login posture.
type BusAuth string

// Bus-auth postures.
const (
	// BusAuthEnforce requires every client to log in with its nkey and
	// grants it only its rooms (the default).
	BusAuthEnforce BusAuth = natsnode.BusAuthEnforce
	// BusAuthOff accepts any client with full permissions; loopback only.
	BusAuthOff BusAuth = natsnode.BusAuthOff
)

// StoreKind selects the control-plane store and the blob store.
type StoreKind string

// Stores.
const (
	// StoreSQLite is one SQLite file and a blob directory (the default).
	StoreSQLite StoreKind = "sqlite"
	// StoreKV is JetStream KV buckets and an object store on the embedded
	// node, replicated in a cluster.
	StoreKV StoreKind = "kv"
)

// JSSync is JetStream's fsync policy: JSSyncAlways, or a Go duration such
// as "2m" between flushes (docs/DESIGN.md).
type JSSync string

// JSSyncAlways fsyncs before every acknowledgement (the default).
const JSSyncAlways JSSync = "always"

// Config is membershipd's configuration. The zero value of each field is
// replaced by its default in Defaults. Validate's messages name the
// command-line flags that set each field.
type Config struct {
	Bind     string  // address both planes bind (default 127.0.0.1)
	HTTPPort int     // control plane (default 8470; 0 = random, for tests)
	NATSPort int     // data plane (default 4250; 0 = random, for tests)
	DataDir  string  // writable state root (default local_files)
	BusAuth  BusAuth // BusAuthEnforce (default) | BusAuthOff (loopback only)
	TLSCert  string  // PEM certificate for both planes
	TLSKey   string  // PEM key for both planes
	// InsecureNoTLS allows a non-loopback bind without TLS. Loud by design.
	InsecureNoTLS bool
	Store         StoreKind // StoreSQLite (default) | StoreKV
	DB            string    // SQLite file (default <data-dir>/unibus.db)
	NATSStore     string    // JetStream dir (default <data-dir>/jetstream)
	// NATSURL runs membershipd in front of an external NATS (comma-separated
	// seeds) instead of the embedded engine (external.go); NATSCreds is the
	// 0600 file of its credentials, NATSCA the CA that signed the servers'
	// TLS certificates.
	NATSURL    string
	NATSCreds  string
	NATSCA     string
	KVReplicas int // replicas of room streams, KV buckets and the object store; default 1
	// KVBootstrap is how long opening the KV buckets retries while JetStream
	// has no meta leader (a cold cluster); default 120 s.
	KVBootstrap    time.Duration
	InternalIDFile string // default <data-dir>/internal.id
	NodeName       string // default "unibus-<http port>"
	JSSync         JSSync // JSSyncAlways (default) or a Go duration such as "2m"
	Window         time.Duration
	RoomMaxAge     time.Duration
	RoomMaxBytes   int64
	RoomMaxMsgSize int32
	DedupWindow    time.Duration
	BlobDir        string // default <data-dir>/blobs
	BlobMaxSize    int64  // per-blob ciphertext limit; default 1 GiB
	// DiskReserve is the free space kept on the state's file systems:
	// below it new room messages and blobs are refused (507) and /healthz
	// is 503 (disk_low). Default DefaultDiskReserve; negative: no reserve.
	DiskReserve int64
	// UserReads and UserChanges bound each non-admin user's signed reads
	// and changes per second (api.DefaultUserRates when 0; negative: no
	// limit).
	UserReads   float64
	UserChanges float64
	// Per-user quotas (internal/quota), for every user, admins included:
	// rooms created, blob bytes uploaded and room message bytes sent and
	// still kept. 0 takes the default (DefaultUserRooms; for bytes, a
	// tenth of the file system that holds them, read at start); negative:
	// no quota.
	UserRooms     int64
	UserBlobBytes int64
	UserMsgBytes  int64
	// UserDailyChanges bounds each non-admin user's signed changes per
	// UTC day (DefaultUserDailyChanges when 0; negative: no limit).
	UserDailyChanges int64
	// UserConns bounds each user's data-plane connections on one node
	// (DefaultUserConns when 0; negative: no limit).
	UserConns int
	// Bootstrap creates and registers an admin identity in DataDir on first
	// start when the store has no active admin and the bind is loopback.
	Bootstrap bool
	Version   string
	Logger    *slog.Logger

	// Cluster mode (docs/DESIGN.md): on when ClusterName is set.
	ClusterName string
	ClusterPort int      // route port (the flag's default is 6250; 0 = random, for tests)
	Routes      []string // the other nodes' route URLs, bare: nats://host:6250
	// ClusterPass is the route secret (from UNIBUS_CLUSTER_PASS, or the
	// discouraged --cluster-pass); ClusterPassFile names a 0600 file with it.
	ClusterPass     string
	ClusterPassFile string
	// ClusterPassOnArgv is set when the secret came from the command line
	// (visible in ps and the journal): it still works, with a warning.
	ClusterPassOnArgv bool
	RouteTLSCert      string
	RouteTLSKey       string
	RouteTLSCA        string

	// ScrubInterval is how often, in cluster mode, every replica of every
	// stream is compared with the others (scrub.go); 0: DefaultScrubInterval,
	// negative: never.
	ScrubInterval time.Duration
}

// clustered reports whether cluster mode is on.
func (c *Config) clustered() bool { return c.ClusterName != "" }

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Bind == "" {
		c.Bind = "127.0.0.1"
	}
	if c.DataDir == "" {
		c.DataDir = "local_files"
	}
	if c.BusAuth == "" {
		c.BusAuth = BusAuthEnforce
	}
	if c.Store == "" {
		c.Store = StoreSQLite
	}
	if c.DB == "" {
		c.DB = filepath.Join(c.DataDir, "unibus.db")
	}
	if c.NATSStore == "" {
		c.NATSStore = filepath.Join(c.DataDir, "jetstream")
	}
	if c.BlobDir == "" {
		c.BlobDir = filepath.Join(c.DataDir, "blobs")
	}
	if c.BlobMaxSize == 0 {
		c.BlobMaxSize = 1 << 30
	}
	if c.DiskReserve == 0 {
		c.DiskReserve = DefaultDiskReserve
	}
	if c.UserReads == 0 {
		c.UserReads = api.DefaultUserRates.Reads
	}
	if c.UserChanges == 0 {
		c.UserChanges = api.DefaultUserRates.Changes
	}
	if c.UserRooms == 0 {
		c.UserRooms = DefaultUserRooms
	}
	if c.UserConns == 0 {
		c.UserConns = DefaultUserConns
	}
	if c.UserDailyChanges == 0 {
		c.UserDailyChanges = DefaultUserDailyChanges
	}
	if c.InternalIDFile == "" {
		c.InternalIDFile = filepath.Join(c.DataDir, "internal.id")
	}
	if c.KVBootstrap == 0 {
		c.KVBootstrap = 120 * time.Second
	}
	if c.KVReplicas == 0 {
		c.KVReplicas = 1
	}
	if c.JSSync == "" {
		c.JSSync = JSSyncAlways
	}
	if c.Window == 0 {
		c.Window = 60 * time.Second
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = 2 * time.Minute
	}
	if c.RoomMaxMsgSize == 0 {
		c.RoomMaxMsgSize = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Version == "" {
		c.Version = "dev"
	}
}

// tlsOn reports whether TLS is configured.
func (c *Config) tlsOn() bool { return c.TLSCert != "" || c.TLSKey != "" }

// syncPolicy parses JSSync.
func (c *Config) syncPolicy() (always bool, interval time.Duration, err error) {
	if c.JSSync == JSSyncAlways {
		return true, 0, nil
	}
	d, err := time.ParseDuration(string(c.JSSync))
	if err != nil || d <= 0 {
		return false, 0, fmt.Errorf("--js-sync must be 'always' or a positive duration such as 2m, not %q", c.JSSync)
	}
	return false, d, nil
}

// Validate returns every problem at once.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.BusAuth != BusAuthEnforce && c.BusAuth != BusAuthOff {
		add("--bus-auth must be enforce or off, not %q", c.BusAuth)
	}
	loop := natsnode.IsLoopback(c.Bind)
	if c.BusAuth == BusAuthOff && !loop {
		add("--bus-auth off is only allowed when every listener binds a loopback address (--bind %s is not loopback)", c.Bind)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		add("--tls-cert and --tls-key go together")
	}
	if !loop && !c.tlsOn() && !c.InsecureNoTLS {
		add("--bind %s is not loopback: TLS is required (--tls-cert/--tls-key), or opt out explicitly with --insecure-no-tls", c.Bind)
	}
	switch c.Store {
	case StoreSQLite, StoreKV:
	default:
		add("--store must be sqlite or kv, not %q", c.Store)
	}
	errs = append(errs, c.validateExternal()...)
	if _, _, err := c.syncPolicy(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateCluster()...)
	for name, p := range map[string]int{"--http-port": c.HTTPPort, "--nats-port": c.NATSPort} {
		if p < 0 || p > 65535 {
			add("%s %d is out of range", name, p)
		}
	}
	if c.HTTPPort != 0 && c.HTTPPort == c.NATSPort {
		add("--http-port and --nats-port must differ")
	}
	if c.KVReplicas < 1 || c.KVReplicas > 5 {
		add("--kv-replicas must be 1..5")
	}
	if c.Window < time.Second || c.Window > 10*time.Minute {
		add("--sig-window must be between 1s and 10m")
	}
	if c.BlobMaxSize < 0 {
		add("--blob-max-size must not be negative")
	}
	if c.RoomMaxAge < 0 || c.RoomMaxBytes < 0 || c.RoomMaxMsgSize < 0 {
		add("room retention limits must not be negative")
	}
	if strings.TrimSpace(c.DataDir) == "" {
		add("--data-dir must not be empty")
	}
	return errors.Join(errs...)
}
