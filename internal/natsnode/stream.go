package natsnode

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/subjects"
)

// StreamLimits are the replication and retention limits of a room stream.
// Zero values mean "no limit" (Replicas 0 means 1; Duplicates 0 means the
// nats-server default of two minutes).
type StreamLimits struct {
	Replicas   int
	MaxAge     time.Duration
	MaxBytes   int64
	MaxMsgSize int32
	Duplicates time.Duration
}

// EnsureRoomStream creates stream ROOM_<room> on unibus.room.<room>.>, or
// updates an existing one to l: file storage, limits retention, discard
// old. js must be the internal identity's JetStream context.
func EnsureRoomStream(ctx context.Context, js jetstream.JetStream, room string, l StreamLimits) error {
	if !validRoom(room) {
		return fmt.Errorf("ensure room stream: room id %q is not a valid subject token", room)
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
		Duplicates:  l.Duplicates,
		DenyDelete:  true,
		DenyPurge:   true,
	}
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("ensure room stream %s: %w", cfg.Name, err)
	}
	return nil
}

func orUnlimited(v int64) int64 {
	if v <= 0 {
		return -1
	}
	return v
}
