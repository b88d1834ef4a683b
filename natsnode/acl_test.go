package natsnode

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// allowed evaluates a permission the way nats-server does for a subject:
// some allow pattern matches it and no deny pattern does, using the
// server's own subject matching.
func allowed(p *server.SubjectPermission, subject string) bool {
	ok := false
	for _, a := range p.Allow {
		if server.SubjectMatchesFilter(subject, a) {
			ok = true
			break
		}
	}
	for _, d := range p.Deny {
		if server.SubjectMatchesFilter(subject, d) {
			return false
		}
	}
	return ok
}

func TestPermissionsTable(t *testing.T) {
	const (
		a, c  = "aaaa1111", "cccc3333" // alice's rooms
		b     = "bbbb2222"             // not hers
		hex   = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		other = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	)
	p := Permissions(Grant{Active: true, Rooms: []string{a, c}, SignPubHex: hex})
	if p == nil || p.Publish == nil || p.Subscribe == nil || p.Response != nil {
		t.Fatalf("permissions shape: %+v", p)
	}
	tests := []struct {
		pub     bool // publish (else subscribe)
		subject string
		want    bool
	}{
		// Room traffic.
		{true, "unibus.room." + a + ".msg", true},
		{true, "unibus.room." + c + ".a.b.c", true},
		{true, "unibus.room." + b + ".msg", false},
		{true, "unibus.room." + a, false},
		{true, "unibus.other", false},
		{false, "unibus.room." + a + ".>", true},
		{false, "unibus.room." + a + ".msg", true},
		{false, "unibus.room." + b + ".>", false},
		{false, "unibus.room.>", false},
		{false, "unibus.room.*.msg", false},
		{false, ">", false},
		// Inboxes.
		{false, "_INBOX_" + hex + ".>", true},
		{false, "_INBOX_" + hex + ".x.y", true},
		{false, "_INBOX_" + other + ".>", false},
		{false, "_INBOX.>", false},
		{true, "_INBOX_" + other + ".x", false},
		// JetStream reads of her rooms, as nats.go's jetstream package sends them.
		{true, "$JS.API.STREAM.INFO.ROOM_" + a, true},
		{true, "$JS.API.STREAM.MSG.GET.ROOM_" + a, true},
		{true, "$JS.API.CONSUMER.CREATE.ROOM_" + a + ".ord1", true},
		{true, "$JS.API.CONSUMER.CREATE.ROOM_" + a + ".dur1.unibus.room." + a + ".msg", true},
		{true, "$JS.API.CONSUMER.INFO.ROOM_" + a + ".dur1", true},
		{true, "$JS.API.CONSUMER.DELETE.ROOM_" + a + ".dur1", true},
		{true, "$JS.API.CONSUMER.MSG.NEXT.ROOM_" + a + ".dur1", true},
		{true, "$JS.ACK.ROOM_" + a + ".dur1.1.2.3.4.5", true},
		// ... and not of others.
		{true, "$JS.API.STREAM.INFO.ROOM_" + b, false},
		{true, "$JS.API.CONSUMER.CREATE.ROOM_" + b + ".x", false},
		{true, "$JS.API.CONSUMER.MSG.NEXT.ROOM_" + b + ".x", false},
		{true, "$JS.ACK.ROOM_" + b + ".x.1.2.3.4.5", false},
		// Legacy consumer-create forms nats.go's jetstream package never sends.
		{true, "$JS.API.CONSUMER.CREATE.ROOM_" + a, false},
		{true, "$JS.API.CONSUMER.DURABLE.CREATE.ROOM_" + a + ".dur1", false},
		// Stream administration, even of her own rooms.
		{true, "$JS.API.STREAM.CREATE.ROOM_" + a, false},
		{true, "$JS.API.STREAM.UPDATE.ROOM_" + a, false},
		{true, "$JS.API.STREAM.DELETE.ROOM_" + a, false},
		{true, "$JS.API.STREAM.PURGE.ROOM_" + a, false},
		{true, "$JS.API.STREAM.MSG.DELETE.ROOM_" + a, false},
		{true, "$JS.API.STREAM.SNAPSHOT.ROOM_" + a, false},
		{true, "$JS.API.STREAM.RESTORE.ROOM_" + a, false},
		{true, "$JS.API.STREAM.LEADER.STEPDOWN.ROOM_" + a, false},
		{true, "$JS.API.DIRECT.GET.ROOM_" + a, false}, // room streams do not allow direct gets
		{true, "$JS.API.STREAM.LIST", false},
		{true, "$JS.API.STREAM.NAMES", false},
		{true, "$JS.API.INFO", false},
		{true, "$JS.API.META.LEADER.STEPDOWN", false},
		{true, "$JS.FC.ROOM_" + a + ".x.y", false},
		// Control plane and system.
		{true, "$KV.UNIBUS_users.x", false},
		{false, "$KV.UNIBUS_users.>", false},
		{true, "$JS.API.STREAM.INFO.KV_UNIBUS_users", false},
		{true, "$JS.API.STREAM.INFO.OBJ_UNIBUS_blobs", false},
		{true, "$O.UNIBUS_blobs.C.x", false},
		{true, "$SYS.REQ.SERVER.PING", false},
		{false, "$SYS.>", false},
		{false, "$JS.EVENT.>", false},
	}
	for _, tt := range tests {
		perm, kind := p.Subscribe, "sub"
		if tt.pub {
			perm, kind = p.Publish, "pub"
		}
		if got := allowed(perm, tt.subject); got != tt.want {
			t.Errorf("%s %s: allowed=%v, want %v", kind, tt.subject, got, tt.want)
		}
	}
}

