package redteam

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

// A removed member reads nothing more. In protocol 1 a removed member kept
// reading through a durable push consumer it had made with its own inbox
// as deliver subject. Here dave, a member of room A, tries everything he
// can before and after alice removes him, and the judge is what reaches
// him after the removal by any path: his SDK listener, his inbox, his
// deliver subjects.
func (e *env) removalAttacks(rep *Report) {
	add := func(id, attack, tool, expect string, v Verdict, observed string) {
		rep.Add(Row{ID: id, Plane: "NATS", Attack: attack, Tool: tool, Expected: expect, Observed: observed, Verdict: v})
	}
	verdict := func(ok, open bool) Verdict {
		switch {
		case open:
			return FailOpen
		case ok:
			return Pass
		}
		return FailDenial
	}
	shared := subjects.SharedStream
	daveRaw := e.dialRaw(e.dave)
	daveInbox, err1 := daveRaw.collect(subjects.InboxPrefix(e.dave.hex) + ".>")
	daveDeliveries, err2 := daveRaw.collect(subjects.DeliverOf(e.dave.hex))
	if err1 != nil || err2 != nil || daveRaw.nc.Flush() != nil {
		e.t.Fatalf("dave's subscriptions: %v %v", err1, err2)
	}
	daveBefore, aliceBefore := e.listenersOf(e.dave, shared), e.listenersOf(e.alice, shared)
	daveL := listenSDK(e.sdk(e.dave, nil), e.roomA, "", false)
	defer daveL.end()
	aliceL := listenSDK(e.sdk(e.alice, nil), e.roomA, "", false)
	defer aliceL.end()
	// alice's second client keeps room A's state for an hour: a sender
	// that has not seen the removal.
	stale := e.sdk(e.alice, func(c *client.Config) { c.RoomCacheTTL = time.Hour })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// N80 (control): dave reads room A while he is a member. A listener
	// delivers what is stored after it was made: once both listeners
	// exist, alice sends one message.
	listening := e.waitNewListener(e.dave, e.roomA, daveBefore) && e.waitNewListener(e.alice, e.roomA, aliceBefore)
	var sendErr error
	if listening {
		_, sendErr = stale.Send(ctx, e.roomA, "", []byte("before the removal"))
	}
	got := listening && sendErr == nil && daveL.waitFor(30*time.Second, func(d, _ int) bool { return d >= 1 }) &&
		aliceL.waitFor(30*time.Second, func(d, _ int) bool { return d >= 1 })
	d0, _ := daveL.counts()
	v := Pass
	if !got {
		v = FailControl
	}
	add("N80", "control: dave, a member of room A, listens with the SDK and receives alice's message", "the SDK (client.Listen)",
		"allowed; delivered", v, fmt.Sprintf("delivered %d %s", d0, errText(sendErr)))
	if !got {
		return
	}

	// N81: while a member, dave makes a durable push consumer delivering
	// to his own inbox: the protocol 1 way to keep reading.
	r := e.natsCLI(e.dave, 20*time.Second, "consumer", "add", shared, "keep", "--target", subjects.InboxPrefix(e.dave.hex)+".keep",
		"--filter", subjects.SharedRoom(e.roomA), "--deliver", "all", "--ack", "none", "--defaults")
	deny := `Publish to "$JS.API.STREAM.INFO.` + shared + `"`
	refused := strings.Contains(r.all(), "Permissions Violation for "+deny)
	_, made := e.consumerState(shared, "keep")
	add("N81", "while a member, make a durable push consumer on room A delivering to its own inbox (as dave)", "nats consumer add --target",
		noJetStream+"; no consumer", verdict(refused && !made, made), fmt.Sprintf("refused: `%s`=%v; consumer made=%v", deny, refused, made))

	daveKey := e.roomKey(e.dave, e.roomA, 1) // he keeps it after the removal
	staleBefore := e.relayMetric("stale_epoch")
	// The removal: alice's CLI rotates the room to epoch 2 for the
	// remaining members.
	e.unibus(e.alice, "room", "remove", "room-a", "dave")
	d1, _ := daveL.counts()
	a1, _ := aliceL.counts()
	in1, dl1 := daveInbox.count(), daveDeliveries.count()

	// N82: his listeners were deleted before the API answered.
	left := e.listenersOf(e.dave, shared)
	add("N82", "after `unibus room remove room-a dave` returns: dave's listeners (ground truth)", "unibus room remove; membershipd's view",
		"membershipd deleted them before answering: none left", verdict(len(left) == 0, len(left) > 0), fmt.Sprintf("%d left", len(left)))

	// N83: a new listener.
	body := []byte(`{"deliver":"all"}`)
	c := e.curl("POST", e.bus.HTTPURL+listenerPath(e.roomA), e.signedHeaders(e.dave, nil, "POST", listenerPath(e.roomA), body, nil), body)
	add("N83", "ask for a new listener on room A after the removal (as dave)", "curl", "404 not_found",
		verdict(c.outcome() == "404 not_found", c.status/100 == 2), c.outcome())

	// N84: the subjects room A's messages travel on.
	var obs []string
	open, all := false, true
	for _, s := range []string{subjects.SharedRoom(e.roomA), subjects.DeliverOf(e.alice.hex), subjects.IngressOf(e.alice.hex)} {
		ref, _ := daveRaw.trySubscribe(s)
		all = all && ref
		open = open || !ref
		obs = append(obs, fmt.Sprintf("`%s` refused=%v", s, ref))
	}
	add("N84", "subscribe to room A's stored subject, alice's deliveries and alice's ingress after the removal (as dave)", "nats.go (raw client)",
		onlyOwnSubs, verdict(all, open), strings.Join(obs, "; "))

	// N85: dave sends into room A through his ingress, under the key he
	// still holds.
	histA := e.history(e.roomA)
	env := e.seal(e.dave, e.roomA, subjects.DefaultTopic, 1, daveKey, time.Now(), "still here")
	a, _ := e.relayPublish(e.dave, subjects.Ingress(e.dave.hex, e.roomA, subjects.DefaultTopic), env.Headers(), env.Payload)
	grew := len(e.history(e.roomA)) != len(histA)
	add("N85", "send into room A through its own ingress after the removal, sealed under epoch 1 (as dave)", "nats request",
		"relay refuses 403/60003 (not a member); nothing stored",
		verdict(a.Error != nil && a.Error.ErrCode == wire.RelayNotMember && !grew, grew || a.Error == nil), answerText(a)+fmt.Sprintf("; stored=%v", grew))

	// N86: a sender that has not seen the removal seals under epoch 1,
	// whose key dave holds.
	env = e.seal(e.alice, e.roomA, subjects.DefaultTopic, 1, daveKey, time.Now(), "for dave's eyes")
	a, _ = e.relayPublish(e.alice, subjects.Ingress(e.alice.hex, e.roomA, subjects.DefaultTopic), env.Headers(), env.Payload)
	grew = len(e.history(e.roomA)) != len(histA)
	add("N86", "alice publishes a message sealed under the epoch before the removal (a sender with a stale cache)", "nats request",
		"relay refuses 409/60005 (stale epoch); nothing stored",
		verdict(a.Error != nil && a.Error.ErrCode == wire.RelayStaleEpoch && !grew, grew || a.Error == nil), answerText(a)+fmt.Sprintf("; stored=%v", grew))

	// N87: alice's SDK with a stale cache sends; then her CLI.
	_, err := stale.Send(ctx, e.roomA, "", []byte("after the removal"))
	e.unibus(e.alice, "send", "room-a", "after the removal, from the CLI")
	staleAfter := e.relayMetric("stale_epoch")
	alice2 := aliceL.waitFor(30*time.Second, func(d, _ int) bool { return d >= a1+2 })
	epochs := ""
	aliceL.mu.Lock()
	for _, m := range aliceL.delivered[a1:] {
		epochs += strconv.FormatUint(m.Epoch, 10) + " "
	}
	aliceL.mu.Unlock()
	ok := err == nil && alice2 && staleAfter-staleBefore >= 2 && strings.TrimSpace(epochs) == "2 2"
	add("N87", "alice's SDK, whose cache still says epoch 1, sends after the removal", "the SDK (client.Send)",
		"the relay refuses epoch 1 (stale_epoch); the SDK seals again under epoch 2 and the message is stored once",
		verdict(ok, strings.Contains(epochs, "1")), fmt.Sprintf("send error: %s; relay stale_epoch refusals +%d (N86's and the SDK's first try); alice's listener got epochs %s",
			orNone(errText(err)), staleAfter-staleBefore, strings.TrimSpace(epochs)))

	// N88: the judge. alice's listener has the two messages sent after the
	// removal; whatever would reach dave would be on its way at the same
	// time: a deliberate quiet second, then nothing may have arrived.
	time.Sleep(time.Second)
	d2, _ := daveL.counts()
	// His inbox holds the relay's refusal of his own N85: not a message
	// of the room.
	own := 0
	for _, m := range daveInbox.msgs()[in1:] {
		var a wire.PubAck
		if json.Unmarshal(m.Data, &a) == nil && a.Error != nil && a.Error.ErrCode == wire.RelayNotMember {
			own++
		}
	}
	gotSDK, gotInbox, gotDeliveries := d2-d1, daveInbox.count()-in1-own, daveDeliveries.count()-dl1
	st, _ := e.api(e.dave, "GET", "/v1/rooms/"+e.roomA+"/keys?epoch=2", nil, nil)
	leaked := gotSDK+gotInbox+gotDeliveries > 0 || st == http.StatusOK
	if leaked {
		for _, m := range append(daveInbox.msgs()[in1:], daveDeliveries.msgs()[dl1:]...) {
			e.t.Logf("N88: dave received after the removal: subject %s, headers %v, %d bytes", m.Subject, m.Header, len(m.Data))
		}
	}
	add("N88", "after the removal, anything sent to room A reaches dave by any path: his SDK listener, his inbox, his deliver subjects, a key of epoch 2",
		"the SDK; nats.go (raw client); curl", "nothing reaches him",
		verdict(!leaked && alice2, leaked), fmt.Sprintf("received: SDK %d, inbox %d (besides the relay's refusal of his own N85: %d), deliveries %d; epoch 2 key: %d; alice received both",
			gotSDK, gotInbox, own, gotDeliveries, st))
}

// relayMetric reads membershipd's count of relayed messages with a
// result (ok, or a refusal's reason) from /metrics.
func (e *env) relayMetric(result string) int {
	resp, err := e.httpc.Get(e.bus.HTTPURL + "/metrics")
	if err != nil {
		e.t.Errorf("metrics: %v", err)
		return 0
	}
	defer resp.Body.Close()
	prefix := `unibus_relay_messages_total{result="` + result + `"} `
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return 0
}
