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

const (
	aliceHex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	otherHex = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	roomA    = "00112233445566778899aabbccddeeff"
)

// TestPermissionsTable: a member may publish only on its own ingress and
// the flow-control subjects, and subscribe only to its own inbox and
// deliveries, whatever rooms it is in.
func TestPermissionsTable(t *testing.T) {
	p := Permissions(Grant{Active: true, SignPubHex: aliceHex})
	if p == nil || p.Publish == nil || p.Subscribe == nil || p.Response != nil {
		t.Fatalf("permissions shape: %+v", p)
	}
	if len(p.Publish.Allow) != 2 || len(p.Subscribe.Allow) != 2 {
		t.Fatalf("a member's permissions have %d+%d entries, want 2+2 whatever its rooms", len(p.Publish.Allow), len(p.Subscribe.Allow))
	}
	tests := []struct {
		pub     bool // publish (else subscribe)
		subject string
		want    bool
	}{
		{true, "unibus.in." + aliceHex + "." + roomA + ".msg", true},
		{true, "unibus.in." + aliceHex + "." + roomA + ".a.b.c", true},
		{true, "$JS.FC.UNIBUS_MSGS.x.y", true},
		{true, "unibus.in." + otherHex + "." + roomA + ".msg", false},
		{true, "unibus.in." + aliceHex, false},
		{true, "unibus.room." + roomA + ".msg", false},
		{true, "unibus.msgs." + roomA + ".msg", false},
		{true, "unibus.dlv." + otherHex + ".x", false},
		{true, "_INBOX_" + otherHex + ".x", false},
		{true, "$JS.API.STREAM.INFO.UNIBUS_MSGS", false},
		{true, "$JS.API.CONSUMER.CREATE.UNIBUS_MSGS.x", false},
		{true, "$JS.ACK.UNIBUS_MSGS.c.1.1.1.1.1", false},
		{true, "$KV.UNIBUS_users.x", false},
		{true, "$O.UNIBUS_blobs.C.x", false},
		{true, "$SYS.REQ.SERVER.PING", false},
		{false, "_INBOX_" + aliceHex + ".x", true},
		{false, "_INBOX_" + aliceHex + ".>", true},
		{false, "unibus.dlv." + aliceHex + ".tok", true},
		{false, "unibus.dlv." + aliceHex + ".>", true},
		{false, "unibus.dlv." + otherHex + ".tok", false},
		{false, "unibus.dlv.>", false},
		{false, "unibus.dlv.*.tok", false},
		{false, "_INBOX_" + otherHex + ".x", false},
		{false, "unibus.in.>", false},
		{false, "unibus.room.>", false},
		{false, "unibus.msgs.>", false},
		{false, "$JS.FC.>", false},
		{false, "$SYS.>", false},
		{false, ">", false},
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
	for name, g := range map[string]Grant{
		"inactive":          {Active: false, SignPubHex: aliceHex},
		"zero":              {},
		"wildcard sign-pub": {Active: true, SignPubHex: "*"},
		"multi-token":       {Active: true, SignPubHex: "a.b"},
		"upper-case hex":    {Active: true, SignPubHex: "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"},
		"short":             {Active: true, SignPubHex: aliceHex[:62]},
	} {
		p := Permissions(g)
		if p == nil || p.Publish == nil || p.Subscribe == nil || len(p.Publish.Allow) == 0 || len(p.Subscribe.Allow) == 0 {
			t.Errorf("%s: permissions %+v could mean allow-all", name, p)
			continue
		}
		for _, s := range []string{"unibus.in." + aliceHex + ".r.t", "x", "$KV.a.b", "_INBOX.x", "$JS.FC.a.b", "a.b"} {
			if allowed(p.Publish, s) {
				t.Errorf("%s: publish %s allowed", name, s)
			}
		}
		for _, s := range []string{"_INBOX_" + aliceHex + ".x", "unibus.dlv." + aliceHex + ".x", "_INBOX.x", "a.b"} {
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
