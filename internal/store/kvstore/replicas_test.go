package kvstore_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/internal/testnode"
	"github.com/unibus/unibus/subjects"
)

// ownStreamRoom is a room with a stream of its own.
const ownStreamRoom = "00112233445566778899aabbccddeeff"

// raiseNode is a node with the KV store open in its control account and,
// in its bus account, the shared room stream (unless noShared) and one
// room stream of its own; it returns the two targets raise-replicas
// passes.
func raiseNode(t *testing.T, noShared bool) []kvstore.RaiseTarget {
	t.Helper()
	n := testnode.Start(t, "")
	openOn(t, n)
	cjs, err := jetstream.New(n.Control(t))
	if err != nil {
		t.Fatal(err)
	}
	bjs, err := jetstream.New(n.Bus(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	streams := []jetstream.StreamConfig{{Name: subjects.Stream(ownStreamRoom), Subjects: []string{subjects.Room(ownStreamRoom)}}}
	if !noShared {
		streams = append(streams, jetstream.StreamConfig{Name: subjects.SharedStream, Subjects: []string{subjects.SharedPrefix + ".>"}, AllowMsgTTL: true})
	}
	for _, cfg := range streams {
		if _, err := bjs.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	return []kvstore.RaiseTarget{
		{Account: "control", JS: cjs},
		{Account: "bus", JS: bjs, Required: []string{subjects.SharedStream}},
	}
}

// Every stream of both accounts is raised and reported: the buckets, the
// object store, the shared room stream and a room's own stream; at the
// target already, each is reported and left as it is.
func TestRaiseReplicasCoversEveryStream(t *testing.T) {
	targets := raiseNode(t, false)
	var reported []string
	out, err := kvstore.RaiseReplicas(t.Context(), targets, kvstore.RaiseOptions{Replicas: 1,
		Report: func(r kvstore.Replication) { reported = append(reported, r.Stream) }})
	if err != nil {
		t.Fatal(err)
	}
	accounts := map[string]string{}
	for _, r := range out {
		accounts[r.Stream] = r.Account
		if r.Was != 1 || r.Replicas != 1 || !r.Done() {
			t.Errorf("%s (%s): not reported as already R1 and done", r, r.Account)
		}
	}
	for stream, account := range map[string]string{
		"KV_" + kvstore.BucketUsers: "control", "KV_" + kvstore.BucketNonces: "control",
		subjects.SharedStream: "bus", subjects.Stream(ownStreamRoom): "bus",
	} {
		if accounts[stream] != account {
			t.Errorf("%s: reported in account %q, want %q (reported: %v)", stream, accounts[stream], account, accounts)
		}
	}
	if len(reported) != len(out) || !slices.Equal(reported, streamNames(out)) {
		t.Errorf("Report saw %v, the result is %v", reported, streamNames(out))
	}
	// Targets in order, each by name.
	if i := slices.Index(reported, subjects.SharedStream); i < 0 || slices.ContainsFunc(reported[i:], func(s string) bool { return accounts[s] == "control" }) {
		t.Errorf("order: %v", reported)
	}
}

func streamNames(rs []kvstore.Replication) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Stream)
	}
	return out
}

// The refusals a single node can show, each before anything is changed: a
// bus account without the shared room stream, a control account without
// the buckets, and more replicas than servers.
func TestRaiseReplicasRefusals(t *testing.T) {
	o := kvstore.RaiseOptions{Replicas: 1, Wait: time.Second}
	_, err := kvstore.RaiseReplicas(t.Context(), raiseNode(t, true), o)
	if !errors.Is(err, kvstore.ErrMissingStream) {
		t.Errorf("bus account without %s: %v, want ErrMissingStream", subjects.SharedStream, err)
	}

	targets := raiseNode(t, false)
	_, err = kvstore.RaiseReplicas(t.Context(), []kvstore.RaiseTarget{targets[1], targets[0]}, o)
	if !errors.Is(err, kvstore.ErrNotKV) {
		t.Errorf("first target without the users bucket: %v, want ErrNotKV", err)
	}
	_, err = kvstore.RaiseReplicas(t.Context(), targets, kvstore.RaiseOptions{Replicas: 3, PeerWait: 500 * time.Millisecond})
	if !errors.Is(err, kvstore.ErrTooFewPeers) {
		t.Errorf("R3 on one server: %v, want ErrTooFewPeers", err)
	}
	for _, bad := range []int{0, 6} {
		if _, err := kvstore.RaiseReplicas(t.Context(), targets, kvstore.RaiseOptions{Replicas: bad}); err == nil {
			t.Errorf("replicas %d accepted", bad)
		}
	}
}
