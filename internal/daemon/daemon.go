package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/api"
	"github.com/unibus/unibus/internal/audit"
	"github.com/unibus/unibus/internal/blobstore"
	"github.com/unibus/unibus/internal/blobstore/fileblobs"
	"github.com/unibus/unibus/internal/blobstore/objblobs"
	"github.com/unibus/unibus/internal/dataplane"
	"github.com/unibus/unibus/internal/extnats"
	"github.com/unibus/unibus/internal/metrics"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/internal/store/sqlite"
	"github.com/unibus/unibus/wire"
)

// Daemon is a running membershipd.
type Daemon struct {
	cfg      Config
	log      *slog.Logger
	store    store.Store
	blobs    blobstore.Store
	kv       *kvstore.Store  // kv mode: the store, opening in the background
	objs     *objblobs.Store // kv mode: the blob store, likewise
	node     *natsnode.Node
	eng      engine        // the embedded node's, or the external NATS's (external.go)
	extKeys  *extnats.Keys // --nats-url: membershipd's credentials
	internal *identity.Identity
	nc       *nats.Conn // internal identity, bus account (room streams, listeners)
	cnc      *nats.Conn // internal identity, control account (kv mode)
	mnc      *nats.Conn // internal identity, members account (the relay)
	js       jetstream.JetStream

	dir       *dataplane.Directory
	relay     *dataplane.Relay
	quotas    *quotas
	listeners *dataplane.Listeners

	deploymentMu sync.Mutex
	deployment   string // the deployment id, once read
	// streamsReady is set once the shared room stream exists: until then
	// no message can be stored and no listener made, so /healthz is 503.
	streamsReady atomic.Bool
	hs           healthState
	authz        *storeAuthorizer
	metrics      *metrics.Metrics
	httpSrv      *http.Server
	httpLn       net.Listener
	tls          *tls.Config

	// ctx ends when Close begins. Every goroutine the daemon starts (the
	// control plane's server, the wait for the kv store in a cluster, the
	// index repair) watches it, and wg counts them: Close waits for all.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	done            chan struct{} // closed when the control plane has stopped serving
	stopServingOnce sync.Once
	closeOnce       sync.Once
	closeErr        error
	errMu           sync.Mutex
	err             error // why the daemon stopped on its own

	// AdminIDFile is the path of the bootstrapped admin identity, if any.
	AdminIDFile string
}

