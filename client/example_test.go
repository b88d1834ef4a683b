package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/daemon"
)

// A program dials the deployment with its identity, creates a room and
// sends to it. (The server here runs in-process; a program passes the
// deployment's URLs, and loads its identity with identity.Load.)
func Example() {
	srv := startServer()
	defer srv.close()
	ctx := context.Background()
	id, servers, seeds := srv.admin, srv.servers, srv.nats

	c, err := client.Dial(ctx, client.Config{Identity: id, Servers: servers, NATS: seeds})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	room, err := c.CreateRoom(ctx, "demo")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Send(ctx, room.ID, "", []byte("hello")); err != nil {
		log.Fatal(err)
	}

	fmt.Println("sent hello to", room.Name)
	// Output: sent hello to demo
}

// An admin registers a user, creates a room and adds the user to it; the
// room's info lists its members with their roles.
func ExampleClient_CreateRoom() {
	srv := startServer()
	defer srv.close()
	ctx := context.Background()
	admin := srv.dial(srv.admin)
	srv.newUser("bob") // AddUser, then bob dials once to publish his KEM key

	room, err := admin.CreateRoom(ctx, "ops")
	if err != nil {
		log.Fatal(err)
	}
	if err := admin.AddMember(ctx, room.ID, "bob", client.RoomMember); err != nil {
		log.Fatal(err)
	}
	info, err := admin.RoomInfo(ctx, room.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("room %s, key epoch %d\n", info.Name, info.Epoch)
	slices.SortFunc(info.Members, func(a, b client.Member) int { return strings.Compare(a.Handle, b.Handle) })
	for _, m := range info.Members {
		fmt.Println(m.Handle, m.Role)
	}
	// Output:
	// room ops, key epoch 1
	// admin owner
	// bob member
}

// One member sends; another receives the messages decrypted and verified.
// FromStart replays what the room already holds; without it Listen
// delivers new messages only.
func ExampleClient_Listen() {
	srv := startServer()
	defer srv.close()
	ctx := context.Background()
	admin := srv.dial(srv.admin)
	bob := srv.newUser("bob")
	room, err := admin.CreateRoom(ctx, "ops")
	if err != nil {
		log.Fatal(err)
	}
	if err := admin.AddMember(ctx, room.ID, "bob", client.RoomMember); err != nil {
		log.Fatal(err)
	}

	if _, err := admin.Send(ctx, room.ID, "", []byte("hello bob")); err != nil {
		log.Fatal(err)
	}
	if _, err := admin.Send(ctx, room.ID, "alerts.cpu", []byte(`{"load":0.42}`)); err != nil {
		log.Fatal(err)
	}

	lctx, stop := context.WithCancel(ctx)
	defer stop()
	n := 0
	err = bob.Listen(lctx, room.ID, client.ListenOptions{FromStart: true}, func(m client.Message) {
		fmt.Printf("%s #%d on %s: %s\n", m.Handle, m.Seq, m.Topic, m.Data)
		if n++; n == 2 {
			stop() // Listen returns
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// admin #1 on msg: hello bob
	// admin #2 on alerts.cpu: {"load":0.42}
}

// A member encrypts a file on its own machine, uploads it and announces
// it in the room; another member finds the announcement among the room's
// messages and downloads and decrypts the file.
func ExampleClient_SendBlob() {
	srv := startServer()
	defer srv.close()
	ctx := context.Background()
	admin := srv.dial(srv.admin)
	bob := srv.newUser("bob")
	room, err := admin.CreateRoom(ctx, "files")
	if err != nil {
		log.Fatal(err)
	}
	if err := admin.AddMember(ctx, room.ID, "bob", client.RoomMember); err != nil {
		log.Fatal(err)
	}

	meta := client.BlobMeta{Name: "notes.txt", ContentType: "text/plain"}
	if _, err := admin.SendBlob(ctx, room.ID, "", strings.NewReader("the small print"), meta, nil); err != nil {
		log.Fatal(err)
	}

	lctx, stop := context.WithCancel(ctx)
	defer stop()
	var ann client.BlobAnnouncement
	err = bob.Listen(lctx, room.ID, client.ListenOptions{FromStart: true}, func(m client.Message) {
		if a, ok := client.ParseBlobAnnouncement(m.Data); ok {
			ann = a
			stop()
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	var file bytes.Buffer
	if _, err := bob.GetBlob(ctx, room.ID, ann, &file, nil); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (%s, %d bytes): %s\n", ann.Name, ann.ContentType, ann.Size, file.String())
	// Output: notes.txt (text/plain, 15 bytes): the small print
}

// The client pins a user's keys the first time it sees them, in its
// known-keys file, and refuses to seal a room key to other keys under the
// same name. Here a second server plays one that now gives another
// identity for "bob".
func ExampleClient_Whois() {
	ctx := context.Background()
	alice, bob, impostor := fixedIdentity('a'), fixedIdentity('b'), fixedIdentity('m')

	srv := startServer()
	defer srv.close()
	known := filepath.Join(srv.dir, "alice.id.known_keys") // where the CLI keeps alice.id's pins
	srv.register("alice", alice)
	srv.register("bob", bob)
	c := srv.dialPinned(alice, known)
	for range 2 {
		ki, err := c.Whois(ctx, "bob")
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %s, fingerprint %s…\n", ki.User.Handle, ki.Pin, ki.Fingerprint[:19])
	}

	other := startServer()
	defer other.close()
	other.register("alice", alice)
	other.register("bob", impostor)
	c = other.dialPinned(alice, known)
	ki, err := c.Whois(ctx, "bob")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %s (%s), fingerprint %s…\n", ki.User.Handle, ki.Pin, ki.Change.Key, ki.Fingerprint[:19])
	room, err := c.CreateRoom(ctx, "ops")
	if err != nil {
		log.Fatal(err)
	}
	err = c.AddMember(ctx, room.ID, "bob", client.RoomMember)
	var changed *client.KeyChangedError
	if errors.As(err, &changed) {
		fmt.Printf("add refused: the %s of %s changed\n", changed.Key, changed.User)
	}

	// Only after comparing fingerprints with bob out of band:
	if ki, err = c.AcceptKeys(ctx, "bob"); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %s\n", ki.User.Handle, ki.Pin)
	fmt.Println("add:", c.AddMember(ctx, room.ID, "bob", client.RoomMember))
	// Output:
	// bob: new, fingerprint cffb 970c 2839 5d11…
	// bob: match, fingerprint cffb 970c 2839 5d11…
	// bob: changed (sign-pub), fingerprint 5116 45ca 1d32 3e40…
	// add refused: the sign-pub of bob changed
	// bob: accepted
	// add: <nil>
}

// server is a membershipd started in-process for the examples: random
// loopback ports, a temporary directory, and its bootstrap admin.
type server struct {
	d             *daemon.Daemon
	dir           string
	admin         *identity.Identity
	adminC        *client.Client
	servers, nats []string
	clients       []*client.Client
}

func startServer() *server {
	dir, err := os.MkdirTemp("", "unibus-example-*")
	if err != nil {
		log.Fatal(err)
	}
	d, err := daemon.Start(context.Background(), daemon.Config{Bind: "127.0.0.1", DataDir: dir, Bootstrap: true, JSSync: "1s"})
	if err != nil {
		log.Fatal(err)
	}
	admin, err := identity.Load(d.AdminIDFile)
	if err != nil {
		log.Fatal(err)
	}
	s := &server{d: d, dir: dir, admin: admin, servers: []string{d.HTTPURL()}, nats: []string{d.NATSURL()}}
	s.adminC = s.dial(admin)
	return s
}

func (s *server) close() {
	for _, c := range s.clients {
		c.Close()
	}
	s.d.Close()
	os.RemoveAll(s.dir)
}

// dial connects id, which publishes its KEM key if the server lacks it.
func (s *server) dial(id *identity.Identity) *client.Client {
	return s.dialPinned(id, "")
}

// dialPinned connects id with its pins in the known-keys file known.
func (s *server) dialPinned(id *identity.Identity, known string) *client.Client {
	c, err := client.Dial(context.Background(), client.Config{Identity: id, Servers: s.servers, NATS: s.nats, KnownKeysFile: known})
	if err != nil {
		log.Fatal(err)
	}
	s.clients = append(s.clients, c)
	return c
}

// register has the admin add id as a member under handle, and dials id
// once so that its KEM key is published.
func (s *server) register(handle string, id *identity.Identity) *client.Client {
	if _, err := s.adminC.AddUser(context.Background(), handle, id.SignPub().String(), client.RoleMember); err != nil {
		log.Fatal(err)
	}
	return s.dial(id)
}

// newUser registers a new identity under handle and returns its client.
func (s *server) newUser(handle string) *client.Client {
	id, err := identity.Generate()
	if err != nil {
		log.Fatal(err)
	}
	return s.register(handle, id)
}

// fixedIdentity is an identity made from a fixed seed, so that the
// fingerprints an example prints are always the same. A real identity
// comes from identity.Generate (unibus keygen).
func fixedIdentity(b byte) *identity.Identity {
	id, err := identity.FromSeed(bytes.Repeat([]byte{b}, identity.SeedSize))
	if err != nil {
		log.Fatal(err)
	}
	return id
}
