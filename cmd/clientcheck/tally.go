package main

import (
	"strconv"
	"time"
)

// tally counts what the receiver got of the messages 1..n clientcheck
// sends (each message's payload is its number): how often each arrived,
// what else arrived, and the longest time without a message.
type tally struct {
	seen       []int // seen[i-1]: how many times message i arrived
	distinct   int   // messages that arrived at least once
	unexpected int   // payloads that are not a number 1..n
	last       time.Time
	lastSeq    int
	gap        time.Duration
	gapAfter   int
}

func newTally(n int) *tally { return &tally{seen: make([]int, n)} }

// add records a message received at now, and reports whether every
// message has now arrived at least once.
func (t *tally) add(data []byte, now time.Time) (complete bool) {
	i, err := strconv.Atoi(string(data))
	if err != nil || i < 1 || i > len(t.seen) {
		t.unexpected++
		return false
	}
	if !t.last.IsZero() && now.Sub(t.last) > t.gap {
		t.gap, t.gapAfter = now.Sub(t.last), t.lastSeq
	}
	t.last, t.lastSeq = now, i
	t.seen[i-1]++
	if t.seen[i-1] == 1 {
		t.distinct++
		return t.distinct == len(t.seen)
	}
	return false
}

// fill sets the report's counts and gap from what was received.
func (t *tally) fill(rep *Report) {
	rep.Received, rep.Lost, rep.Duplicated, rep.Unexpected = 0, 0, 0, t.unexpected
	for _, k := range t.seen {
		rep.Received += k
		switch {
		case k == 0:
			rep.Lost++
		case k > 1:
			rep.Duplicated += k - 1
		}
	}
	rep.LongestGap, rep.GapAfter = t.gap, t.gapAfter
}
