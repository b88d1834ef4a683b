package e2e

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/unibus/unibus/identity"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the fixed seeds")

// vectorFile is the byte-exact contract other implementations check
// themselves against. All byte strings are lowercase hex.
type vectorFile struct {
	Comment    string           `json:"comment"`
	Identities []identityVector `json:"identities"`
	SealedKeys []sealedVector   `json:"sealed_keys"`
	Messages   []messageVector  `json:"messages"`
}

type identityVector struct {
	Seed       string `json:"seed"`
	NKeySeed   string `json:"nkey_seed"`
	SignPub    string `json:"sign_pub"`
	NKey       string `json:"nkey"`
	KEMPub     string `json:"kem_pub"`
	KEMBinding string `json:"kem_binding_sig"`
}

type sealedVector struct {
	SealerSeed string `json:"sealer_seed"`
	MemberSeed string `json:"member_seed"`
	Room       string `json:"room"`
	Epoch      uint64 `json:"epoch"`
	RoomKey    string `json:"room_key"`
	Info       string `json:"hpke_info"`
	Sealed     string `json:"sealed"`
	Sig        string `json:"sig"`
}

type messageVector struct {
	SenderSeed string            `json:"sender_seed"`
	Room       string            `json:"room"`
	Subject    string            `json:"subject"`
	Epoch      uint64            `json:"epoch"`
	RoomKey    string            `json:"room_key"`
	MsgID      string            `json:"msg_id"`
	Seq        uint64            `json:"seq"`
	SentMillis uint64            `json:"sent_ms,omitempty"`
	Nonce      string            `json:"nonce"`
	Plaintext  string            `json:"plaintext"`
	AAD        string            `json:"aad"`
	Payload    string            `json:"payload"`
	Headers    map[string]string `json:"headers"`
}

