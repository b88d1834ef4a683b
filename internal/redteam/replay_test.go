package redteam

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// replayAge is how old the "captured long ago" envelopes are: past the
// relay's clock window and the stream's two-minute duplicate window.
const replayAge = 3 * time.Minute

// replayAttacks: a captured envelope republished is refused or, if
// stored, never delivered. In protocol 1 a member republished another
// member's envelope after the two-minute duplicate window and a later
// listener showed it as new. trudy, a member of room C, captures bob's
// envelopes from her own listener and republishes them through her
// ingress, as captured and with her own sender header (the relay
// requires the sender header to name the publisher); envelopes "captured"
// three minutes ago are sealed by the test with bob's key and an old send
// time rather than waited for. Finally bob's SDK reads room C from the
// start: it must deliver exactly the genuine messages.
func (e *env) replayAttacks(rep *Report) {
	add := func(id, attack, tool, expect string, v Verdict, observed string) {
		rep.Add(Row{ID: id, Plane: "NATS", Attack: attack, Tool: tool, Expected: expect, Observed: observed, Verdict: v})
	}
	// A fresh message of bob's, captured by trudy's own listener.
	bob := e.sdk(e.bob, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fresh, err := bob.Send(ctx, e.roomC, "", []byte("bob's message trudy captures"))
	if err != nil {
		e.t.Fatalf("bob's send: %v", err)
	}
	trudy := e.dialRaw(e.trudy)
	l, st, code := e.newListener(e.trudy, e.roomC, wire.ListenRequest{Deliver: wire.DeliverAll})
	if st != 201 {
		e.t.Fatalf("trudy's listener: %d %s", st, code)
	}
	dl, err := trudy.collect(l.DeliverSubject)
	if err != nil {
		e.t.Fatal(err)
	}
	var captured *nats.Msg
	dl.waitCount(int(l.Pending), 30*time.Second)
	for _, m := range dl.msgs() {
		if m.Header.Get(e2e.HdrMsgID) == fresh {
			captured = m
		}
	}
	if captured == nil {
		e.t.Fatalf("trudy did not capture bob's message %s (%d delivered)", fresh, dl.count())
	}
	genuine := e.history(e.roomC) // every message in C so far is genuine
	ingress := subjects.Ingress(e.trudy.hex, e.roomC, subjects.DefaultTopic)
	h := map[string][]string(captured.Header)
	for _, k := range []string{"Nats-Expected-Stream", "Nats-TTL"} {
		delete(h, k)
	}
	newID := func() string {
		var s [8]byte
		rand.Read(s[:])
		return hex.EncodeToString(s[:]) + "-" + h[e2e.HdrSeq][0]
	}
	old := e.seal(e.bob, e.roomC, subjects.DefaultTopic, 1, e.roomKey(e.bob, e.roomC, 1), time.Now().Add(-replayAge), "bob's message of three minutes ago")
	e.norm.add(fresh, "{captured id}", old.MsgID, "{old id}")

	type forgery struct{ row, msgID string }
	var forged []forgery // the forgeries that were stored
	try := func(id, attack, expect string, hdr map[string][]string, payload []byte, want func(wire.PubAck) bool) {
		before := e.history(e.roomC)
		a, r := e.relayPublish(e.trudy, ingress, hdr, payload)
		after := e.history(e.roomC)
		stored := len(after) - len(before)
		obs := answerText(a) + fmt.Sprintf("; stored %d", stored)
		v := Pass
		switch {
		case !want(a):
			v = FailDenial
			obs += " (" + lastLine(r.all()) + ")"
		case a.Error == nil && !a.Duplicate:
			forged = append(forged, forgery{id, hdr[e2e.HdrMsgID][0]})
		case stored != 0:
			v = FailOpen
		}
		add(id, attack+" (as trudy)", "nats request -H", expect, v, obs)
	}
	refusedWith := func(code uint16) func(wire.PubAck) bool {
		return func(a wire.PubAck) bool { return a.Error != nil && a.Error.ErrCode == code }
	}
	storedOK := func(a wire.PubAck) bool { return a.Error == nil && !a.Duplicate && a.Stream == subjects.SharedStream }

	try("E01", "republish bob's envelope as captured, through its own ingress", "relay refuses 400/60002: the sender header must name the publisher",
		h, captured.Data, refusedWith(wire.RelayBadEnvelope))
	try("E02", "republish it with its own sender header, within the duplicate window",
		"may be stored (the relay names it by trudy, the room and the id: another sender's id is no duplicate, and cannot make bob's messages duplicates); never delivered (E08)",
		withHeader(h, e2e.HdrSender, e.trudy.hex), captured.Data, storedOK)
	try("E03", "republish it with its own sender header and a new message id", "may be stored (the relay verifies no signature); never delivered (E08)",
		withHeader(withHeader(h, e2e.HdrSender, e.trudy.hex), e2e.HdrMsgID, newID()), captured.Data, storedOK)
	oldH := old.Headers()
	try("E04", "republish an envelope bob sealed 3 minutes ago, as captured", "relay refuses 400/60002: the sender header must name the publisher",
		oldH, old.Payload, refusedWith(wire.RelayBadEnvelope))
	try("E05", "republish the 3-minute-old envelope with its own sender header", "relay refuses 400/60006: send time more than 60 s from the relay's clock",
		withHeader(oldH, e2e.HdrSender, e.trudy.hex), old.Payload, refusedWith(wire.RelayClockSkew))
	try("E06", "republish the 3-minute-old envelope with its own sender header and the send time rewritten to now",
		"may be stored (the relay verifies no signature); never delivered (E08): the send time is signed",
		withHeader(withHeader(withHeader(oldH, e2e.HdrSender, e.trudy.hex), e2e.HdrTime, strconv.FormatInt(time.Now().UnixMilli(), 10)), e2e.HdrMsgID, newID()),
		old.Payload, storedOK)

	// E07: the old envelope stored as it is, as a relay with a wrong clock
	// would store it: written by the test with membershipd's identity.
	_, err = e.truth.PublishMsg(ctx, &nats.Msg{Subject: subjects.Shared(e.roomC, subjects.DefaultTopic), Header: nats.Header(oldH), Data: old.Payload})
	v, obs := Pass, "stored by the test"
	if err != nil {
		v, obs = FailControl, err.Error()
	} else {
		forged = append(forged, forgery{"E07", old.MsgID})
	}
	add("E07", "bob's genuine 3-minute-old envelope stored in room C as it is (written by the test as a relay with a wrong clock would)",
		"nats.go (membershipd's identity)", "stored; never delivered (E08): stored more than 65 s after its send time", v, obs)

	// E08: a later listener, from the start of room C.
	lsn := listenSDK(bob, e.roomC, "", true)
	total := len(e.history(e.roomC))
	done := lsn.waitFor(30*time.Second, func(d, r int) bool { return d+r >= total })
	lsn.end()
	lsn.mu.Lock()
	var ids []string
	for _, m := range lsn.delivered {
		ids = append(ids, m.MsgID)
	}
	refusals := slices.Clone(lsn.refused)
	lsn.mu.Unlock()
	var want []string
	for _, g := range genuine {
		f := strings.Fields(g)
		want = append(want, f[len(f)-1])
	}
	leaked, reported := 0, 0
	var reasons []string
	count := func(list []string, id string) int {
		n := 0
		for _, x := range list {
			if x == id {
				n++
			}
		}
		return n
	}
	for _, f := range forged {
		// A forgery may carry a genuine message's id (E02): it leaked if
		// that id was delivered more often than the genuine messages hold it.
		if count(ids, f.msgID) > count(want, f.msgID) {
			leaked++
		}
		for _, err := range refusals {
			if strings.Contains(err.Error(), f.msgID) {
				reported++
				reasons = append(reasons, f.row+": "+reasonOf(err))
				break
			}
		}
	}
	slices.Sort(ids)
	slices.Sort(want)
	v = Pass
	switch {
	case leaked > 0:
		v = FailOpen
	case !done || !slices.Equal(ids, want) || reported != len(forged) || len(refusals) != len(forged):
		v = FailDenial
	}
	add("E08", "bob's SDK reads room C from the start after E01–E07", "the SDK (client.Listen)",
		fmt.Sprintf("the %d genuine messages delivered; the %d stored forgeries reported, none delivered", len(want), len(forged)), v,
		fmt.Sprintf("delivered %d, the genuine ones=%v, forgeries among them: %d; reported %d: %s", len(ids), slices.Equal(ids, want), leaked,
			len(refusals), strings.Join(reasons, "; ")))
}

// reasonOf is why the SDK refused a message, in short.
func reasonOf(err error) string {
	for _, r := range []error{e2e.ErrBadSignature, e2e.ErrReplayed, e2e.ErrMalformed, client.ErrDuplicate, client.ErrNotMemberSender, client.ErrNoKey} {
		if errors.Is(err, r) {
			return r.Error()
		}
	}
	return err.Error()
}
