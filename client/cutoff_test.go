package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/unibus/unibus/identity"
)

// A Listen whose member is removed from the room ends with ErrRemoved, and
// one whose identity is revoked ends with ErrRevoked; a revoked client's
// data-plane connection is closed for good instead of retrying refused
// logins forever, and its sends fail with ErrRevoked.
func TestCutOffListenEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := dialDaemon(ctx, t)
	room, err := admin.CreateRoom(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	member := func(handle string) *Client {
		id, err := identity.Generate()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.AddUser(ctx, handle, id.SignPub().String(), RoleMember); err != nil {
			t.Fatal(err)
		}
		c, err := Dial(ctx, Config{Identity: id, Servers: admin.cfg.Servers, NATS: admin.cfg.NATS})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		if err := admin.AddMember(ctx, room.ID, handle, RoomMember); err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, c := range []struct {
		handle string
		cut    func() error
		want   error
	}{
		{"bob", func() error { return admin.RemoveMember(ctx, room.ID, "bob") }, ErrRemoved},
		{"carol", func() error { _, err := admin.RevokeUser(ctx, "carol"); return err }, ErrRevoked},
	} {
		t.Run(c.handle, func(t *testing.T) {
			u := member(c.handle)
			got := make(chan Message, 16)
			ended := make(chan error, 1)
			go func() { ended <- u.Listen(ctx, room.ID, ListenOptions{}, func(m Message) { got <- m }) }()
			// The listener is up once a message sent now reaches it.
			for up := false; !up; {
				if _, err := admin.Send(ctx, room.ID, "", []byte("ping")); err != nil {
					t.Fatal(err)
				}
				select {
				case <-got:
					up = true
				case err := <-ended:
					t.Fatalf("Listen ended before the cut: %v", err)
				case <-time.After(time.Second):
				}
			}
			if err := c.cut(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-ended:
				if !errors.Is(err, c.want) {
					t.Fatalf("Listen ended with %v, want %v", err, c.want)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Listen did not end within 30 s of the cut")
			}
			if c.want != ErrRevoked {
				return
			}
			if _, err := u.conn(); !errors.Is(err, ErrRevoked) {
				t.Errorf("data-plane connection after revocation: %v, want ErrRevoked", err)
			}
			if DataPlaneServer(u) != "" {
				t.Error("the revoked client is still connected to the data plane")
			}
			if _, err := u.Send(ctx, room.ID, "", []byte("after")); !errors.Is(err, ErrRevoked) {
				t.Errorf("send after revocation: %v, want ErrRevoked", err)
			}
		})
	}
}
