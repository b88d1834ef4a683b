// Package kvstore is the replicated store.Store: unibus's control-plane
// state in JetStream KV buckets, so that it survives the loss of a node of
// a cluster.
//
// # Buckets
//
//	UNIBUS_users            u.<sign-pub>            user record
//	                        h.<hex(handle)>         handle claim → sign-pub
//	                        deployment              the deployment id
//	UNIBUS_rooms            <room>                  room metadata (immutable)
//	                        <room>.e.<epoch>        epoch record
//	UNIBUS_members          <room>                  the room's state: epoch,
//	                                                members, pending flag,
//	                                                lease, unsettled write
//	UNIBUS_room_keys        <room>.<member>.<epoch> sealed room key
//	UNIBUS_rooms_by_member  <sign-pub>              rooms the user is in (index)
//	UNIBUS_nonces           <key-id>.<sha256(nonce)> anti-replay record (memory)
//	UNIBUS_usage            <sign-pub>.<kind>       the user's usage ledger (usage.go)
//
// # Consistency
//
// Every read is a get served by the stream's leader (the buckets' direct
// gets, which any replica may answer, are switched off), and key listings
// come from the leader's stream info, so a read sees every write that
// returned before it (read-your-writes, as store.Store requires).
//
// Each rule that must hold atomically is a compare-and-set on one key:
// a room's member set, epoch and pending flag live together in its
// UNIBUS_members record, so a rotation's coverage check, an addition and a
// removal are serialized by that record's revision. A write that also
// stores sealed keys or epoch records first takes a lease on the record (a
// compare-and-set that marks it busy for LeaseTTL), writes them, commits
// the new state in one more compare-and-set, then marks them settled and
// releases the lease (write.go). Each such write has a random id; a record
// carries the id of the write that stored it and is visible only once it
// is settled or the room's record lists that id as committed. A crash
// between the writes therefore leaves records nobody can read and a lease
// that expires, never access the record does not grant. The state record
// holds no history, so its size does not grow with the room's epochs. The
// complete order of every multi-key write is documented in docs/STORES.md.
//
// # Opening and watching
//
// A store exists before it is open: New returns at once and opens the
// buckets in the background, retrying while a cold cluster has no quorum;
// until then every method fails with store.ErrUnavailable. Watch is served
// by one watch of the users and members buckets per store (watch.go),
// which reports every node's writes; it is established before the store
// opens when Watch was called first.
package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/internal/store/jsretry"
)

// Bucket names (their streams are KV_<name>).
const (
	BucketUsers         = "UNIBUS_users"
	BucketRooms         = "UNIBUS_rooms"
	BucketMembers       = "UNIBUS_members"
	BucketRoomKeys      = "UNIBUS_room_keys"
	BucketRoomsByMember = "UNIBUS_rooms_by_member"
	BucketNonces        = "UNIBUS_nonces"
	BucketUsage         = "UNIBUS_usage"
)

// Buckets lists every bucket the store opens, in creation order.
var Buckets = []string{BucketUsers, BucketRooms, BucketMembers, BucketRoomKeys, BucketRoomsByMember, BucketNonces, BucketUsage}

// Defaults.
const (
	DefaultBootstrap = 120 * time.Second
	DefaultLeaseTTL  = 30 * time.Second
	DefaultTimeout   = 10 * time.Second
	// MaxValueSize bounds one record. The largest is a room's state: about
	// 200 bytes per member, and 70 more per member while a write is not
	// settled yet; the room's epochs and writes add nothing to it.
	MaxValueSize = 1 << 20
)

// Options configure New and Open.
type Options struct {
	// Replicas of every bucket (1 on a single node, 3 in a cluster). An
	// existing bucket keeps its replica count; raising it is an operator
	// step (docs/OPERATIONS.md).
	Replicas int
	// Bootstrap is how long the open keeps retrying bucket creation while
	// JetStream has no meta leader (a cold cluster). Default 120 s.
	Bootstrap time.Duration
	// LeaseTTL is how long a crashed writer can keep a room busy.
	LeaseTTL time.Duration
	// Timeout bounds each JetStream request.
	Timeout time.Duration
	Logger  *slog.Logger
	// Now is the clock for leases (tests); nil = time.Now.
	Now func() time.Time
	// NoCreate binds existing buckets only: admin tools use it so that
	// pointing them at a node that is not in kv mode fails instead of
	// creating empty buckets there.
	NoCreate bool
	// NoUpgrade keeps the store from converting rooms in the legacy record
	// format in the background once it is open (upgrade.go); tests of that
	// format set it.
	NoUpgrade bool
}

