package natsnode

import (
	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/unibus/subjects"
)

// Grant is what the control plane says about a data-plane user.
type Grant struct {
	Active     bool   // false: the user is unknown or revoked and is denied
	SignPubHex string // the user's sign-pub, naming its subjects
}

// FlowControlSubjects are the subjects on which a member answers the
// flow-control requests of the consumers that deliver to it. They reach
// BusAccount through MembersAccount's one service import; a consumer acts
// only on the reply subject of its latest request, which carries the
// consumer's random name and a random suffix, so a member cannot steer a
// consumer it was not given.
const FlowControlSubjects = "$JS.FC.>"

// Permissions is the data-plane ACL of a member, the same whatever rooms
// it is in (membership is checked by the relay and by membershipd when it
// makes a consumer, so it changes without a new login):
//
//   - publish on its own ingress, unibus.in.<member>.>, and on the
//     flow-control subjects;
//   - subscribe to its own reply inbox, _INBOX_<member>.>, and to its own
//     deliveries, unibus.dlv.<member>.>.
//
// Nothing else: MembersAccount has no JetStream, no other service, and
// other members' subjects are not in the allow lists. An inactive grant or
// one without a valid sign-pub gets nothing. The result is never nil (nil
// means allow-all to nats-server), and members get no response
// permission (nats-server would track every delivered message's reply
// subject for it).
func Permissions(g Grant) *server.Permissions {
	pub := []string{denyAllSubject}
	sub := []string{denyAllSubject}
	if g.Active && validSignPubHex(g.SignPubHex) {
		pub = []string{subjects.IngressOf(g.SignPubHex), FlowControlSubjects}
		sub = []string{subjects.InboxPrefix(g.SignPubHex) + ".>", subjects.DeliverOf(g.SignPubHex)}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
}

// denyAllSubject is a literal no client can be given a reason to use: an
// allow list of it alone allows nothing (an empty one would mean "no
// restriction" once it went through JSON with omitempty).
const denyAllSubject = "_UNIBUS_NOTHING"

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// validSignPubHex reports whether s is 64 lowercase hex characters, so that
// the subjects built from it are one literal token each.
func validSignPubHex(s string) bool { return len(s) == 64 && lowerHex(s) }

// InternalPermissions is the ACL of membershipd's internal identity, the
// only user with full permissions: an explicit allow of ">" both ways.
func InternalPermissions() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{">"}},
		Subscribe: &server.SubjectPermission{Allow: []string{">"}},
	}
}
