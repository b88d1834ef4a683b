package dataplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/subjects"
)

// StreamLimits are the replication and retention limits of a stream.
// Zero values mean "no limit" (Replicas 0 means 1; Duplicates 0 means the
// nats-server default of two minutes).
type StreamLimits struct {
	Replicas   int
	MaxAge     time.Duration
	MaxBytes   int64
	MaxMsgSize int32
	Duplicates time.Duration
}

// EnsureSharedStream creates the shared stream, UNIBUS_MSGS on
// unibus.msgs.>, or updates an existing one to l. It holds the messages of
// every room without a stream of its own; a room's retention is each
// message's TTL (the relay sets it from the room's max age). It keeps what
// a full disk would otherwise lose: when it reaches l.MaxBytes it refuses
// new messages (discard new) rather than evicting other rooms' messages.
// Messages are never deleted or purged through the API. js must be the
// internal identity's JetStream context in the bus account.
func EnsureSharedStream(ctx context.Context, js jetstream.JetStream, l StreamLimits) error {
	cfg := jetstream.StreamConfig{
		Name:        subjects.SharedStream,
		Description: "unibus rooms: every room without a stream of its own",
		Subjects:    []string{subjects.SharedPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Replicas:    max(l.Replicas, 1),
		MaxAge:      l.MaxAge,
		MaxBytes:    orUnlimited(l.MaxBytes),
		MaxMsgSize:  int32(orUnlimited(int64(l.MaxMsgSize))),
		MaxMsgs:     -1,
		Duplicates:  l.Duplicates,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowMsgTTL: true,
	}
	// An existing stream keeps its replicas: a node restarted with other
	// flags must not lower them (raising is 'membershipd kv
	// raise-replicas'); its other limits follow the flags.
	if s, err := js.Stream(ctx, cfg.Name); err == nil {
		cfg.Replicas = s.CachedInfo().Config.Replicas
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("ensure the shared stream %s: %w", cfg.Name, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("ensure the shared stream %s: %w", cfg.Name, err)
	}
	return nil
}

// CreateRoomStream creates stream ROOM_<room> on unibus.room.<room>.>: a
// room with a stream of its own (a room with a byte limit; rooms created
// before the shared stream existed have one too). File storage, limits
// retention, discard old, no deletes or purges. It never changes an
// existing stream: creating one that exists with the same configuration
// succeeds (a retried creation), with another fails. Callers create it
// only for a room the store has just created. js must be the internal
// identity's JetStream context in the bus account.
func CreateRoomStream(ctx context.Context, js jetstream.JetStream, room string, l StreamLimits) error {
	if !validRoom(room) {
		return fmt.Errorf("create room stream: room id %q is not 32 lowercase hex characters", room)
	}
	dup := l.Duplicates
	if dup == 0 {
		dup = 2 * time.Minute // nats-server's default
	}
	if l.MaxAge > 0 && dup > l.MaxAge {
		dup = l.MaxAge // JetStream refuses a duplicate window longer than the age limit
	}
	cfg := jetstream.StreamConfig{
		Name:        subjects.Stream(room),
		Description: "unibus room " + room,
		Subjects:    []string{subjects.Room(room)},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Replicas:    max(l.Replicas, 1),
		MaxAge:      l.MaxAge,
		MaxBytes:    orUnlimited(l.MaxBytes),
		MaxMsgSize:  int32(orUnlimited(int64(l.MaxMsgSize))),
		MaxMsgs:     -1,
		Duplicates:  dup,
		DenyDelete:  true,
		DenyPurge:   true,
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		return fmt.Errorf("create room stream %s: %w", cfg.Name, err)
	}
	return nil
}

func orUnlimited(v int64) int64 {
	if v <= 0 {
		return -1
	}
	return v
}

// validRoom reports whether r is a room id: 32 lowercase hex characters,
// one subject token usable in a stream name.
func validRoom(r string) bool { return len(r) == 32 && lowerHex(r) }

// validSignPub reports whether s is a sign-pub: 64 lowercase hex.
func validSignPub(s string) bool { return len(s) == 64 && lowerHex(s) }

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