func (o *Options) defaults() {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Bootstrap <= 0 {
		o.Bootstrap = DefaultBootstrap
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Store is the JetStream-KV store. It does not own the connection. It
// opens in the background (see New): until then every method but Watch
// and Close fails with an error wrapping store.ErrUnavailable.
type Store struct {
	o       Options
	opening *jsretry.Opening
	// life ends on Close; the watch's goroutines run under it and wg
	// counts them.
	life     context.Context
	stopLife context.CancelFunc
	wg       sync.WaitGroup
	hub      hub

	// Set by the background open before it reports the store open.
	js                                            jetstream.JetStream
	users, rooms, members, keys, byMember, nonces jetstream.KeyValue
	usage                                         jetstream.KeyValue
	streams                                       map[string]jetstream.Stream
	audit                                         jetstream.Stream
}

var _ store.Store = (*Store)(nil)

// New returns the store at once and opens it in the background over nc,
// which must be a connection of the internal identity in the control
// account: it binds every bucket and the audit stream (creating them when
// absent, unless o.NoCreate), retrying for o.Bootstrap while JetStream
// cannot answer yet (no meta leader on a cold cluster), logging progress;
// then, if Watch was called meanwhile, it establishes the watch (retrying
// within the same budget). Until all that is done every method but Watch
// and Close fails with an error wrapping store.ErrUnavailable ("kv store
// not open yet"); WaitOpen waits for it.
func New(nc *nats.Conn, o Options) *Store {
	o.defaults()
	s := &Store{o: o, streams: map[string]jetstream.Stream{}}
	s.life, s.stopLife = context.WithCancel(context.Background())
	s.opening = jsretry.Start("kv store", func(ctx context.Context) error {
		if err := s.open(ctx, nc); err != nil {
			return err
		}
		s.startUpgrade()
		return nil
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

// open is the background open (see New).
func (s *Store) open(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("kv store: %w", err)
	}
	s.js = js
	deadline := time.Now().Add(s.o.Bootstrap)
	for _, name := range Buckets {
		kv, stream, err := OpenBucket(ctx, js, s.bucketConfig(name), !s.o.NoCreate, deadline, s.o.Logger)
		if err != nil {
			return err
		}
		s.streams[name] = stream
		switch name {
		case BucketUsers:
			s.users = kv
		case BucketRooms:
			s.rooms = kv
		case BucketMembers:
			s.members = kv
		case BucketRoomKeys:
			s.keys = kv
		case BucketRoomsByMember:
			s.byMember = kv
		case BucketNonces:
			s.nonces = kv
		case BucketUsage:
			s.usage = kv
		}
	}
	if err := jsretry.Until(ctx, "audit stream", deadline, s.o.Logger, unavailable, func() error { return s.openAudit(ctx) }); err != nil {
		return err
	}
	if !s.bucketsBound() {
		return nil
	}
	// Right after a cold start or a loss of quorum the buckets' own
	// leaders may still be electing: retry within the bootstrap budget.
	for {
		err := s.startWatch(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("watch users and members: %w", err)
		}
		s.o.Logger.Warn("cannot watch the users and members buckets yet; retrying", "err", err)
		if err := jsretry.Sleep(ctx, time.Second); err != nil {
			return fmt.Errorf("watch users and members: %w", err)
		}
	}
}

// check returns nil if the store is open, else the reason, prefixed by op.
func (s *Store) check(op string) error {
	if err := s.opening.Check(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (s *Store) bucketConfig(name string) jetstream.KeyValueConfig {
	c := jetstream.KeyValueConfig{
		Bucket: name, History: 1, Replicas: s.o.Replicas, Storage: jetstream.FileStorage,
		MaxValueSize: MaxValueSize,
	}
	if name == BucketNonces {
		// A nonce needs to outlive the signature window, not a power
		// failure (docs/DESIGN.md): replicated memory storage, per-key TTL.
		c.Storage = jetstream.MemoryStorage
		c.LimitMarkerTTL = time.Minute
		c.MaxValueSize = 1024
	}
	return c
}

// OpenBucket binds bucket cfg.Bucket, creating it when absent (if create), and turns
// its direct gets off so that every get is answered by the stream leader.
// It retries until deadline while JetStream is not ready.
func OpenBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, create bool, deadline time.Time, log *slog.Logger) (jetstream.KeyValue, jetstream.Stream, error) {
	var kv jetstream.KeyValue
	var stream jetstream.Stream
	err := jsretry.Until(ctx, "kv bucket "+cfg.Bucket, deadline, log, unavailable, func() (err error) {
		kv, stream, err = openBucketOnce(ctx, js, cfg, create)
		return err
	})
	return kv, stream, err
}

func openBucketOnce(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, create bool) (jetstream.KeyValue, jetstream.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, jsretry.AttemptTimeout)
	defer cancel()
	name := "KV_" + cfg.Bucket
	stream, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) && !create {
		return nil, nil, &jsretry.Permanent{Err: fmt.Errorf("%w: bucket %s does not exist: is the node running with --store kv?", errNoBucket, cfg.Bucket)}
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err = js.CreateKeyValue(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return nil, nil, err
		}
		stream, err = js.Stream(ctx, name)
	}
	if err != nil {
		return nil, nil, err
	}
	if stream, err = noDirect(ctx, js, stream); err != nil {
		return nil, nil, err
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, nil, err
	}
	return kv, stream, nil
}

// noDirect switches a stream's direct gets off (any replica may answer a
// direct get, so one that is behind could answer with stale state).
func noDirect(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream) (jetstream.Stream, error) {
	cfg := stream.CachedInfo().Config
	if !cfg.AllowDirect {
		return stream, nil
	}
	cfg.AllowDirect = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return nil, fmt.Errorf("turn off direct gets on %s: %w", cfg.Name, err)
	}
	return js.Stream(ctx, cfg.Name)
}

// StreamFor returns the stream behind a bucket (for replication reports),
// or nil while the store is not open.
func (s *Store) StreamFor(bucket string) jetstream.Stream {
	if s.opening.Check() != nil {
		return nil
	}
	return s.streams[bucket]
}

// Close stops an open in progress and the watch, and waits for their
// goroutines. The connection belongs to the caller.
func (s *Store) Close() error {
	s.stopLife()
	s.opening.Stop()
	s.wg.Wait()
	return nil
}

// ctx bounds one operation.
func (s *Store) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.o.Timeout)
}

