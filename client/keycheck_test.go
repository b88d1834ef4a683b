package client_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the test tampers with membershipd's database directly

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/wire"
)

// swapBus is a real membershipd process with an admin, and helpers to
// tamper with its state the way a compromised server would.
type swapBus struct {
	bus   *harness.Bus
	admin *client.Client
	db    string
	tag   string // the deployment's tag, which every request signature carries
}

func startSwapBus(t *testing.T) *swapBus {
	t.Helper()
	dir := t.TempDir()
	b := &swapBus{bus: harness.StartBus(t, dir), db: filepath.Join(dir, "local_files", "unibus.db")}
	code, h := harness.Health(b.bus.HTTPURL)
	if code != http.StatusOK || h.Deployment == "" {
		t.Fatalf("healthz: %d %+v", code, h)
	}
	b.tag = wire.DeploymentTag(h.Deployment)
	adm, err := identity.Load(filepath.Join(dir, "local_files", "admin.id"))
	if err != nil {
		t.Fatal(err)
	}
	b.admin = b.dial(t, adm, "")
	return b
}

func (b *swapBus) dial(t *testing.T, id *identity.Identity, knownKeys string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Identity: id, Servers: []string{b.bus.HTTPURL}, NATS: []string{b.bus.NATSURL},
		KnownKeysFile: knownKeys, RoomCacheTTL: time.Nanosecond}) // every use reads the room again
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// user registers a new identity under handle and dials it (which publishes
// its KEM key), without pins of its own.
func (b *swapBus) user(t *testing.T, handle string) (*identity.Identity, *client.Client) {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.AddUser(context.Background(), handle, id.SignPub().String(), client.RoleMember); err != nil {
		t.Fatal(err)
	}
	return id, b.dial(t, id, "")
}

