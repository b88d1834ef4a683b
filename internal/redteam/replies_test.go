package redteam

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/subjects"
)

// Replies steered into other rooms. nats-server never checks a message's
// reply subject against the publisher's permissions, and in protocol 1
// JetStream answered there: a stream's publish ack, a message-get answer
// or a pull request's messages landed in another room's stream and
// evicted its messages. In protocol 2 a member publishes only on its own
// ingress (the relay answers only under the sender's inbox) and on
// $JS.FC.> (nothing answers a flow-control message). Every target below
// is tried from each of those, and judged by its owner's state.

// replyTarget is where an attacker steers answers (one or more reply
// subjects), and what must stay as it was.
type replyTarget struct {
	id, what string
	subjects []string
	intact   func() string // "" when unchanged
}

// replyAttacks are N50–N59.
func (e *env) replyAttacks(rep *Report, bobs consumer, l *listening) {
	shared := subjects.SharedStream
	histA, histB, histBD := e.history(e.roomA), e.history(e.roomB), e.history(e.roomBD)
	sharedCfg, bdCfg := e.streamConfig(shared), e.streamConfig(subjects.Stream(e.roomBD))
	// bob watches the exact subjects steered at (his own traffic on his
	// other inbox and delivery subjects is none of this test's business).
	bobRaw := e.dialRaw(e.bob)
	bobInbox, err1 := bobRaw.collect(subjects.InboxPrefix(e.bob.hex) + ".steered")
	bobDeliveries, err2 := bobRaw.collect(bobs.Deliver)
	bobAnswer, err3 := bobRaw.collect(subjects.InboxPrefix(e.bob.hex) + ".answer")
	if err1 != nil || err2 != nil || err3 != nil || bobRaw.nc.Flush() != nil {
		e.t.Fatalf("bob's subscriptions: %v %v %v", err1, err2, err3)
	}
	before, _ := e.consumerState(shared, bobs.Name)
	delivered, refused := l.counts()
	kvUsers, kvRooms := "KV_"+kvstore.BucketUsers, "KV_"+kvstore.BucketRooms
	userKey, roomKey := "$KV."+kvstore.BucketUsers+".u."+e.bob.hex, "$KV."+kvstore.BucketRooms+"."+e.roomB
	lastUser, lastRoom := e.lastOnSubject(kvUsers, userKey), e.lastOnSubject(kvRooms, roomKey)

	same := func(room string, hist []string) string {
		if after := e.history(room); !slices.Equal(after, hist) {
			return fmt.Sprintf("room %s went from %d to %d messages", room, len(hist), len(after))
		}
		return ""
	}
	nothingFor := func(s *sink, what string) string {
		if n := s.count(); n > 0 {
			return fmt.Sprintf("%d messages reached %s", n, what)
		}
		return ""
	}
	targets := []replyTarget{
		{"N50", "room B's stored subject", []string{subjects.Shared(e.roomB, "injected")}, func() string { return same(e.roomB, histB) }},
		{"N51", "room BD's stored subject (a stream of its own)", []string{subjects.RoomTopic(e.roomBD, "injected")}, func() string {
			if e.streamConfig(subjects.Stream(e.roomBD)) != bdCfg {
				return "ROOM_{BD}'s configuration changed"
			}
			return same(e.roomBD, histBD)
		}},
		{"N52", "its own room A's stored subject", []string{subjects.Shared(e.roomA, "injected")}, func() string {
			if e.storedOn(e.roomA, "injected") {
				return "a message on topic injected was stored in room A"
			}
			return ""
		}},
		{"N53", "bob's listener's deliver subject", []string{bobs.Deliver}, func() string {
			if c := e.listenerIntact(before, l, delivered, refused); c != "" {
				return c
			}
			return nothingFor(bobDeliveries, "bob's deliveries")
		}},
		{"N54", "bob's inbox", []string{subjects.InboxPrefix(e.bob.hex) + ".steered"}, func() string { return nothingFor(bobInbox, "bob's inbox") }},
		{"N55", "bob's ingress (an answer there would be relayed as bob's)", []string{subjects.Ingress(e.bob.hex, e.roomB, "steered")},
			func() string { return same(e.roomB, histB) }},
		{"N56", "the control plane's KV buckets (bob's user record, room B's record)", []string{userKey, roomKey}, func() string {
			if now := e.lastOnSubject(kvUsers, userKey); now != lastUser {
				return fmt.Sprintf("%s written (seq %d → %d)", userKey, lastUser, now)
			}
			if now := e.lastOnSubject(kvRooms, roomKey); now != lastRoom {
				return fmt.Sprintf("%s written (seq %d → %d)", roomKey, lastRoom, now)
			}
			return ""
		}},
		{"N57", "the JetStream API (delete, purge, message delete of the shared stream)",
			[]string{"$JS.API.STREAM.DELETE." + shared, "$JS.API.STREAM.PURGE." + shared, "$JS.API.STREAM.MSG.DELETE." + shared}, func() string {
				if e.streamConfig(shared) != sharedCfg {
					return shared + " changed or is gone"
				}
				if after := e.history(e.roomA); len(after) < len(histA) || !slices.Equal(after[:len(histA)], histA) {
					return "room A lost messages"
				}
				return same(e.roomB, histB)
			}},
	}
	keyA := e.roomKey(e.alice, e.roomA, 1)
	// Each reply subject is tried on three publishes: a genuine envelope
	// through alice's ingress (stored in room A), an envelope for room B
	// (refused: not a member) and a flow-control answer.
	send := func(replies []string) (int, string) {
		published := 0
		var fails []string
		for _, rp := range replies {
			envA := e.seal(e.alice, e.roomA, "steer", 1, keyA, time.Now(), "steered")
			envB := e.seal(e.alice, e.roomB, "steer", 1, keyA, time.Now(), "steered")
			for _, p := range []struct {
				subject string
				h       map[string][]string
				payload []byte
			}{
				{subjects.Ingress(e.alice.hex, e.roomA, "steer"), envA.Headers(), envA.Payload},
				{subjects.Ingress(e.alice.hex, e.roomB, "steer"), envB.Headers(), envB.Payload},
				{"$JS.FC." + shared + "." + bobs.Name + ".x", nil, nil},
			} {
				args := append([]string{"pub", p.subject, "--force-stdin", "--no-templates", "--reply", rp}, headerArgs(p.h)...)
				r := e.run(20*time.Second, bytes.NewReader(p.payload), e.tl.nats, e.natsArgs(e.alice, args...)...)
				if r.code != 0 {
					fails = append(fails, lastLine(r.all()))
					continue
				}
				published++
			}
		}
		return published, strings.Join(fails, "; ")
	}
	published := make([]int, len(targets))
	fails := make([]string, len(targets))
	var wg sync.WaitGroup
	for i, tg := range targets {
		wg.Go(func() { published[i], fails[i] = send(tg.subjects) })
	}
	wg.Wait()

	// N58: the relay's own answer, asked for on alice's inbox (a control
	// of the targets above) and on bob's.
	env := e.seal(e.alice, e.roomA, "steer", 1, keyA, time.Now(), "answer me")
	ans, _ := e.relayPublish(e.alice, subjects.Ingress(e.alice.hex, e.roomA, "steer"), env.Headers(), env.Payload)
	env2 := e.seal(e.alice, e.roomA, "steer", 1, keyA, time.Now(), "answer bob")
	args := append([]string{"pub", subjects.Ingress(e.alice.hex, e.roomA, "steer"), "--force-stdin", "--no-templates",
		"--reply", subjects.InboxPrefix(e.bob.hex) + ".answer"}, headerArgs(env2.Headers())...)
	r2 := e.run(20*time.Second, bytes.NewReader(env2.Payload), e.tl.nats, e.natsArgs(e.alice, args...)...)

	// Everything alice published went through the relay in order (or
	// through the flow-control import, synchronously), so once one more
	// request is answered, all of it has been handled. What the relay
	// then sends elsewhere would be on its way: a deliberate quiet second
	// lets it arrive.
	e.relaySentinel(e.alice)
	bobRaw.nc.Flush()
	time.Sleep(time.Second)

	for i, tg := range targets {
		quoted := make([]string, len(tg.subjects))
		for j, sj := range tg.subjects {
			quoted[j] = "`" + sj + "`"
		}
		row := Row{ID: tg.id, Plane: "NATS", Attack: "steer replies into " + tg.what + ": reply subject " + strings.Join(quoted, ", ") + " (as alice)",
			Tool: "nats pub --reply", Expected: "publishes allowed; the relay answers only under `_INBOX_{alice}.`, and nothing answers a flow-control message: nothing stored or received there"}
		changed := tg.intact()
		want := 3 * len(tg.subjects)
		switch {
		case changed != "":
			row.Verdict, row.Observed = FailOpen, changed
		case published[i] != want:
			row.Verdict, row.Observed = FailDenial, fmt.Sprintf("%d of %d published: %s", published[i], want, fails[i])
		default:
			row.Verdict, row.Observed = Pass, fmt.Sprintf("%d published (ingress into A, ingress into B, `$JS.FC`); nothing changed there", published[i])
		}
		rep.Add(row)
	}

	ok := ans.Error == nil && ans.Stream == shared && r2.code == 0 && bobAnswer.count() == 0
	v := Pass
	if bobAnswer.count() > 0 {
		v = FailOpen
	} else if !ok {
		v = FailDenial
	}
	rep.Add(Row{ID: "N58", Plane: "NATS", Attack: "the relay's answer: asked for on its own inbox, then on bob's (as alice)", Tool: "nats request; nats pub --reply",
		Expected: "answered on `_INBOX_{alice}.…`; nothing on bob's inbox", Verdict: v,
		Observed: fmt.Sprintf("own inbox: %s; bob's inbox received %d", answerText(ans), bobAnswer.count())})

	// N59: the protocol 1 ways, from the JetStream API itself.
	deny := func(subject string) bool {
		res := e.natsCLI(e.alice, 20*time.Second, "pub", subject, `{"seq":1}`, "--reply", subjects.Shared(e.roomB, "injected"))
		for _, v := range violation.FindAllString(res.all(), -1) {
			if v == `Permissions Violation for Publish to "`+subject+`"` {
				return true
			}
		}
		return false
	}
	get, next := "$JS.API.STREAM.MSG.GET."+shared, "$JS.API.CONSUMER.MSG.NEXT."+shared+"."+bobs.Name
	dGet, dNext := deny(get), deny(next)
	changed := same(e.roomB, histB)
	v = Pass
	switch {
	case changed != "":
		v = FailOpen
	case !dGet || !dNext:
		v = FailDenial
	}
	rep.Add(Row{ID: "N59", Plane: "NATS", Attack: "a message-get and a pull request on bob's listener with reply subject `" + subjects.Shared(e.roomB, "injected") + "` (as alice)",
		Tool: "nats pub --reply", Expected: noJetStream + "; nothing stored in room B", Verdict: v,
		Observed: fmt.Sprintf("refused `%s`=%v, `%s`=%v; %s", get, dGet, next, dNext, orNone(changed))})
}
