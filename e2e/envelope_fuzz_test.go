package e2e

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"testing"
)

// envelopeHeaders are the headers ParseEnvelope reads.
var envelopeHeaders = []string{HdrVersion, HdrEpoch, HdrSender, HdrSeq, HdrMsgID, HdrSig}

// headerBlock renders headers as FuzzEnvelope takes them: one "Name: value"
// per line; a name may repeat.
func headerBlock(h map[string][]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[k] {
			b.WriteString(k + ": " + v + "\n")
		}
	}
	return b.String()
}

// parseHeaderBlock is the inverse of headerBlock; a line without ": " is a
// name with an empty value.
func parseHeaderBlock(s string) map[string][]string {
	h := map[string][]string{}
	for line := range strings.SplitSeq(s, "\n") {
		if line == "" {
			continue
		}
		k, v, _ := strings.Cut(line, ": ")
		h[k] = append(h[k], v)
	}
	return h
}

// envelopeErrors are the errors ParseEnvelope documents.
var envelopeErrors = []error{ErrMalformed, ErrVersion, ErrPayloadTooShort}

// fuzzMsg is a message vector: its headers, its parsed envelope and
// its plaintext.
type fuzzMsg struct {
	h   map[string][]string
	env *Envelope
	pt  []byte
}

// sameMessage reports whether a and b agree on everything the AEAD binds
// (room, subject, epoch, sender, message id, sequence, payload) and, with
// sig, on the signature too.
func sameMessage(a, b *Envelope, sig bool) bool {
	return a.Room == b.Room && a.Subject == b.Subject && a.Epoch == b.Epoch && a.Sender == b.Sender &&
		a.MsgID == b.MsgID && a.Seq == b.Seq && bytes.Equal(a.Payload, b.Payload) &&
		(!sig || bytes.Equal(a.Sig, b.Sig))
}

// vectorOf returns the vector e is, if any.
func vectorOf(e *Envelope, msgs []fuzzMsg, sig bool) (fuzzMsg, bool) {
	for _, m := range msgs {
		if sameMessage(e, m.env, sig) {
			return m, true
		}
	}
	return fuzzMsg{}, false
}

// FuzzEnvelope receives arbitrary messages (subject, any set of header
// lines, payload) in the room of the message vectors, through every path a
// receiver has. It must never panic, and:
//
//   - parse fails only with a documented error;
//   - what parses is canonical: the headers the envelope re-encodes to are
//     exactly the ones received (one value each, same text), and parse
//     back to the same envelope;
//   - the three signature checks (one-off, prepared key, batch) agree;
//   - a signature verifies only for a vector message unchanged, and a
//     payload opens only with a vector's bound fields and payload: nobody
//     else holds the sender's or the room's key.
func FuzzEnvelope(f *testing.F) {
	vf := loadVectors(f)
	room, err := ParseRoomID(vf.Messages[0].Room)
	if err != nil {
		f.Fatal(err)
	}
	key, err := RoomKeyFromBytes(mustHex(f, vf.Messages[0].RoomKey))
	if err != nil {
		f.Fatal(err)
	}
	var msgs []fuzzMsg
	for _, v := range vf.Messages {
		if v.Room != vf.Messages[0].Room || v.RoomKey != vf.Messages[0].RoomKey {
			f.Fatal("the message vectors no longer share one room and key")
		}
		h := map[string][]string{}
		for k, val := range v.Headers {
			h[k] = []string{val}
		}
		env, err := ParseEnvelope(room, v.Subject, h, mustHex(f, v.Payload))
		if err != nil {
			f.Fatal(err)
		}
		msgs = append(msgs, fuzzMsg{h, env, mustHex(f, v.Plaintext)})
		f.Add(v.Subject, headerBlock(h), env.Payload)
	}
	v0 := msgs[0]
	f.Add(v0.env.Subject, headerBlock(v0.h)+HdrEpoch+": 1\n", v0.env.Payload)
	f.Add(v0.env.Subject, headerBlock(v0.h)+"Nats-Expected-Stream: ROOM_x\n", v0.env.Payload)
	f.Add(v0.env.Subject+".x", headerBlock(v0.h), v0.env.Payload)
	f.Add(v0.env.Subject, headerBlock(v0.h), v0.env.Payload[:NonceSize+TagSize])
	// The valid vector verified beside each input exercises the batch path.
	ref := v0.env
	refKey, err := NewSenderKey(ref.Sender)
	if err != nil {
		f.Fatal(err)
	}
	bv := NewBatchVerifier()

	f.Fuzz(func(t *testing.T, subject, headers string, payload []byte) {
		h := parseHeaderBlock(headers)
		e, err := ParseEnvelope(room, subject, h, payload)
		if err != nil {
			if !wrapsOneOf(err, envelopeErrors) {
				t.Fatalf("parse: undocumented error %v", err)
			}
			return
		}

		// Canonical: the re-encoded headers are the received ones.
		h2 := e.Headers()
		for _, k := range envelopeHeaders {
			if !slices.Equal(h[k], h2[k]) {
				t.Fatalf("header %s: received %q, re-encodes as %q", k, h[k], h2[k])
			}
		}
		e2, err := ParseEnvelope(room, subject, h2, payload)
		if err != nil {
			t.Fatalf("re-encoded envelope does not parse: %v", err)
		}
		if !sameMessage(e, e2, true) {
			t.Fatalf("re-encoded envelope differs: %+v vs %+v", e2, e)
		}
		if n := len(e.AAD()); n != e.aadLen() {
			t.Fatalf("AAD is %d bytes, aadLen says %d", n, e.aadLen())
		}

		// The three verification paths agree.
		one := e.VerifySignature()
		sk, kerr := NewSenderKey(e.Sender)
		prepared := kerr
		if kerr == nil {
			prepared = e.VerifyWith(sk)
		}
		bv.Add(sk, e) // a nil key queues an entry that cannot verify
		bv.Add(refKey, ref)
		res := bv.Verify()
		if len(res) != 2 || res[1] != nil {
			t.Fatalf("batch: the valid vector failed beside the input: %v", res)
		}
		batched := res[0]
		for _, err := range []error{one, prepared, batched} {
			if err != nil && !wrapsOneOf(err, []error{ErrBadSignature}) {
				t.Fatalf("verify: undocumented error %v", err)
			}
		}
		if (one == nil) != (prepared == nil) || (one == nil) != (batched == nil) {
			t.Fatalf("verification paths disagree: one-off %v, prepared %v, batch %v", one, prepared, batched)
		}

		// Only a vector verifies or opens.
		pt, oerr := e.Open(key)
		if oerr != nil && !wrapsOneOf(oerr, []error{ErrDecrypt, ErrPayloadTooShort}) {
			t.Fatalf("open: undocumented error %v", oerr)
		}
		if oerr == nil {
			m, ok := vectorOf(e, msgs, false)
			if !ok {
				t.Fatalf("a payload opened under fields that are no vector's: %+v", e)
			}
			if !bytes.Equal(pt, m.pt) {
				t.Fatal("a vector opened to another plaintext")
			}
		}
		if one == nil {
			if _, ok := vectorOf(e, msgs, true); !ok {
				t.Fatalf("a signature verified on a message that is no vector: %+v", e)
			}
		}
	})
}
