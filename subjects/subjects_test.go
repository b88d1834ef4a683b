package subjects

import "testing"

func TestIngress(t *testing.T) {
	const sender, room = "ab", "00112233445566778899aabbccddeeff"
	s := Ingress(sender, room, "a.b")
	if s != "unibus.in.ab.00112233445566778899aabbccddeeff.a.b" {
		t.Fatalf("Ingress = %q", s)
	}
	gs, gr, gt, ok := ParseIngress(s)
	if !ok || gs != sender || gr != room || gt != "a.b" {
		t.Fatalf("ParseIngress(%q) = %q %q %q %v", s, gs, gr, gt, ok)
	}
	for _, bad := range []string{"", "unibus.in", "unibus.in.ab", "unibus.in.ab.room", "unibus.in..room.t", "unibus.in.ab..t", "unibus.room.ab.room.t", "unibus.in.ab.room."} {
		if _, _, _, ok := ParseIngress(bad); ok {
			t.Errorf("ParseIngress(%q) accepted", bad)
		}
	}
}

func TestTopicOf(t *testing.T) {
	const room = "00112233445566778899aabbccddeeff"
	for subject, want := range map[string]string{
		RoomTopic(room, "x.y"):                "x.y",
		Shared(room, "x"):                     "x",
		Shared("ffff", "x"):                   "",
		"unibus.in.ab." + room + ".x":         "",
		"unibus.msgs." + room:                 "",
		"unibus.roomx." + room + ".x":         "",
		DeliverPrefix + "." + room + ".x.y.z": "",
	} {
		if got := TopicOf(room, subject); got != want {
			t.Errorf("TopicOf(%q) = %q, want %q", subject, got, want)
		}
	}
}
