// Package objblobs keeps blobs in the JetStream object store UNIBUS_blobs
// (stream OBJ_UNIBUS_blobs), replicated like the KV buckets: the blob store
// of a kv-mode deployment.
//
// An object is named <room>.<id>. Put streams the upload into the object
// store while hashing it; a digest mismatch, an oversized body or a cut
// connection fails the reader, and the object store then purges the chunks
// it received, so nothing is left behind. The object's metadata record is
// written last, so a blob is visible only once all its bytes are stored.
package objblobs

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/blobstore"
	"github.com/unibus/unibus/internal/store/jsretry"
)

// Bucket is the object store's name.
const Bucket = "UNIBUS_blobs"

// Options configure New and Open.
type Options struct {
	Replicas  int           // default 1
	Bootstrap time.Duration // how long to retry while JetStream is not ready; default 120 s
	Logger    *slog.Logger
}

// Store is the object-store blob store. It opens in the background (see
// New); until then every method fails with blobstore.ErrUnavailable.
type Store struct {
	opening *jsretry.Opening
	// Set by the background open before it reports the store open.
	obs    jetstream.ObjectStore
	stream jetstream.Stream
}

var _ blobstore.Store = (*Store)(nil)

// New returns the store at once and opens it in the background over nc
// (the internal identity's control-account connection): it binds the
// object store, creating it when absent, with direct gets off so that the
// stream leader answers every metadata read, retrying for o.Bootstrap
// while JetStream is not ready (a cold cluster). Until the open completes
// every method fails with an error wrapping blobstore.ErrUnavailable;
// WaitOpen waits for it. The store does not own nc; Close stops an open
// still in progress.
func New(nc *nats.Conn, o Options) *Store {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Bootstrap <= 0 {
		o.Bootstrap = 120 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Store{}
	s.opening = jsretry.Start("blob store", func(ctx context.Context) error {
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("object store: %w", err)
		}
		deadline := time.Now().Add(o.Bootstrap)
		return jsretry.Until(ctx, "object store "+Bucket, deadline, o.Logger, nil, func() error {
			return s.open(ctx, js, o.Replicas)
		})
	})
	return s
}

// Open is New followed by WaitOpen: it returns the store once it is open.
func Open(ctx context.Context, nc *nats.Conn, o Options) (*Store, error) {
	s := New(nc, o)
	if err := s.WaitOpen(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// WaitOpen waits until the background open has ended and returns its
// error, or ctx's if ctx ends first.
func (s *Store) WaitOpen(ctx context.Context) error { return s.opening.Wait(ctx) }

// Close stops an open still in progress. It releases nothing else: the
// connection belongs to the caller.
func (s *Store) Close() error {
	s.opening.Stop()
	return nil
}

func (s *Store) open(ctx context.Context, js jetstream.JetStream, replicas int) error {
	ctx, cancel := context.WithTimeout(ctx, jsretry.AttemptTimeout)
	defer cancel()
	name := "OBJ_" + Bucket
	stream, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: Bucket, Replicas: replicas, Storage: jetstream.FileStorage})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return err
		}
		stream, err = js.Stream(ctx, name)
	}
	if err != nil {
		return err
	}
	if cfg := stream.CachedInfo().Config; cfg.AllowDirect {
		cfg.AllowDirect = false
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("turn off direct gets on %s: %w", name, err)
		}
		if stream, err = js.Stream(ctx, name); err != nil {
			return err
		}
	}
	obs, err := js.ObjectStore(ctx, Bucket)
	if err != nil {
		return err
	}
	s.obs, s.stream = obs, stream
	return nil
}

// Stream returns the object store's stream (for replication reports), or
// nil while the store is not open.
func (s *Store) Stream() jetstream.Stream {
	if s.opening.Check() != nil {
		return nil
	}
	return s.stream
}

// name checks that the store is open and returns the object name of a
// blob.
func (s *Store) name(room, id string) (string, error) {
	if err := s.opening.Check(); err != nil {
		return "", err
	}
	if !blobstore.ValidID(id) {
		return "", blobstore.ErrBadID
	}
	if !blobstore.ValidRoomID(room) {
		return "", blobstore.ErrBadRoomID
	}
	return room + "." + id, nil
}

// Put implements blobstore.Store.
func (s *Store) Put(ctx context.Context, room, id string, r io.Reader, max int64) (blobstore.Info, error) {
	n, err := s.name(room, id)
	if err != nil {
		return blobstore.Info{}, err
	}
	if info, err := s.Stat(ctx, room, id); err == nil {
		return info, nil
	} else if !errors.Is(err, blobstore.ErrNotFound) {
		return blobstore.Info{}, err
	}
	want, _ := hex.DecodeString(id)
	vr := &verifying{r: r, left: max, h: sha256.New(), want: want, ctx: ctx}
	if _, err := s.obs.Put(ctx, jetstream.ObjectMeta{Name: n}, vr); err != nil {
		if vr.err != nil {
			return blobstore.Info{}, vr.err
		}
		return blobstore.Info{}, fmt.Errorf("store blob: %w", err)
	}
	return s.Stat(ctx, room, id)
}

// verifying passes r through, failing past left bytes and, at the end, if
// the bytes do not hash to want: the object store then drops the upload.
type verifying struct {
	r    io.Reader
	left int64
	h    hash.Hash
	want []byte
	ctx  context.Context
	err  error
}

func (v *verifying) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if err := v.ctx.Err(); err != nil {
		v.err = err
		return 0, err
	}
	if int64(len(p)) > v.left+1 {
		p = p[:v.left+1]
	}
	n, err := v.r.Read(p)
	v.left -= int64(n)
	if v.left < 0 {
		v.err = blobstore.ErrTooLarge
		return 0, v.err
	}
	v.h.Write(p[:n])
	if errors.Is(err, io.EOF) && subtle.ConstantTimeCompare(v.h.Sum(nil), v.want) != 1 {
		v.err = blobstore.ErrDigestMismatch
		return 0, v.err
	}
	if err != nil && !errors.Is(err, io.EOF) {
		v.err = err
	}
	return n, err
}

// Open implements blobstore.Store.
func (s *Store) Open(ctx context.Context, room, id string) (io.ReadCloser, blobstore.Info, error) {
	n, err := s.name(room, id)
	if err != nil {
		return nil, blobstore.Info{}, err
	}
	res, err := s.obs.Get(ctx, n)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, blobstore.Info{}, blobstore.ErrNotFound
	}
	if err != nil {
		return nil, blobstore.Info{}, fmt.Errorf("open blob: %w", err)
	}
	oi, err := res.Info()
	if err != nil {
		res.Close()
		return nil, blobstore.Info{}, fmt.Errorf("open blob: %w", err)
	}
	return res, info(room, id, oi), nil
}

// Stat implements blobstore.Store.
func (s *Store) Stat(ctx context.Context, room, id string) (blobstore.Info, error) {
	n, err := s.name(room, id)
	if err != nil {
		return blobstore.Info{}, err
	}
	oi, err := s.obs.GetInfo(ctx, n)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return blobstore.Info{}, blobstore.ErrNotFound
	}
	if err != nil {
		return blobstore.Info{}, fmt.Errorf("stat blob: %w", err)
	}
	return info(room, id, oi), nil
}

func info(room, id string, oi *jetstream.ObjectInfo) blobstore.Info {
	return blobstore.Info{Room: room, ID: id, Size: int64(oi.Size), Created: oi.ModTime.UTC()}
}
