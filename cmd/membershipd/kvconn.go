package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/store/kvstore"
)

// kvFlags select a live node's KV store over its internal identity.
type kvFlags struct {
	natsURL  string
	idFile   string
	ca       string
	replicas int
	nodeEnv  string

	flags        *pflag.FlagSet
	replicasName string
	resolved     bool
	// node are the node settings the flags' defaults came from (nil: none).
	node *nodeSettings
	// caIfOffered: the CA came from the node settings for a loopback
	// target, so it verifies the node's certificate when the node speaks
	// TLS, and a plaintext loopback node (a temporary one) is still reached.
	caIfOffered bool
	// actor is the internal identity's sign-pub once dialed: the actor
	// this host's admin commands are audited as.
	actor string
}

func (k *kvFlags) register(f *pflag.FlagSet, replicasName string) {
	k.flags, k.replicasName = f, replicasName
	f.StringVar(&k.natsURL, "nats-url", "nats://127.0.0.1:4250", "the live node's NATS URL (comma-separated seeds for fail-over); on a node, from its cluster.env")
	f.StringVar(&k.idFile, "internal-id-file", filepath.Join("local_files", "internal.id"), "membershipd's internal identity file (0600); on a node, its INTERNAL_ID_FILE")
	f.StringVar(&k.ca, "ca", "", "CA certificate that signed the node's TLS certificate (required for a non-loopback --nats-url); on a node, its CA_CERT")
	f.IntVar(&k.replicas, replicasName, 1, "replicas of buckets this command creates; on a node, its KV_REPLICAS")
	f.StringVar(&k.nodeEnv, "node-env", "", "the node's settings (default: cluster.env beside this binary, when present; 'none' reads none)")
}

// changed reports whether a flag was given (on the command line or as
// UNIBUS_*).
func (k *kvFlags) changed(name string) bool {
	if k.flags == nil {
		return false
	}
	f := k.flags.Lookup(name)
	return f != nil && f.Changed
}

// resolve fills every flag not given from the node settings, once.
func (k *kvFlags) resolve() error {
	if k.resolved {
		return nil
	}
	k.resolved = true
	node, err := findNodeSettings(k.nodeEnv)
	if err != nil {
		return &exitError{2, err}
	}
	if node == nil {
		return nil
	}
	k.node = node
	if v := node.natsURL(); v != "" && !k.changed("nats-url") {
		k.natsURL = v
	}
	if v := node.get("INTERNAL_ID_FILE"); v != "" && !k.changed("internal-id-file") {
		k.idFile = v
	}
	if v := node.get("CA_CERT"); v != "" && !k.changed("ca") {
		k.ca, k.caIfOffered = v, true
	}
	if v := node.get("KV_REPLICAS"); v != "" && !k.changed(k.replicasName) {
		n, err := strconv.Atoi(v)
		if err != nil {
			return &exitError{2, fmt.Errorf("node settings %s: KV_REPLICAS %q is not a number", node.path, v)}
		}
		k.replicas = n
	}
	return nil
}

// from names where the connection settings came from, for messages.
func (k *kvFlags) from() string {
	if k.node == nil {
		return ""
	}
	return " (settings from " + k.node.path + ")"
}

// checkTarget refuses a non-loopback URL without --ca before any
// connection is made: the allowlist (handles, roles, sign-pubs) and the
// internal identity's login would otherwise travel unauthenticated.
func (k *kvFlags) checkTarget() error {
	if err := k.resolve(); err != nil {
		return err
	}
	if k.natsURL == "" {
		return &exitError{2, errors.New("--nats-url is required")}
	}
	for _, raw := range strings.Split(k.natsURL, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" {
			return &exitError{2, fmt.Errorf("--nats-url %q is not a URL such as nats://127.0.0.1:4250", raw)}
		}
		if u.User != nil {
			return &exitError{2, errors.New("--nats-url must not carry credentials; the internal identity file is used")}
		}
		host := u.Hostname()
		if !natsnode.IsLoopback(host) {
			k.caIfOffered = false // off loopback, TLS is required
			if k.ca == "" {
				return &exitError{2, fmt.Errorf("refusing %s without --ca: a non-loopback target needs TLS pinned to its CA (the allowlist would otherwise travel in clear)", u.Host)}
			}
		}
	}
	return nil
}

// connectWait is how long dial retries a node that refuses connections:
// one starting (the runbook's temporary node, a restarting unit).
const connectWait = 30 * time.Second

// dial connects as the internal identity (control account; with
// natsnode.BusLogin among extra, the bus account).
func (k *kvFlags) dial(ctx context.Context, extra ...nats.Option) (*nats.Conn, error) {
	if err := k.checkTarget(); err != nil {
		return nil, err
	}
	id, err := identity.Load(k.idFile)
	if err != nil {
		return nil, fmt.Errorf("internal identity%s: %w", k.from(), err)
	}
	k.actor = id.SignPub().String()
	opts := []nats.Option{nats.Nkey(id.NKey(), id.SignNonce), nats.Name("membershipd-admin"), nats.Timeout(5 * time.Second)}
	switch {
	case k.ca != "" && k.caIfOffered:
		opt, err := tlsIfOffered(k.ca)
		if err != nil {
			return nil, &exitError{2, fmt.Errorf("CA%s: %w", k.from(), err)}
		}
		opts = append(opts, opt)
	case k.ca != "":
		opts = append(opts, nats.RootCAs(k.ca))
	}
	opts = append(opts, extra...)
	deadline := time.Now().Add(connectWait)
	for {
		nc, err := nats.Connect(k.natsURL, opts...)
		if err == nil {
			return nc, nil
		}
		if !errors.Is(err, nats.ErrNoServers) || time.Now().After(deadline) {
			return nil, &exitError{3, fmt.Errorf("connect to %s%s: %w", k.natsURL, k.from(), err)}
		}
		select {
		case <-ctx.Done():
			return nil, &exitError{3, fmt.Errorf("connect to %s%s: %w", k.natsURL, k.from(), ctx.Err())}
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// tlsIfOffered verifies the server with the CA in caFile when it speaks
// TLS, without requiring TLS (nats.RootCAs would): for a loopback node.
func tlsIfOffered(caFile string) (nats.Option, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return func(o *nats.Options) error {
		o.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		return nil
	}, nil
}

// openKV dials and binds the store's buckets; it fails if the node is not
// in kv mode instead of creating buckets there.
func (k *kvFlags) openKV(ctx context.Context) (*kvstore.Store, *nats.Conn, error) {
	nc, err := k.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	s, err := kvstore.Open(ctx, nc, kvstore.Options{Replicas: k.replicas, Bootstrap: 30 * time.Second, NoCreate: true})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return s, nc, nil
}
