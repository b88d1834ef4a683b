package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
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
	// actor is the internal identity's sign-pub once dialed: the actor
	// this host's admin commands are audited as.
	actor string
}

func (k *kvFlags) register(f *pflag.FlagSet, replicasName string) {
	f.StringVar(&k.natsURL, "nats-url", "nats://127.0.0.1:4250", "the live node's NATS URL (comma-separated seeds for fail-over)")
	f.StringVar(&k.idFile, "internal-id-file", filepath.Join("local_files", "internal.id"), "membershipd's internal identity file (0600)")
	f.StringVar(&k.ca, "ca", "", "CA certificate that signed the node's TLS certificate (required for a non-loopback --nats-url)")
	f.IntVar(&k.replicas, replicasName, 1, "replicas of buckets this command creates")
}

// checkTarget refuses a non-loopback URL without --ca before any
// connection is made: the allowlist (handles, roles, sign-pubs) and the
// internal identity's login would otherwise travel unauthenticated.
func (k *kvFlags) checkTarget() error {
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
		if k.ca == "" && !natsnode.IsLoopback(host) {
			return &exitError{2, fmt.Errorf("refusing %s without --ca: a non-loopback target needs TLS pinned to its CA (the allowlist would otherwise travel in clear)", u.Host)}
		}
	}
	return nil
}

// dial connects as the internal identity (control account; with
// natsnode.BusLogin among extra, the bus account).
func (k *kvFlags) dial(ctx context.Context, extra ...nats.Option) (*nats.Conn, error) {
	if err := k.checkTarget(); err != nil {
		return nil, err
	}
	id, err := identity.Load(k.idFile)
	if err != nil {
		return nil, fmt.Errorf("internal identity: %w", err)
	}
	k.actor = id.SignPub().String()
	opts := []nats.Option{nats.Nkey(id.NKey(), id.SignNonce), nats.Name("membershipd-admin"), nats.Timeout(5 * time.Second)}
	if k.ca != "" {
		opts = append(opts, nats.RootCAs(k.ca))
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(k.natsURL, opts...)
	if err != nil {
		return nil, &exitError{3, fmt.Errorf("connect to %s: %w", k.natsURL, err)}
	}
	return nc, nil
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