// Start validates cfg, opens the store, starts the embedded NATS node and
// the HTTP control plane, and bootstraps the first admin when allowed. On
// error everything already started is stopped.
func Start(ctx context.Context, cfg Config) (d *Daemon, err error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	started := &Daemon{cfg: cfg, log: cfg.Logger, metrics: metrics.New(), done: make(chan struct{})}
	started.ctx, started.cancel = context.WithCancel(context.Background())
	d = started
	defer func() {
		// The error returns set d to nil: close what was started.
		if err != nil {
			started.Close()
			d = nil
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	d.checkDisk() // the relay and the blob uploads consult it from the start
	if cfg.tlsOn() {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("load TLS certificate: %w", err)
		}
		d.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	d.authz = &storeAuthorizer{}
	d.dir = dataplane.NewDirectory(storeSource{d}, 0, nil) // before the store's watch can report
	if cfg.Store == StoreSQLite {
		if err := d.openSQLite(ctx); err != nil {
			return nil, err
		}
	}
	if d.internal, err = d.internalIdentity(); err != nil {
		return nil, fmt.Errorf("internal identity: %w", err)
	}
	if err := d.startNATS(ctx); err != nil {
		return nil, err
	}
	if cfg.Store == StoreKV {
		if err := d.openKV(); err != nil {
			return nil, err
		}
	}
	// The store exists from here on (a kv store may still be opening: it
	// denies until it is open).
	if err := d.startQuotas(); err != nil {
		return nil, err
	}
	if err := d.startDataPlane(); err != nil {
		return nil, err
	}
	if cfg.Store == StoreKV {
		if !cfg.clustered() {
			if err := d.waitKV(ctx); err != nil {
				return nil, err
			}
			d.wg.Go(d.repairIndex)
		}
	}
	if !cfg.clustered() {
		if err := d.ensureStreams(ctx); err != nil {
			return nil, fmt.Errorf("room streams: %w", err)
		}
	}
	if cfg.Bootstrap && natsnode.IsLoopback(cfg.Bind) && !cfg.clustered() {
		if err := d.bootstrapAdmin(ctx); err != nil {
			return nil, fmt.Errorf("bootstrap admin: %w", err)
		}
	}
	d.wg.Go(d.watchHealth)
	if err := d.startHTTP(); err != nil {
		return nil, err
	}
	d.wg.Go(d.probeDisks) // after the control plane, which it stops on a failing disk
	if cfg.clustered() {
		// A cold cluster has no meta leader until a quorum of nodes is up:
		// serve /healthz (503) meanwhile; the store opens in the
		// background and denies everything until then.
		d.wg.Go(d.awaitKV)
		d.wg.Go(d.fenceMinority)
		d.wg.Go(d.scrubReplicas)
	}
	if _, interval, _ := cfg.syncPolicy(); interval > 0 {
		lost := "room messages"
		if cfg.Store == StoreKV {
			lost = "room messages, users, rooms, memberships and revocations"
		}
		d.log.Warn("--js-sync is not 'always': "+lost+" acknowledged in the last interval are lost if this machine loses power (measured in docs/RELIABILITY.md)",
			"js_sync", string(cfg.JSSync), "interval", interval)
	}
	d.log.Info("membershipd ready", "node", d.nodeName(), "http", d.HTTPURL(), "nats", d.NATSURL(),
		"route", d.eng.RouteURL(), "bus_auth", cfg.BusAuth, "tls", cfg.tlsOn(), "store", cfg.Store,
		"cluster", cfg.ClusterName, "js_sync", cfg.JSSync)
	return d, nil
}

// openSQLite opens the SQLite store and the blob directory, and serves
// logins from the store.
func (d *Daemon) openSQLite(ctx context.Context) (err error) {
	if d.store, err = sqlite.Open(ctx, d.cfg.DB); err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	if d.blobs, err = fileblobs.Open(d.cfg.BlobDir); err != nil {
		return fmt.Errorf("open blob store: %w", err)
	}
	return d.useStore()
}

// useStore watches the store for access changes, then serves logins from
// it. The watch comes first: it is what keeps cached grants current and
// closes the connections of users whose access another node changed.
func (d *Daemon) useStore() error {
	if err := d.store.Watch(d.ctx, d.storeChanged); err != nil {
		return fmt.Errorf("watch the store: %w", err)
	}
	d.authz.set(d.store)
	return nil
}

func (d *Daemon) nodeName() string {
	if d.cfg.NodeName != "" {
		return d.cfg.NodeName
	}
	return "unibus-" + strconv.Itoa(d.cfg.HTTPPort)
}

func (d *Daemon) startNATS(ctx context.Context) error {
	if d.cfg.external() {
		return d.startExternal(ctx)
	}
	always, interval, _ := d.cfg.syncPolicy()
	port := d.cfg.NATSPort
	if port == 0 {
		port = -1
	}
	o := natsnode.Options{
		Host: d.cfg.Bind, Port: port, ServerName: d.nodeName(), StoreDir: d.cfg.NATSStore,
		BusAuth: string(d.cfg.BusAuth), TLS: d.tls, SyncAlways: always, SyncInterval: interval,
		InternalNKey: d.internal.NKey(), Authorizer: d.authz,
		Logger: d.log.With("component", "nats"), AllowNonLoopbackWithoutTLS: d.cfg.InsecureNoTLS,
		OnAuth: d.metrics.OnBusAuth, MaxConnsPerUser: max(d.cfg.UserConns, 0),
	}
	if d.cfg.clustered() {
		cl, err := d.clusterOptions()
		if err != nil {
			return err
		}
		o.Cluster = cl
	}
	var err error
	var started atomic.Pointer[natsnode.Node]
	if d.cfg.clustered() {
		d.authz.quorum = func() bool { n := started.Load(); return n != nil && n.Quorum() }
	}
	if d.node, err = natsnode.Start(ctx, o); err != nil {
		return fmt.Errorf("start NATS: %w", err)
	}
	started.Store(d.node)
	d.eng = embedded{d.node}
	if d.nc, err = d.node.ConnectBus(d.internal.NKey(), d.internal.SignNonce, nats.Name("membershipd-internal")); err != nil {
		return fmt.Errorf("internal NATS connection: %w", err)
	}
	if d.js, err = jetstream.New(d.nc); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

func (d *Daemon) startHTTP() error {
	srv, err := api.New(api.Options{
		Store: d.store, DataPlane: dataPlane{d}, Metrics: d.metrics, Logger: d.log.With("component", "api"),
		Window: d.cfg.Window, Health: d.health, RoomMaxAge: d.cfg.RoomMaxAge, RoomMaxBytes: d.cfg.RoomMaxBytes,
		Blobs: d.blobs, BlobMaxSize: d.cfg.BlobMaxSize, DiskLow: d.DiskLow,
		UserRates: api.UserRates{Reads: max(d.cfg.UserReads, 0), Changes: max(d.cfg.UserChanges, 0)},
		RoomQuota: d.quotas.rooms, BlobQuota: d.quotas.blobs, ChangeQuota: d.quotas.changes, OnChange: d.hs.changes.record,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(d.cfg.Bind, strconv.Itoa(d.cfg.HTTPPort)))
	if err != nil {
		return fmt.Errorf("listen control plane: %w", err)
	}
	if d.tls != nil {
		ln = tls.NewListener(ln, d.tls)
	}
	d.httpLn = ln
	d.httpSrv = &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(d.log.With("component", "http").Handler(), slog.LevelWarn),
	}
	d.wg.Go(func() {
		defer close(d.done)
		if err := d.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("control plane stopped", "err", err)
		}
	})
	return nil
}

// HTTPURL is the control plane's base URL.
func (d *Daemon) HTTPURL() string {
	scheme := "http"
	if d.tls != nil {
		scheme = "https"
	}
	return scheme + "://" + d.httpLn.Addr().String()
}

// NATSURL is the data plane's client URL.
func (d *Daemon) NATSURL() string { return d.eng.ClientURL() }

// Store exposes the store (for tests and admin tooling in-process).
func (d *Daemon) Store() store.Store { return d.store }

// Err is why the daemon stopped on its own (nil after Close).
func (d *Daemon) Err() error {
	d.errMu.Lock()
	defer d.errMu.Unlock()
	return d.err
}

// fail records err and stops serving the control plane, so that Done is
// closed; Close releases the rest. It runs in a goroutine of the daemon's,
// which Close waits for, so it must not call Close.
func (d *Daemon) fail(err error) {
	d.errMu.Lock()
	d.err = err
	d.errMu.Unlock()
	d.stopServing()
}

// Done is closed when the control plane has stopped serving: on Close, or
// when the daemon failed on its own (Err says why; call Close to release
// the rest).
func (d *Daemon) Done() <-chan struct{} { return d.done }

// stopServing shuts the control plane down and waits until it has stopped.
func (d *Daemon) stopServing() (err error) {
	d.stopServingOnce.Do(func() {
		if d.httpSrv == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = d.httpSrv.Shutdown(ctx)
		<-d.done
	})
	return err
}

// Close stops the control plane, then every goroutine the daemon started
// (and waits for them), then the NATS node and the stores, in that order.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() {
		err := d.stopServing()
		d.cancel()
		d.wg.Wait()
		if d.relay != nil {
			err = errors.Join(err, d.relay.Close())
		}
		if d.quotas != nil {
			d.quotas.close() // the relay's last charges, while the store is open
		}
		if d.mnc != nil {
			d.mnc.Close()
		}
		if d.nc != nil {
			d.nc.Close()
		}
		if d.cnc != nil {
			d.cnc.Close()
		}
		if d.eng != nil {
			d.eng.Shutdown()
		}
		if d.store != nil {
			err = errors.Join(err, d.store.Close())
		}
		if d.blobs != nil {
			err = errors.Join(err, d.blobs.Close())
		}
		d.closeErr = err
	})
	return d.closeErr
}

