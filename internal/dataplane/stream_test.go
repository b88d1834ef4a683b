package dataplane

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/subjects"
)

// TestStreamConfigs pins the streams' settings: what protects the rooms'
// messages (no delete, no purge; the shared stream refuses rather than
// evicts when full; TTLs allowed) and a room stream is never changed by a
// second creation with other limits.
func TestStreamConfigs(t *testing.T) {
	p := startPlane(t)
	s, err := p.bus.Stream(p.ctx, subjects.SharedStream)
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	if c.Discard != jetstream.DiscardNew || !c.DenyDelete || !c.DenyPurge || !c.AllowMsgTTL ||
		c.Storage != jetstream.FileStorage || len(c.Subjects) != 1 || c.Subjects[0] != "unibus.msgs.>" {
		t.Errorf("shared stream config: %+v", c)
	}
	// Ensured again with other replicas (a node restarted with other
	// flags): its replicas stay as they are.
	if err := EnsureSharedStream(p.ctx, p.bus, StreamLimits{Replicas: 3, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if s, err := p.bus.Stream(p.ctx, subjects.SharedStream); err != nil || s.CachedInfo().Config.Replicas != 1 || s.CachedInfo().Config.Duplicates != time.Minute {
		t.Fatalf("shared stream after a second ensure: %+v %v", s.CachedInfo().Config, err)
	}
	const room = "00112233445566778899aabbccddeeff"
	l := StreamLimits{Replicas: 1, MaxAge: 2 * time.Hour, MaxBytes: 1 << 20, MaxMsgSize: 1024, Duplicates: time.Minute}
	if err := CreateRoomStream(p.ctx, p.bus, room, l); err != nil {
		t.Fatal(err)
	}
	if err := CreateRoomStream(p.ctx, p.bus, room, l); err != nil {
		t.Fatalf("the same creation again: %v", err)
	}
	if err := CreateRoomStream(p.ctx, p.bus, room, StreamLimits{MaxBytes: 1}); err == nil {
		t.Fatal("a second creation with other limits changed nothing but succeeded")
	}
	rs, err := p.bus.Stream(p.ctx, subjects.Stream(room))
	if err != nil {
		t.Fatal(err)
	}
	c = rs.CachedInfo().Config
	if c.MaxAge != 2*time.Hour || c.MaxBytes != 1<<20 || c.MaxMsgSize != 1024 || c.Duplicates != time.Minute ||
		c.Retention != jetstream.LimitsPolicy || !c.DenyPurge || !c.DenyDelete ||
		len(c.Subjects) != 1 || c.Subjects[0] != "unibus.room."+room+".>" {
		t.Errorf("room stream config: %+v", c)
	}
	for _, bad := range []string{"a.b", "ABCD", "00112233445566778899aabbccddeef"} {
		if err := CreateRoomStream(p.ctx, p.bus, bad, l); err == nil {
			t.Errorf("room id %q accepted", bad)
		}
	}
}
