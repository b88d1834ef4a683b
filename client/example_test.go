package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
)

// A program joins the bus with its identity file, creates a room, sends an
// encrypted message and an encrypted file, and prints what arrives.
func Example() {
	ctx := context.Background()
	id, err := identity.Load("service.id") // from: unibus keygen -o service.id
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.Dial(ctx, client.Config{
		Identity: id,
		Servers:  []string{"https://bus-1:8470", "https://bus-2:8470"},
		NATS:     []string{"tls://bus-1:4250", "tls://bus-2:4250"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	room, err := c.CreateRoom(ctx, "telemetry")
	if err != nil {
		log.Fatal(err)
	}
	if err := c.AddMember(ctx, room.ID, "collector", "member"); err != nil {
		log.Fatal(err)
	}
	if _, err := c.Send(ctx, room.ID, "cpu", []byte(`{"load":0.42}`)); err != nil {
		log.Fatal(err)
	}
	if _, err := c.SendBlob(ctx, room.ID, "", strings.NewReader("a log file"), client.BlobMeta{Name: "app.log"}, nil); err != nil {
		log.Fatal(err)
	}

	err = c.Listen(ctx, room.ID, client.ListenOptions{FromStart: true}, func(m client.Message) {
		if ann, ok := client.ParseBlobAnnouncement(m.Data); ok {
			c.GetBlob(ctx, room.ID, ann, os.Stdout, nil)
			return
		}
		fmt.Printf("%s on %s: %s\n", m.Handle, m.Topic, m.Data)
	})
	if err != nil {
		log.Fatal(err)
	}
}
