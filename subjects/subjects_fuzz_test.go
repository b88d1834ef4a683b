package subjects

import (
	"regexp"
	"strings"
	"testing"
)

// topicRE is ValidTopic's rule written as a regular expression.
var topicRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// FuzzSubjects checks the subject names a sender builds from a topic and
// a receiver takes apart. ValidTopic agrees with its rule as a regular
// expression; a valid topic holds no wildcard or space (so it cannot widen
// the subject it is appended to), and TopicOf gives it back; whatever TopicOf extracts from a subject
// rebuilds that subject.
func FuzzSubjects(f *testing.F) {
	const room = "00112233445566778899aabbccddeeff"
	f.Add(room, "chat", "unibus.room."+room+".chat")
	f.Add(room, "a.b-c_D.9", "unibus.room."+room+".a.b")
	f.Add(room, "a..b", "unibus.room."+room)
	f.Add(room, "*", "unibus.room."+room+".>")
	f.Add("x.y", ">", "unibus.room.x.y.z")
	f.Add(room, "chat", "unibus.msgs."+room+".chat")
	f.Add(room, "chat", "unibus.in.aa."+room+".chat")
	f.Add(room, "chat", "unibus.in..x.y")
	f.Fuzz(func(t *testing.T, room, topic, subject string) {
		valid := ValidTopic(topic)
		if want := len(topic) <= 128 && topicRE.MatchString(topic); valid != want {
			t.Fatalf("ValidTopic(%q) = %v, the rule says %v", topic, valid, want)
		}
		if valid {
			s := RoomTopic(room, topic)
			if got := TopicOf(room, s); got != topic {
				t.Fatalf("TopicOf(RoomTopic(%q)) = %q", topic, got)
			}
			if strings.ContainsAny(topic, "*> \t\r\n") {
				t.Fatalf("valid topic %q holds a wildcard or space", topic)
			}
		}
		if got := TopicOf(room, subject); got != "" {
			if RoomTopic(room, got) != subject && Shared(room, got) != subject {
				t.Fatalf("TopicOf(%q, %q) = %q, which rebuilds neither %q nor %q", room, subject, got, RoomTopic(room, got), Shared(room, got))
			}
		}
		if sender, r, tp, ok := ParseIngress(subject); ok {
			if Ingress(sender, r, tp) != subject || strings.Contains(sender, ".") || strings.Contains(r, ".") {
				t.Fatalf("ParseIngress(%q) = %q %q %q, which rebuilds %q", subject, sender, r, tp, Ingress(sender, r, tp))
			}
		}
	})
}
