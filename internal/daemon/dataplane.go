package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/api"
	"github.com/unibus/unibus/internal/dataplane"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// The data plane's moving parts (docs/DESIGN.md, "Data plane"): the relay
// that copies members' messages into the room streams, the listeners
// membershipd makes for members, the directory both read membership from,
// and the sweep that deletes every listener whose member left.

// sweepEvery is how often each node sweeps the room streams' consumers.
const sweepEvery = 30 * time.Second

// startDataPlane connects the internal identity to the members account
// and starts the relay and the listeners. The streams come later, once
// JetStream can make them (ensureStreams).
func (d *Daemon) startDataPlane() error {
	var err error
	if d.mnc, err = d.eng.ConnectMembers(d.internal.NKey(), d.internal.SignNonce, nats.Name("membershipd-relay")); err != nil {
		return fmt.Errorf("internal members connection: %w", err)
	}
	d.relay, err = dataplane.StartRelay(dataplane.RelayOptions{
		Members: d.mnc, Bus: d.js, Directory: d.dir, MaxSkew: d.cfg.Window,
		Logger: d.log.With("component", "relay"), OnResult: d.metrics.OnRelay, DiskLow: d.DiskLow,
		Quota: d.quotas.msgs, Durable: d.ackBarrier(),
	})
	if err != nil {
		return err
	}
	d.listeners = dataplane.NewListeners(dataplane.ListenersOptions{Bus: d.js, Directory: d.dir, Logger: d.log.With("component", "listeners")})
	d.wg.Go(d.sweep)
	return nil
}

// ensureStreams creates (or updates) the shared stream, retrying until
// ctx ends: on a cold cluster the meta group has no leader yet.
func (d *Daemon) ensureStreams(ctx context.Context) error {
	l := dataplane.StreamLimits{Replicas: d.cfg.KVReplicas, MaxMsgSize: d.cfg.RoomMaxMsgSize, Duplicates: d.cfg.DedupWindow}
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := dataplane.EnsureSharedStream(actx, d.js, l)
		cancel()
		if err == nil {
			d.streamsReady.Store(true)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		}
		if attempt%10 == 0 {
			d.log.Warn("cannot create the shared room stream yet; retrying", "err", err)
		}
		if !sleep(ctx, time.Second) {
			return ctx.Err()
		}
	}
}

// sweep deletes, every sweepEvery, the listeners of members who are no
// longer in their room, on every room stream.
func (d *Daemon) sweep() {
	for sleep(d.ctx, sweepEvery) {
		ctx, cancel := context.WithTimeout(d.ctx, sweepEvery)
		n, err := d.listeners.Sweep(ctx, d.roomStreams(ctx))
		cancel()
		if n > 0 {
			d.log.Info("swept listeners of members no longer in their room", "deleted", n)
		}
		if err != nil && d.ctx.Err() == nil {
			d.log.Debug("listener sweep incomplete", "err", err)
		}
	}
}

// roomStreams names the shared stream and every room stream.
func (d *Daemon) roomStreams(ctx context.Context) []string {
	out := []string{subjects.SharedStream}
	names := d.js.StreamNames(ctx, jetstream.WithStreamListSubject(subjects.RoomPrefix+".>"))
	for n := range names.Name() {
		out = append(out, n)
	}
	return out
}

// storeSource is what the directory reads: rooms and users, from the store.
type storeSource struct{ d *Daemon }

func (s storeSource) Room(ctx context.Context, id string) (dataplane.Room, error) {
	r, err := s.d.store.GetRoom(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return dataplane.Room{}, dataplane.ErrNoRoom
	}
	if err != nil {
		return dataplane.Room{}, err
	}
	ms, err := s.d.store.ListMembers(ctx, id)
	if err != nil {
		return dataplane.Room{}, err
	}
	members := make(map[string]bool, len(ms))
	for _, m := range ms {
		members[m.SignPub] = true
	}
	return dataplane.Room{ID: r.ID, Epoch: r.Epoch, Pending: r.RotationPending, Members: members, MaxAge: r.MaxAge, Dedicated: !r.Shared}, nil
}

func (s storeSource) UserActive(ctx context.Context, signPub string) (bool, error) {
	u, err := s.d.store.GetUser(ctx, signPub)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return u.Status == store.StatusActive, nil
}

// dataPlane is the API's side of the data plane.
type dataPlane struct{ d *Daemon }

var _ api.DataPlane = dataPlane{}

// Kick forgets the user's cached grant, then closes its connections, so
// that they log in again with what the store says now (a revoked user is
// denied).
func (p dataPlane) Kick(nkey string) (int, error) {
	p.d.authz.forget(nkey)
	if sp, err := identity.SignPubFromNKey(nkey); err == nil {
		p.d.dir.ForgetUser(sp.String())
	}
	return p.d.eng.Kick(nkey)
}

func (p dataPlane) CreateRoomStream(ctx context.Context, room string, maxAge time.Duration, maxBytes int64) error {
	err := dataplane.CreateRoomStream(ctx, p.d.js, room, dataplane.StreamLimits{
		Replicas: p.d.cfg.KVReplicas, MaxAge: maxAge, MaxBytes: maxBytes,
		MaxMsgSize: p.d.cfg.RoomMaxMsgSize, Duplicates: p.d.cfg.DedupWindow,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return api.ErrStreamExists
	}
	if err != nil {
		return errors.Join(store.ErrUnavailable, err)
	}
	return nil
}

func (p dataPlane) RoomChanged(room string) { p.d.dir.ForgetRoom(room) }

func (p dataPlane) MemberLeft(ctx context.Context, room store.Room, member string) error {
	_, err := p.d.listeners.DeleteMember(ctx, room.ID, member, !room.Shared)
	return err
}

func (p dataPlane) CreateListener(ctx context.Context, room store.Room, member string, req wire.ListenRequest) (wire.Listener, error) {
	l, err := p.d.listeners.Create(ctx, dataplane.ListenRequest{Room: room.ID, Member: member, Dedicated: !room.Shared,
		Topic: req.Topic, Deliver: req.Deliver, StartSeq: req.StartSeq})
	switch {
	case errors.Is(err, dataplane.ErrBadListen):
		return l, fmt.Errorf("%w%s", api.ErrBadListen, strings.TrimPrefix(err.Error(), dataplane.ErrBadListen.Error()))
	case errors.Is(err, dataplane.ErrTooManyListeners):
		return l, fmt.Errorf("%w%s", api.ErrTooManyListeners, strings.TrimPrefix(err.Error(), dataplane.ErrTooManyListeners.Error()))
	case err != nil:
		return l, errors.Join(store.ErrUnavailable, err)
	}
	return l, nil
}

func (p dataPlane) DeleteListener(ctx context.Context, room store.Room, member, name string) error {
	err := p.d.listeners.Delete(ctx, room.ID, member, !room.Shared, name)
	switch {
	case errors.Is(err, dataplane.ErrNotYours):
		return api.ErrNoListener
	case err != nil:
		return errors.Join(store.ErrUnavailable, err)
	}
	return nil
}