// exec runs SQL statements in one transaction on membershipd's live
// database, as someone with the server's disk would.
func (b *swapBus) exec(t *testing.T, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+b.db+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stmts {
		res, err := tx.Exec(s)
		if err != nil {
			tx.Rollback()
			t.Fatalf("%s: %v", s, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			tx.Rollback()
			t.Fatalf("%s: %d rows", s, n)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// sealedTo counts the sealed room keys the server stores for member.
func (b *swapBus) sealedTo(t *testing.T, member string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+b.db+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sealed_keys WHERE member = ?`, member).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// putKEMKey publishes kem as signer's KEM key with a binding signature
// made by signer: what a re-registration of a new KEM key looks like.
func (b *swapBus) putKEMKey(t *testing.T, signer *identity.Identity, kem identity.KEMPub) {
	t.Helper()
	body, _ := json.Marshal(wire.KEMKeyRequest{KEMPub: kem.Bytes(), Sig: signer.Sign(identity.KEMBindingMessage(signer.SignPub(), kem))})
	req, err := http.NewRequest("PUT", b.bus.HTTPURL+"/v1/me/kem-key", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	s := &httpsig.Signer{KeyID: signer.SignPub().String(), Key: signer.SigningKey(), Tag: b.tag}
	if err := s.Sign(req, body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("re-register KEM key: %d", resp.StatusCode)
	}
}

func wantKeyChanged(t *testing.T, err error, user, key string) {
	t.Helper()
	var ce *client.KeyChangedError
	if !errors.As(err, &ce) || !errors.Is(err, client.ErrKeyChanged) {
		t.Fatalf("got %v, want a KeyChangedError", err)
	}
	if ce.User != user || ce.Key != key {
		t.Fatalf("KeyChangedError about %q's %s, want %q's %s", ce.User, ce.Key, user, key)
	}
	for _, s := range []string{`"` + user + `"`, "unibus whois " + user + " --accept"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

// TestPinnedClientRefusesSwappedKeys: a client that has seen bob's keys
// refuses to seal a room key to anything else the server later says is
// bob — a new KEM key re-registered under bob's sign-pub, or another
// identity (with a valid, self-signed binding) put under the handle "bob"
// directly in the SQLite store — while a client without pins is fooled,
// which shows the server really serves the swapped keys.
func TestPinnedClientRefusesSwappedKeys(t *testing.T) {
	b := startSwapBus(t)
	ctx := context.Background()
	known := filepath.Join(t.TempDir(), "alice.id.known_keys")
	aliceID, _ := b.user(t, "alice")
	alice := b.dial(t, aliceID, known)
	bobID, _ := b.user(t, "bob")
	malloryID, _ := b.user(t, "mallory")
	bobHex, malHex := bobID.SignPub().String(), malloryID.SignPub().String()

	room1, err := alice.CreateRoom(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.AddMember(ctx, room1.ID, "bob", client.RoomMember); err != nil { // pins bob
		t.Fatal(err)
	}
	ki, err := alice.Whois(ctx, "bob")
	if err != nil || ki.Pin != client.PinMatch || ki.Fingerprint != client.Fingerprint(bobID.SignPub(), bobID.KEMPub()) {
		t.Fatalf("whois bob after the add: %+v %v", ki, err)
	}

	t.Run("KEM key re-registered under bob's sign-pub", func(t *testing.T) {
		b.putKEMKey(t, bobID, malloryID.KEMPub())
		wantKeyChanged(t, alice.Rotate(ctx, room1.ID), "bob", "KEM key")
		info, err := alice.RoomInfo(ctx, room1.ID)
		if err != nil || info.Room.Epoch != 1 {
			t.Fatalf("the refused rotation moved the room: %+v %v", info.Room, err)
		}
		// Control: an owner who never saw bob seals to the swapped key.
		_, carol := b.user(t, "carol")
		room3, err := carol.CreateRoom(ctx, "three")
		if err != nil {
			t.Fatal(err)
		}
		if err := carol.AddMember(ctx, room3.ID, "bob", client.RoomMember); err != nil {
			t.Fatalf("control: an unpinned client refused the swapped key (the attack did not happen): %v", err)
		}
		b.putKEMKey(t, bobID, bobID.KEMPub()) // restore
		if err := alice.Rotate(ctx, room1.ID); err != nil {
			t.Fatalf("rotation with bob's own key back: %v", err)
		}
	})

	t.Run("another identity under the handle bob, in SQLite", func(t *testing.T) {
		room2, err := alice.CreateRoom(ctx, "two")
		if err != nil {
			t.Fatal(err)
		}
		before := b.sealedTo(t, malHex)
		b.exec(t,
			`UPDATE users SET handle = 'bob-old' WHERE sign_pub = '`+bobHex+`'`,
			`UPDATE users SET handle = 'bob' WHERE sign_pub = '`+malHex+`'`)
		u, err := b.admin.User(ctx, "bob")
		if err != nil || u.SignPub != malHex {
			t.Fatalf("the server does not serve the swap: %+v %v", u, err)
		}
		wantKeyChanged(t, alice.AddMember(ctx, room2.ID, "bob", client.RoomMember), "bob", "sign-pub")
		// A new process with the same known-keys file refuses as well.
		again := b.dial(t, aliceID, known)
		wantKeyChanged(t, again.AddMember(ctx, room2.ID, "bob", client.RoomMember), "bob", "sign-pub")
		if n := b.sealedTo(t, malHex); n != before {
			t.Fatalf("a room key was sealed to the impostor (%d → %d)", before, n)
		}
		ki, err := alice.Whois(ctx, "bob")
		if err != nil || ki.Pin != client.PinChanged || ki.Change == nil || ki.Change.Pinned != bobHex || ki.Change.Got != malHex {
			t.Fatalf("whois after the swap: %+v %v", ki, err)
		}
		if ki.Fingerprint != client.Fingerprint(malloryID.SignPub(), malloryID.KEMPub()) {
			t.Fatal("whois shows a fingerprint other than the served keys'")
		}

		// Control: a client without pins seals to the impostor.
		fresh := b.dial(t, aliceID, "")
		room4, err := fresh.CreateRoom(ctx, "four")
		if err != nil {
			t.Fatal(err)
		}
		if err := fresh.AddMember(ctx, room4.ID, "bob", client.RoomMember); err != nil {
			t.Fatalf("control: an unpinned client refused the swap (the attack did not happen): %v", err)
		}
		if n := b.sealedTo(t, malHex); n != before+1 {
			t.Fatalf("control: sealed keys of the impostor %d → %d", before, n)
		}

		// Accepting the change (after an out-of-band check) is explicit.
		if ki, err := alice.AcceptKeys(ctx, "bob"); err != nil || ki.Pin != client.PinAccepted {
			t.Fatalf("accept: %+v %v", ki, err)
		}
		if err := alice.AddMember(ctx, room2.ID, "bob", client.RoomMember); err != nil {
			t.Fatalf("add after accepting: %v", err)
		}
	})
}

// TestServerCannotSwapYourOwnKEMKey: a server that lists the caller with a
// KEM key not its own (here: another identity's, validly bound by the
// caller's own signing key, as a stolen-signing-key attacker could) gets
// no rotation.
func TestServerCannotSwapYourOwnKEMKey(t *testing.T) {
	b := startSwapBus(t)
	ctx := context.Background()
	aliceID, alice := b.user(t, "alice")
	other, _ := identity.Generate()
	room, err := alice.CreateRoom(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	b.putKEMKey(t, aliceID, other.KEMPub())
	if err := alice.Rotate(ctx, room.ID); !errors.Is(err, client.ErrKeyChanged) {
		t.Fatalf("rotation sealed to a KEM key that is not the caller's: %v", err)
	}
}

// TestMembersArePinnedOnSight: keys are pinned when the client first sees
// them in a room's member list, not only when it seals to them, so a swap
// made before its first rotation is refused too.
func TestMembersArePinnedOnSight(t *testing.T) {
	b := startSwapBus(t)
	ctx := context.Background()
	aliceID, _ := b.user(t, "alice")
	alice := b.dial(t, aliceID, filepath.Join(t.TempDir(), "alice.known_keys"))
	_, bob := b.user(t, "bob")
	daveID, _ := b.user(t, "dave")
	room, err := alice.CreateRoom(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.AddMember(ctx, room.ID, "bob", client.RoomOwner); err != nil {
		t.Fatal(err)
	}
	if err := bob.AddMember(ctx, room.ID, "dave", client.RoomMember); err != nil { // alice never sealed to dave
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, room.ID, "", []byte("hello")); err != nil { // alice reads the member list
		t.Fatal(err)
	}
	other, _ := identity.Generate()
	b.putKEMKey(t, daveID, other.KEMPub())
	wantKeyChanged(t, alice.Rotate(ctx, room.ID), "dave", "KEM key")
}
