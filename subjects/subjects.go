// Package subjects names unibus's NATS subjects, streams and inboxes. Server
// and client both import it so that the data-plane ACL and the SDK can never
// disagree on a name. It imports nothing of ours.
//
// A room's messages have three names on their way (docs/DESIGN.md, "Data
// plane"):
//
//	unibus.in.<sender>.<room>.<topic>   what a member publishes (ingress): only
//	                                    <sender> may publish below its prefix
//	unibus.room.<room>.<topic>          the room subject: what the envelope's
//	                                    signature binds, and where rooms with a
//	                                    stream of their own store messages
//	unibus.msgs.<room>.<topic>          where every other room's messages are
//	                                    stored, in the one shared stream
//
// and reach a member as deliveries of a consumer membershipd made for it,
// on unibus.dlv.<member>.<token>.
package subjects

import (
	"strings"
)

// RoomPrefix is the first two tokens of every room subject.
const RoomPrefix = "unibus.room"

// Room returns the wildcard subject of a room: unibus.room.<room>.>
func Room(room string) string { return RoomPrefix + "." + room + ".>" }

// RoomTopic returns the subject of one topic of a room.
func RoomTopic(room, topic string) string { return RoomPrefix + "." + room + "." + topic }

// Stream returns the JetStream stream name of a room: ROOM_<room>.
func Stream(room string) string { return "ROOM_" + room }

// InboxPrefix returns a user's private reply-inbox prefix, _INBOX_<sign-pub
// hex>. The data-plane ACL lets only that user subscribe below it.
func InboxPrefix(signPubHex string) string { return "_INBOX_" + signPubHex }

// SharedStream is the stream that holds the messages of every room that
// has no stream of its own, on SharedPrefix.<room>.<topic>.
const SharedStream = "UNIBUS_MSGS"

// SharedPrefix is the first two tokens of the shared stream's subjects.
const SharedPrefix = "unibus.msgs"

// Shared returns the shared stream's subject for one topic of a room.
func Shared(room, topic string) string { return SharedPrefix + "." + room + "." + topic }

// SharedRoom returns the shared stream's wildcard subject of a room.
func SharedRoom(room string) string { return SharedPrefix + "." + room + ".>" }

// IngressPrefix is the first two tokens of every ingress subject.
const IngressPrefix = "unibus.in"

// Ingress returns the subject on which sender publishes to one topic of a
// room: unibus.in.<sender>.<room>.<topic>.
func Ingress(senderHex, room, topic string) string {
	return IngressPrefix + "." + senderHex + "." + room + "." + topic
}

// IngressOf returns the subjects a user may publish on: its ingress,
// unibus.in.<sender>.>
func IngressOf(senderHex string) string { return IngressPrefix + "." + senderHex + ".>" }

// ParseIngress splits an ingress subject into sender, room and topic; ok
// is false unless it has the form unibus.in.<sender>.<room>.<topic> with
// non-empty tokens (the caller checks each part's syntax).
func ParseIngress(subject string) (sender, room, topic string, ok bool) {
	rest, found := strings.CutPrefix(subject, IngressPrefix+".")
	if !found {
		return "", "", "", false
	}
	sender, rest, found = strings.Cut(rest, ".")
	if !found || sender == "" {
		return "", "", "", false
	}
	room, topic, found = strings.Cut(rest, ".")
	if !found || room == "" || topic == "" {
		return "", "", "", false
	}
	return sender, room, topic, true
}

// DeliverPrefix is the first two tokens of every delivery subject.
const DeliverPrefix = "unibus.dlv"

// Deliver returns the subject a member's consumer delivers to.
func Deliver(memberHex, token string) string { return DeliverPrefix + "." + memberHex + "." + token }

// DeliverOf returns the subjects a user may receive deliveries on:
// unibus.dlv.<member>.>
func DeliverOf(memberHex string) string { return DeliverPrefix + "." + memberHex + ".>" }

// DefaultTopic is the topic used when a sender names none.
const DefaultTopic = "msg"

// ValidTopic reports whether t is one or more dot-separated subject tokens
// made of [A-Za-z0-9_-], at most 128 bytes: no wildcards, no empty tokens,
// so a topic can never widen the subject it is appended to.
func ValidTopic(t string) bool {
	if t == "" || len(t) > 128 {
		return false
	}
	for _, tok := range strings.Split(t, ".") {
		if tok == "" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				return false
			}
		}
	}
	return true
}

// TopicOf returns the topic part of a room subject or of the room's
// subject in the shared stream, or "" if subject is below neither
// unibus.room.<room>. nor unibus.msgs.<room>.
func TopicOf(room, subject string) string {
	for _, prefix := range [...]string{RoomPrefix, SharedPrefix} {
		if rest, ok := strings.CutPrefix(subject, prefix+"."); ok {
			if topic, ok := strings.CutPrefix(rest, room+"."); ok {
				return topic
			}
			return ""
		}
	}
	return ""
}