func TestPermissionsNeverAllowAll(t *testing.T) {
	const hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for name, g := range map[string]Grant{
		"no rooms":           {Active: true, SignPubHex: hex},
		"inactive":           {Active: false, Rooms: []string{"aaaa"}, SignPubHex: hex},
		"zero":               {},
		"bad room ids":       {Active: true, Rooms: []string{"", "a.b", "*", ">", "a b"}, SignPubHex: hex},
		"wildcard sign-pub":  {Active: true, SignPubHex: "*"},
		"multi-token inbox":  {Active: true, SignPubHex: "a.b"},
		"upper-case hex":     {Active: true, SignPubHex: "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"},
		"room with wildcard": {Active: true, Rooms: []string{"aaaa.>"}},
	} {
		p := Permissions(g)
		if p == nil || p.Publish == nil || p.Subscribe == nil || len(p.Publish.Allow) == 0 || len(p.Subscribe.Allow) == 0 {
			t.Errorf("%s: permissions %+v could mean allow-all", name, p)
			continue
		}
		for _, s := range []string{"unibus.room.aaaa.x", "x", "$KV.a.b", "_INBOX.x", "a.b"} {
			if allowed(p.Publish, s) {
				t.Errorf("%s: publish %s allowed", name, s)
			}
		}
		inbox := "_INBOX_" + hex + ".x"
		if got, want := allowed(p.Subscribe, inbox), g.SignPubHex == hex; got != want {
			t.Errorf("%s: subscribe %s = %v, want %v", name, inbox, got, want)
		}
		for _, s := range []string{"unibus.room.aaaa.x", "_INBOX.x", "a.b"} {
			if allowed(p.Subscribe, s) {
				t.Errorf("%s: subscribe %s allowed", name, s)
			}
		}
	}
}

func TestInternalPermissions(t *testing.T) {
	p := InternalPermissions()
	for _, s := range []string{"$KV.UNIBUS_users.x", "$JS.API.STREAM.CREATE.ROOM_a", "unibus.room.a.b"} {
		if !allowed(p.Publish, s) || !allowed(p.Subscribe, s) {
			t.Errorf("internal identity denied %s", s)
		}
	}
}
