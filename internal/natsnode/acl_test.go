package natsnode

import (
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"strings"
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

// The per-grant deny lists are computed once with a sample id; that is
// exact only if no literal token of the deny list could equal a token that
// carries a room id or a sign-pub.
func TestDenyListIsIndependentOfIDs(t *testing.T) {
	for _, d := range deniedSubjects {
		for _, tok := range strings.Split(d, ".") {
			if tok == "*" || tok == ">" {
				continue
			}
			if lowerHex(tok) || strings.HasPrefix(tok, "ROOM_") || strings.HasPrefix(tok, "_INBOX_") {
				t.Errorf("deny entry %q has token %q, which a room id or sign-pub token could equal", d, tok)
			}
		}
	}
}

// A grant's deny lists hold exactly the entries that reach into its allow
// lists, and the permission it gets decides every subject as the whole deny
// list would.
func TestFilteredDenyListDecidesAsTheWholeList(t *testing.T) {
	// colliding keeps what an allow entry reaches into, and only that.
	got := colliding(deniedSubjects, []string{"$JS.API.>"})
	if !slices.Contains(got, "$JS.API.STREAM.CREATE.>") || !slices.Contains(got, "$JS.API.CONSUMER.CREATE.*") ||
		slices.Contains(got, "$KV.>") || slices.Contains(got, "$SYS.>") {
		t.Errorf("deny entries colliding with $JS.API.>: %v", got)
	}
	if got := colliding(deniedSubjects, []string{">"}); !slices.Equal(got, deniedSubjects) {
		t.Errorf("deny entries colliding with >: %v", got)
	}

	// The filtering itself, where it has work to do: allow lists that reach
	// into the deny list decide the corpus (below) as the whole list does,
	// and some subject is in fact denied.
	broad := [][]string{{">"}, {"$JS.API.>"}, {"$JS.API.CONSUMER.>", "$KV.x.>"}, {"$JS.*.>", "_INBOX.>"}}
	defer func() {
		for _, allow := range broad {
			deniedSome := false
			f := &server.SubjectPermission{Allow: allow, Deny: colliding(deniedSubjects, allow)}
			w := &server.SubjectPermission{Allow: allow, Deny: deniedSubjects}
			for _, s := range corpusOf(deniedSubjects) {
				if allowed(f, s) != allowed(w, s) {
					t.Errorf("allow %v: %q decided differently with deny %v", allow, s, f.Deny)
				}
				deniedSome = deniedSome || !allowed(w, s) && allowed(&server.SubjectPermission{Allow: allow}, s)
			}
			if !deniedSome {
				t.Errorf("allow %v: no subject of the corpus is denied; the comparison shows nothing", allow)
			}
		}
	}()

	rnd := rand.New(rand.NewPCG(1, 2))
	hexOf := func(n int) string {
		b := make([]byte, n/2)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return hex.EncodeToString(b)
	}
	// Subjects to decide: every deny entry with its wildcards filled in,
	// and as a wildcard subscription; and each grant's own subjects below.
	corpus := corpusOf(deniedSubjects)
	for i := range 200 {
		g := Grant{Active: i%7 != 0, SignPubHex: hexOf(64)}
		for range rnd.IntN(4) {
			g.Rooms = append(g.Rooms, hexOf(32))
		}
		if i%11 == 0 {
			g.Rooms = append(g.Rooms, "Not_Hex-Room") // valid, not hex: the whole list
		}
		subjects := slices.Clone(corpus)
		for _, r := range g.Rooms {
			for _, s := range roomPublish(r) {
				subjects = append(subjects, s, strings.ReplaceAll(s, ">", "x.y"))
			}
			subjects = append(subjects, "$JS.API.STREAM.CREATE.ROOM_"+r, "$JS.API.STREAM.DELETE.ROOM_"+r,
				"$JS.API.CONSUMER.CREATE.ROOM_"+r, "$JS.API.CONSUMER.DURABLE.CREATE.ROOM_"+r+".d")
		}
		subjects = append(subjects, "_INBOX_"+g.SignPubHex+".x", "_INBOX_"+g.SignPubHex+".>")
		p := Permissions(g)
		whole := &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: p.Publish.Allow, Deny: deniedSubjects},
			Subscribe: &server.SubjectPermission{Allow: p.Subscribe.Allow, Deny: deniedSubjects},
		}
		for _, s := range subjects {
			if allowed(p.Publish, s) != allowed(whole.Publish, s) || allowed(p.Subscribe, s) != allowed(whole.Subscribe, s) {
				t.Fatalf("grant %+v: subject %q decided differently with the filtered deny lists %v / %v", g, s, p.Publish.Deny, p.Subscribe.Deny)
			}
		}
		if slices.Contains(g.Rooms, "Not_Hex-Room") && g.Active && len(p.Publish.Deny) != len(deniedSubjects) {
			t.Fatalf("a non-hex room id got deny list %v, want the whole list", p.Publish.Deny)
		}
	}
}

// corpusOf returns subjects around a deny list: each entry, with its
// wildcards filled in, and broad wildcard subscriptions.
func corpusOf(deny []string) []string {
	var corpus []string
	for _, d := range deny {
		corpus = append(corpus, d,
			strings.NewReplacer("*", "x", ">", "a.b").Replace(d),
			strings.NewReplacer("*", "ROOM_x", ">", "ROOM_x.c").Replace(d))
	}
	return append(corpus, ">", "$JS.>", "$JS.API.>", "$JS.API.*", "$JS.API.STREAM.*", "$JS.API.CONSUMER.>", "_INBOX.>", "unibus.>")
}
