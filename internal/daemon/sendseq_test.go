package daemon_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/internal/harness"
)

// A message the relay refused outright (its sender had been removed from
// the room) stored nothing and uses up no number of the sender's sequence:
// once the sender is a member again, its next message follows the last
// stored one, and readers report no gap.
func TestRefusedSendLeavesNoGap(t *testing.T) {
	b := startBus(t)
	ctx := ctxT(t)
	_, alice := b.user(t, "alice")
	_, carol := b.staleUser(t, "carol") // its room state predates the removal: the relay is what refuses
	room, err := alice.CreateRoom(ctx, "team")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.AddMember(ctx, room.ID, "carol", "member"); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var got []string
	var reports []error
	lctx, stop := context.WithCancel(context.Background())
	defer stop()
	listening := make(chan error, 1)
	go func() {
		listening <- alice.Listen(lctx, room.ID, client.ListenOptions{FromStart: true, OnError: func(err error) {
			mu.Lock()
			reports = append(reports, err)
			mu.Unlock()
		}}, func(m client.Message) {
			mu.Lock()
			got = append(got, string(m.Data))
			mu.Unlock()
		})
	}()

	if _, err := carol.Send(ctx, room.ID, "", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := alice.RemoveMember(ctx, room.ID, "carol"); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Send(ctx, room.ID, "", []byte("refused")); !errors.Is(err, client.ErrNotMember) {
		t.Fatalf("a removed member's send: %v, want the relay's refusal (ErrNotMember)", err)
	}
	if err := alice.AddMember(ctx, room.ID, "carol", "member"); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Send(ctx, room.ID, "", []byte("two")); err != nil {
		t.Fatalf("a send after being added again: %v", err)
	}
	harness.Eventually(t, 20*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 }, "both stored messages delivered")
	time.Sleep(500 * time.Millisecond) // a report for "two" would come with its delivery; give a late one a moment
	stop()
	<-listening
	mu.Lock()
	defer mu.Unlock()
	if got[0] != "one" || got[1] != "two" {
		t.Errorf("delivered %q, want [one two]", got)
	}
	for _, r := range reports {
		t.Errorf("the reader reported: %v", r)
	}
}