func fixedSeed(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func mustID(t *testing.T, seed []byte) *identity.Identity {
	t.Helper()
	id, err := identity.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// generateVectors builds every vector from fixed seeds. HPKE encapsulation
// draws randomness; cryptotest.SetGlobalRandom makes it deterministic, so the
// sealed bytes are reproducible by this implementation. Other
// implementations check a sealed vector by opening it (they cannot replay
// Go's test DRBG) and by verifying its signature.
//
// version 1 (v1 true) is the envelope streams written before protocol 2
// still hold; its identities and sealed keys are the same as version 2's.
func generateVectors(t *testing.T, v1 bool) vectorFile {
	cryptotest.SetGlobalRandom(t, 9421)
	vf := vectorFile{Comment: "unibus v2 format vectors; see docs/FORMATS.md. Regenerate: go test ./e2e -run TestVectors -update"}
	if v1 {
		vf.Comment = "unibus v1 message envelopes (read from streams written before protocol 2; nothing seals them any more), with the v2 identities and sealed keys; see docs/FORMATS.md. Regenerate: go test ./e2e -run TestVectors -update"
	}
	for _, b := range []byte{0x01, 0x02, 0x42} {
		id := mustID(t, fixedSeed(b))
		var ns []byte
		// The nkey seed text is what the identity file holds.
		ns = nkeySeed(t, id)
		vf.Identities = append(vf.Identities, identityVector{
			Seed: hex.EncodeToString(fixedSeed(b)), NKeySeed: string(ns),
			SignPub: id.SignPub().String(), NKey: id.NKey(),
			KEMPub:     hex.EncodeToString(id.KEMPub().Bytes()),
			KEMBinding: hex.EncodeToString(id.SignKEMBinding()),
		})
	}
	room, _ := ParseRoomID("00112233445566778899aabbccddeeff")
	key, _ := RoomKeyFromBytes(bytes.Repeat([]byte{0x07}, 32))
	sealer, member := mustID(t, fixedSeed(0x01)), mustID(t, fixedSeed(0x02))
	for _, ep := range []uint64{1, 2} {
		sk, err := SealRoomKey(sealer, room, ep, member.SignPub(), member.KEMPub(), key)
		if err != nil {
			t.Fatal(err)
		}
		vf.SealedKeys = append(vf.SealedKeys, sealedVector{
			SealerSeed: hex.EncodeToString(fixedSeed(0x01)), MemberSeed: hex.EncodeToString(fixedSeed(0x02)),
			Room: room.String(), Epoch: ep, RoomKey: hex.EncodeToString(key.Bytes()),
			Info:   hex.EncodeToString(SealedKeyInfo(room, ep, member.SignPub())),
			Sealed: hex.EncodeToString(sk.Sealed), Sig: hex.EncodeToString(sk.Sig),
		})
	}
	for i, pt := range []string{"", "hello, room", string(bytes.Repeat([]byte("x"), 1024))} {
		seq := uint64(i + 1)
		stream := [8]byte{0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7}
		nonce := bytes.Repeat([]byte{byte(0x30 + i)}, NonceSize)
		subject := "unibus.room." + room.String() + ".msg"
		sent := vectorSendTime.Add(time.Duration(i) * time.Millisecond)
		env, err := SealMessageAt(sealer, room, subject, 1, key, MsgID(stream, seq), seq, sent, nonce, []byte(pt))
		if v1 {
			env = &Envelope{Room: room, Subject: subject, Epoch: 1, Sender: sealer.SignPub(), MsgID: MsgID(stream, seq), Seq: seq, V1: true}
			err = env.seal(sealer, key, nonce, []byte(pt))
		}
		if err != nil {
			t.Fatal(err)
		}
		hs := map[string]string{}
		for k, v := range env.Headers() {
			hs[k] = v[0]
		}
		vf.Messages = append(vf.Messages, messageVector{
			SenderSeed: hex.EncodeToString(fixedSeed(0x01)), Room: room.String(), Subject: subject, Epoch: 1,
			RoomKey: hex.EncodeToString(key.Bytes()), MsgID: env.MsgID, Seq: seq, SentMillis: env.SentMillis,
			Nonce: hex.EncodeToString(nonce), Plaintext: hex.EncodeToString([]byte(pt)),
			AAD: hex.EncodeToString(env.AAD()), Payload: hex.EncodeToString(env.Payload), Headers: hs,
		})
	}
	return vf
}

// vectorSendTime is the vectors' send time: 2026-01-01T00:00:00Z.
var vectorSendTime = time.UnixMilli(1767225600000)

// vectorFiles are the committed vector files and whether each is v1's.
var vectorFiles = map[string]bool{"vectors.json": false, "vectors-v1.json": true}

func TestVectors(t *testing.T) {
	for name, v1 := range vectorFiles {
		path := filepath.Join("testdata", name)
		got, err := json.MarshalIndent(generateVectors(t, v1), "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, '\n')
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read vectors (run with -update to create): %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("the formats changed: regenerated vectors differ from %s. A format change needs a new version label, not new vectors.", path)
		}
	}
}

// TestVectorsVerify checks the committed vectors the way another
// implementation would: from the stored bytes, without regenerating.
func TestVectorsVerify(t *testing.T) {
	for name, v1 := range vectorFiles {
		t.Run(name, func(t *testing.T) { verifyVectors(t, name, v1) })
	}
}

func verifyVectors(t *testing.T, name string, v1 bool) {
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		t.Fatal(err)
	}
	if len(vf.Identities) == 0 || len(vf.SealedKeys) == 0 || len(vf.Messages) == 0 {
		t.Fatal("vector file is missing sections")
	}
	for _, v := range vf.Identities {
		id, err := identity.ParseSeed([]byte(v.NKeySeed))
		if err != nil {
			t.Fatal(err)
		}
		if id.SignPub().String() != v.SignPub || id.NKey() != v.NKey || hex.EncodeToString(id.KEMPub().Bytes()) != v.KEMPub {
			t.Errorf("identity %s: derived keys differ from the vector", v.Seed)
		}
		kp, _ := identity.ParseKEMPub(unhex(t, v.KEMPub))
		if err := identity.VerifyKEMBinding(id.SignPub(), kp, unhex(t, v.KEMBinding)); err != nil {
			t.Errorf("identity %s: %v", v.Seed, err)
		}
	}
	for _, v := range vf.SealedKeys {
		member := mustID(t, unhex(t, v.MemberSeed))
		sealer := mustID(t, unhex(t, v.SealerSeed))
		room, _ := ParseRoomID(v.Room)
		sk := SealedKey{Room: room, Epoch: v.Epoch, Member: member.SignPub(), Sealer: sealer.SignPub(), Sealed: unhex(t, v.Sealed), Sig: unhex(t, v.Sig)}
		k, err := OpenRoomKey(member, sk)
		if err != nil {
			t.Fatalf("open sealed vector epoch %d: %v", v.Epoch, err)
		}
		if hex.EncodeToString(k.Bytes()) != v.RoomKey {
			t.Errorf("sealed vector epoch %d opened to the wrong key", v.Epoch)
		}
		// The same bytes under another epoch must not open: the info binds it.
		sk.Epoch++
		if _, err := OpenRoomKey(member, sk); err == nil {
			t.Errorf("sealed vector opened under a different epoch")
		}
	}
	for _, v := range vf.Messages {
		room, _ := ParseRoomID(v.Room)
		h := map[string][]string{}
		for k, x := range v.Headers {
			h[k] = []string{x}
		}
		env := new(Envelope)
		err := ParseEnvelopeInto(env, room, v.Subject, h, unhex(t, v.Payload))
		if v1 {
			if !errors.Is(err, ErrVersion) {
				t.Fatalf("a v1 envelope parsed as a current one: %v", err)
			}
			err = ParseStoredEnvelopeInto(env, room, v.Subject, h, unhex(t, v.Payload))
		}
		if err != nil {
			t.Fatal(err)
		}
		if env.V1 != v1 || env.SentMillis != v.SentMillis {
			t.Errorf("message %s: version 1 %v, sent %d", v.MsgID, env.V1, env.SentMillis)
		}
		if hex.EncodeToString(env.AAD()) != v.AAD {
			t.Errorf("message %s: AAD differs", v.MsgID)
		}
		if err := env.VerifySignature(); err != nil {
			t.Fatal(err)
		}
		key, _ := RoomKeyFromBytes(unhex(t, v.RoomKey))
		pt, err := env.Open(key)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(pt) != v.Plaintext {
			t.Errorf("message %s: plaintext differs", v.MsgID)
		}
	}
}
