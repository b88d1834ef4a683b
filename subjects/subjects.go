// Package subjects names unibus's NATS subjects, streams and inboxes. Server
// and client both import it so that the data-plane ACL and the SDK can never
// disagree on a name. It imports nothing of ours.
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

// TopicOf returns the topic part of a room subject, or "" if subject is not
// below unibus.room.<room>.
func TopicOf(room, subject string) string {
	p := RoomPrefix + "." + room + "."
	if !strings.HasPrefix(subject, p) {
		return ""
	}
	return subject[len(p):]
}