// unavailable wraps a JetStream failure in store.ErrUnavailable: callers
// deny on it (fail closed).
func unavailable(err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

// wrap prefixes op, and marks anything that is not one of the store's own
// verdicts as unavailability.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	for _, v := range []error{store.ErrNotFound, store.ErrAlreadyRegistered, store.ErrHandleTaken, store.ErrRoomExists,
		store.ErrAlreadyMember, store.ErrNotMember, store.ErrReplay, store.ErrStaleEpoch, store.ErrIncompleteRotation,
		store.ErrRevoked, store.ErrUnavailable, errInvalid} {
		if errors.Is(err, v) {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	return fmt.Errorf("%s: %w", op, unavailable(err))
}

// errNoBucket: a bind-only open found no bucket.
var errNoBucket = errors.New("no such bucket")

// errInvalid marks arguments that cannot name a key (the caller's bug or
// hostile input), as distinct from an unavailable store.
var errInvalid = errors.New("invalid argument")

// token checks that s can be one token of a key: KV keys allow more, but
// unibus's ids are hex and nothing else needs to pass.
func token(what, s string) error {
	if s == "" || len(s) > 128 {
		return fmt.Errorf("%s %q: %w", what, s, errInvalid)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_') {
			return fmt.Errorf("%s %q: %w", what, s, errInvalid)
		}
	}
	return nil
}

// isGone reports a get of a key that holds no value.
func isGone(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
}

// getJSON reads key into v and returns its revision; a missing key is
// store.ErrNotFound.
func getJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any) (uint64, error) {
	e, err := kv.Get(ctx, key)
	if isGone(err) {
		return 0, store.ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("%w: corrupt record %s in %s: %w", store.ErrUnavailable, key, kv.Bucket(), err)
	}
	return e.Revision(), nil
}

// isConflict reports a failed compare-and-set (the key changed or exists).
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// listKeys returns the keys of bucket under prefix (a KV key pattern such
// as "u.>") that currently hold a value, from the stream leader's subject
// listing, not from a consumer that a lagging replica might serve.
func (s *Store) listKeys(ctx context.Context, bucket, pattern string) ([]string, error) {
	stream := s.streams[bucket]
	pre := "$KV." + bucket + "."
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(pre+pattern))
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subj, pre))
	}
	return keys, nil
}

// jsonBytes marshals v; the records are plain structs and cannot fail.
func jsonBytes(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