// DeploymentTag is the tag every request signature must carry
// (wire.DeploymentTag of the deployment's id); "" while the store cannot
// say.
func (d *Daemon) DeploymentTag(ctx context.Context) string {
	if id := d.deploymentID(ctx); id != "" {
		return wire.DeploymentTag(id)
	}
	return ""
}

// deploymentID is the deployment's id from the store, read once; "" while
// it cannot be read.
func (d *Daemon) deploymentID(ctx context.Context) string {
	d.deploymentMu.Lock()
	defer d.deploymentMu.Unlock()
	if d.deployment == "" {
		if id, err := d.store.DeploymentID(ctx); err == nil {
			d.deployment = id
		}
	}
	return d.deployment
}

// loadOrCreateIdentity loads an identity file, creating it (0600) when absent.
func loadOrCreateIdentity(path string) (*identity.Identity, error) {
	id, err := identity.Load(path)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if id, err = identity.Generate(); err != nil {
		return nil, err
	}
	if err := id.Save(path); err != nil {
		return nil, err
	}
	return id, nil
}

// bootstrapAdmin registers an admin identity from <data-dir>/admin.id when
// the store has no active admin. It publishes the admin's KEM key too, so
// `unibus --identity local_files/admin.id room create demo` works at once.
func (d *Daemon) bootstrapAdmin(ctx context.Context) error {
	n, err := d.store.CountActiveAdmins(ctx)
	if err != nil || n > 0 {
		return err
	}
	path := filepath.Join(d.cfg.DataDir, "admin.id")
	id, err := loadOrCreateIdentity(path)
	if err != nil {
		return err
	}
	now := time.Now()
	if _, err := d.store.AppendAudit(ctx, audit.Record{Time: now, Actor: d.internal.SignPub().String(), Via: audit.ViaBootstrap,
		Action: audit.ActionBootstrapAdmin, Subject: id.SignPub().String(), Detail: "handle=admin role=admin file=" + path}); err != nil {
		return err
	}
	err = d.store.AddUser(ctx, store.User{SignPub: id.SignPub().String(), Handle: "admin", Role: store.RoleAdmin, Status: store.StatusActive, CreatedAt: now, UpdatedAt: now})
	if errors.Is(err, store.ErrAlreadyRegistered) || errors.Is(err, store.ErrHandleTaken) {
		d.log.Warn("no active admin, and the bootstrap identity cannot be registered (revoked, or handle 'admin' taken); add an admin with 'membershipd user add'", "file", path)
		return nil
	}
	if err != nil {
		return err
	}
	if err := d.store.SetKEMKey(ctx, id.SignPub().String(), id.KEMPub().Bytes(), id.SignKEMBinding(), now); err != nil {
		return err
	}
	d.AdminIDFile = path
	d.log.Info("first run: created and registered an admin identity; keep this file secret", "file", path, "sign_pub", id.SignPub().String())
	return nil
}
