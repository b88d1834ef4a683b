package natsnode

import (
	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/unibus/subjects"
)

// Grant is what the control plane says about a data-plane user.
type Grant struct {
	Active     bool     // false: the user is unknown or revoked and is denied
	Rooms      []string // ids of the rooms the user is a member of
	SignPubHex string   // the user's sign-pub, naming its private reply inbox
}

// deniedSubjects are denied for publish and subscribe to every member, on
// top of the allow list that already excludes them: the control-plane KV
// buckets and object store, the system account, and every JetStream API
// that creates, changes, purges, deletes, snapshots, restores or moves a
// stream, or that creates a consumer in a form nats.go's jetstream package
// never uses.
var deniedSubjects = []string{
	"$KV.>",
	"$O.>",
	"$SYS.>",
	"$JS.API.INFO",
	"$JS.API.ACCOUNT.>",
	"$JS.API.META.>",
	"$JS.API.SERVER.>",
	"$JS.API.STREAM.CREATE.>",
	"$JS.API.STREAM.UPDATE.>",
	"$JS.API.STREAM.DELETE.>",
	"$JS.API.STREAM.PURGE.>",
	"$JS.API.STREAM.MSG.DELETE.>",
	"$JS.API.STREAM.SNAPSHOT.>",
	"$JS.API.STREAM.RESTORE.>",
	"$JS.API.STREAM.LEADER.>",
	"$JS.API.STREAM.PEER.>",
	"$JS.API.STREAM.LIST",
	"$JS.API.STREAM.NAMES",
	"$JS.API.CONSUMER.CREATE.*", // legacy ephemeral form (no consumer name in the subject)
	"$JS.API.CONSUMER.DURABLE.>",
	"$JS.API.CONSUMER.LEADER.>",
	"$JS.API.CONSUMER.PAUSE.>",
	"$JS.API.CONSUMER.UNPIN.>",
	"$JS.API.CONSUMER.RESET.>",
	"$JS.SNAPSHOT.>",
	"$JS.FC.>",
	"$JSC.>",
	"$NRG.>",
}

// roomPublish returns the subjects a member of room publishes on: the room's
// traffic, and the JetStream API requests that nats.go's jetstream package
// sends to publish with acknowledgement and to read the room's stream with
// an ordered or a durable pull consumer (see the table in acl_test.go).
func roomPublish(room string) []string {
	s := subjects.Stream(room)
	return []string{
		subjects.Room(room),
		"$JS.API.STREAM.INFO." + s,
		"$JS.API.STREAM.MSG.GET." + s,
		"$JS.API.CONSUMER.CREATE." + s + ".>", // <name> or <name>.<filter>
		"$JS.API.CONSUMER.INFO." + s + ".>",
		"$JS.API.CONSUMER.DELETE." + s + ".>",
		"$JS.API.CONSUMER.MSG.NEXT." + s + ".>",
		"$JS.ACK." + s + ".>",
	}
}

// Permissions is the data-plane ACL of a member: publish and subscribe on
// the rooms of g, the JetStream API subjects needed to read those rooms'
// streams, and subscribe on the member's own reply inbox. Everything else
// is denied. An inactive grant, or one without rooms, yields only the inbox
// (or nothing, without a sign-pub). The result is never nil (nil means
// allow-all to nats-server), and members get no response permission.
func Permissions(g Grant) *server.Permissions {
	pub := []string{}
	sub := []string{}
	if validSignPubHex(g.SignPubHex) {
		sub = append(sub, subjects.InboxPrefix(g.SignPubHex)+".>")
	}
	if g.Active {
		for _, r := range g.Rooms {
			if !validRoom(r) {
				continue
			}
			pub = append(pub, roomPublish(r)...)
			sub = append(sub, subjects.Room(r))
		}
	}
	if len(pub) == 0 {
		// A nil allow list means "no restriction" to nats-server, and an
		// empty one becomes nil in any JSON round trip (omitempty); an
		// allow list of one unused literal is unambiguous.
		pub = []string{denyAllSubject}
	}
	if len(sub) == 0 {
		sub = []string{denyAllSubject}
	}
	pubDeny, subDeny := denyFor(g)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub, Deny: pubDeny},
		Subscribe: &server.SubjectPermission{Allow: sub, Deny: subDeny},
	}
}

// A deny entry matters only where an allow entry can match the same
// subject: nats-server grants a subject that some allow entry matches and
// no deny entry does, and a wildcard subscription only within an allow
// entry. A deny entry that collides with none of a grant's allow entries
// therefore changes nothing for it, yet nats-server builds a sublist from
// every entry at every login (all 28 for publish and subscribe cost about
// 140 µs of a 440 µs login). A grant gets the entries that collide with
// its allow entries, which is none today: the deny list stays in force
// for any allow entry that would ever reach into it.
//
// The collisions are computed once, with a sample room id and sign-pub.
// They do not depend on the id: a room id (32 lowercase hex) is a whole
// token or follows "ROOM_" in one, a sign-pub (64 lowercase hex) follows
// "_INBOX_", and no literal token of the deny list is lowercase hex or
// starts with either prefix (TestDenyListIsIndependentOfIDs), so a deny
// entry collides with one room's subjects exactly when it collides with
// every room's. A room id of any other form gets the whole list.
var (
	roomPubDeny  = colliding(deniedSubjects, roomPublish(sampleRoom))
	roomSubDeny  = colliding(deniedSubjects, []string{subjects.Room(sampleRoom)})
	inboxSubDeny = colliding(deniedSubjects, []string{subjects.InboxPrefix(sampleSignPubHex) + ".>"})
)

const (
	sampleRoom       = "00000000000000000000000000000000"
	sampleSignPubHex = "0000000000000000000000000000000000000000000000000000000000000000"
)

// colliding returns the entries of deny that some subject matches together
// with an entry of allow.
func colliding(deny, allow []string) []string {
	var out []string
	for _, d := range deny {
		for _, a := range allow {
			if server.SubjectsCollide(d, a) {
				out = append(out, d)
				break
			}
		}
	}
	return out
}

// denyFor returns the deny lists of g's permissions (never shared with
// another grant's: nats-server may keep them).
func denyFor(g Grant) (pub, sub []string) {
	var rooms bool
	if g.Active {
		for _, r := range g.Rooms {
			if !validRoom(r) {
				continue
			}
			if !lowerHex(r) {
				full := append([]string(nil), deniedSubjects...)
				return full, append([]string(nil), deniedSubjects...)
			}
			rooms = true
		}
	}
	if rooms {
		pub = append(pub, roomPubDeny...)
		sub = append(sub, roomSubDeny...)
	}
	if validSignPubHex(g.SignPubHex) {
		sub = append(sub, inboxSubDeny...)
	}
	return pub, sub
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// denyAllSubject is a literal no client can be given a reason to use.
const denyAllSubject = "_UNIBUS_NOTHING"

// validRoom reports whether a room id is a single subject token that is
// also usable in a stream name: [A-Za-z0-9_-]. Room ids are hex, so this
// only ever rejects corrupt input, which then grants nothing.
func validRoom(r string) bool {
	if r == "" || len(r) > 64 {
		return false
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validSignPubHex reports whether s is 64 lowercase hex characters, so that
// the inbox prefix built from it is one literal token.
func validSignPubHex(s string) bool { return len(s) == 64 && lowerHex(s) }

// InternalPermissions is the ACL of membershipd's internal identity, the
// only user with full permissions: an explicit allow of ">" both ways.
func InternalPermissions() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{">"}},
		Subscribe: &server.SubjectPermission{Allow: []string{">"}},
	}
}
