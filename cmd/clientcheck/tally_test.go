package main

import (
	"testing"
	"time"
)

// The tally is what clientcheck's verdict rests on: a message that never
// arrived is lost, each extra arrival a duplicate, anything that is not one
// of its messages unexpected, and the longest silence is reported with the
// message before it.
func TestTally(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	g := newTally(5)
	for _, in := range []struct {
		data     string
		ms       int
		complete bool
	}{
		{"1", 0, false},
		{"2", 10, false},
		{"2", 20, false},   // a duplicate
		{"x", 25, false},   // not a number
		{"0", 26, false},   // not one of 1..5
		{"6", 27, false},   // not one of 1..5
		{"5", 500, false},  // the longest gap, after #2
		{"3", 510, false},  // 4 never arrives
		{"3", 520, false},  // a duplicate
		{"1", 530, false},  // a duplicate
		{"4", 540, true},   // now every message has arrived
		{"4", 1000, false}, // a duplicate, after the longest gap
	} {
		if got := g.add([]byte(in.data), at(in.ms)); got != in.complete {
			t.Fatalf("%q at %d ms: complete %v, want %v", in.data, in.ms, got, in.complete)
		}
	}
	var rep Report
	g.fill(&rep)
	if rep.Received != 9 || rep.Lost != 0 || rep.Duplicated != 4 || rep.Unexpected != 3 || rep.LongestGap != 480*time.Millisecond || rep.GapAfter != 2 {
		t.Fatalf("report %+v", rep)
	}

	lossy := newTally(4)
	for _, d := range []string{"1", "3"} {
		lossy.add([]byte(d), t0)
	}
	rep = Report{}
	lossy.fill(&rep)
	if rep.Received != 2 || rep.Lost != 2 || rep.Duplicated != 0 || rep.Unexpected != 0 {
		t.Fatalf("two of four: %+v", rep)
	}
}
