package client

import (
	"errors"
	"testing"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/identity"
)

// TestSequenceGapsAndDuplicates: a message missing from the middle of a
// sender's log is reported as a gap; a repeat as a duplicate; separate
// sender streams are tracked apart.
func TestSequenceGapsAndDuplicates(t *testing.T) {
	id, _ := identity.Generate()
	env := func(stream byte, seq uint64) *e2e.Envelope {
		return &e2e.Envelope{Sender: id.SignPub(), Seq: seq, MsgID: e2e.MsgID([8]byte{stream}, seq)}
	}
	v := &verifier{fromStart: true, last: map[string]uint64{}}
	steps := []struct {
		env  *e2e.Envelope
		want error
	}{
		{env(1, 1), nil},
		{env(1, 2), nil},
		{env(1, 4), ErrGap}, // 3 lost
		{env(1, 4), ErrDuplicate},
		{env(1, 3), ErrDuplicate}, // late: behind the last seen
		{env(1, 5), nil},
		{env(2, 1), nil}, // another stream of the same sender (a restart)
		{env(3, 7), ErrGap},
	}
	for i, s := range steps {
		err := v.sequence(s.env)
		if (s.want == nil && err != nil) || (s.want != nil && !errors.Is(err, s.want)) {
			t.Errorf("step %d (%s): got %v, want %v", i, s.env.MsgID, err, s.want)
		}
	}
	// Not reading from the start, the first message seen sets the baseline.
	v = &verifier{last: map[string]uint64{}}
	if err := v.sequence(env(9, 40)); err != nil {
		t.Fatalf("live listener: %v", err)
	}
}
