package e2e

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/unibus/unibus/identity"
)

// Envelope format version 2 (see docs/FORMATS.md). Version 1 lacked the
// send time; it is read only from streams written before the upgrade
// (ParseStoredEnvelopeInto).
const (
	Version       = "2"
	AADLabel      = "unibus/v2/msg"
	VersionV1     = "1"
	AADLabelV1    = "unibus/v1/msg"
	NonceSize     = 24 // XChaCha20-Poly1305
	TagSize       = 16
	MaxSubjectLen = 512
	MaxMsgIDLen   = 64
)

// Header names carried on the NATS message.
const (
	HdrVersion = "Unibus-Version"
	HdrEpoch   = "Unibus-Epoch"
	HdrSender  = "Unibus-Sender"
	HdrSeq     = "Unibus-Seq"
	HdrSig     = "Unibus-Sig"
	HdrTime    = "Unibus-Time"
	HdrMsgID   = "Unibus-Msg-Id"
	// HdrMsgIDV1 carried the message id in version 1 (the stream's own
	// de-duplication header). In version 2 the relay sets that header to
	// a name of its own (the sender, the room and this id), so a member
	// cannot reuse another member's message id to have its message
	// dropped as a duplicate.
	HdrMsgIDV1 = "Nats-Msg-Id"
)

// MaxClockSkew is how far a message's send time may be from the clock of
// the server that stores it: the relay refuses a message outside it, so a
// captured envelope replayed after the stream's duplicate window (two
// minutes, longer than this) is refused too. SendWindow is what receivers
// allow between the send time and the time the stream stored the message
// (the skew plus the time to store it).
const (
	MaxClockSkew = 60 * time.Second
	SendWindow   = MaxClockSkew + 5*time.Second
)

// Envelope is one encrypted, signed room message as it travels.
type Envelope struct {
	Room    RoomID
	Subject string
	Epoch   uint64
	Sender  identity.SignPub
	MsgID   string // "<16 lowercase hex sender-stream id>-<seq>"
	Seq     uint64
	// SentMillis is the send time in Unix milliseconds (version 2; 0 in a
	// version 1 envelope).
	SentMillis uint64
	// V1 marks a version 1 envelope, read from a stream written before
	// the upgrade: no send time, the version 1 AAD.
	V1      bool
	Payload []byte // nonce (24) || XChaCha20-Poly1305 ciphertext
	Sig     []byte // ed25519 by Sender over AAD || Payload

	sig [ed25519.SignatureSize]byte // ParseEnvelope decodes Sig here
}

// MsgID builds the message id for a sender stream and sequence number. The
// same id on a retried publish lets JetStream de-duplicate it.
func MsgID(stream [8]byte, seq uint64) string {
	var b [16 + 1 + 20]byte
	hex.Encode(b[:16], stream[:])
	b[16] = '-'
	return string(strconv.AppendUint(b[:17], seq, 10))
}

// StreamOf returns the sender-stream part of a valid message id.
func StreamOf(msgID string) string {
	i := strings.IndexByte(msgID, '-')
	if i < 0 {
		return ""
	}
	return msgID[:i]
}

// AAD returns the associated data bound by the AEAD and the signature:
//
//	"unibus/v2/msg" || 0x00 || room (16) || u16 len || subject || u64 epoch
//	|| sender (32) || u16 len || msg id || u64 seq || u64 sent (Unix ms)
//
// all integers big endian. A version 1 envelope's AAD has the label
// "unibus/v1/msg" and ends after seq.
func (e *Envelope) AAD() []byte { return e.appendAAD(nil) }

func (e *Envelope) appendAAD(b []byte) []byte {
	if e.V1 {
		b = append(b, AADLabelV1...)
	} else {
		b = append(b, AADLabel...)
	}
	b = append(b, 0)
	b = append(b, e.Room[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.Subject)))
	b = append(b, e.Subject...)
	b = binary.BigEndian.AppendUint64(b, e.Epoch)
	b = append(b, e.Sender[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.MsgID)))
	b = append(b, e.MsgID...)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	if e.V1 {
		return b
	}
	return binary.BigEndian.AppendUint64(b, e.SentMillis)
}

// aadLen is the length of the AAD.
func (e *Envelope) aadLen() int {
	if e.V1 {
		return len(AADLabelV1) + 1 + RoomIDSize + 2 + len(e.Subject) + 8 + 32 + 2 + len(e.MsgID) + 8
	}
	return len(AADLabel) + 1 + RoomIDSize + 2 + len(e.Subject) + 8 + 32 + 2 + len(e.MsgID) + 8 + 8
}

// Sent is the send time (the zero time in a version 1 envelope).
func (e *Envelope) Sent() time.Time {
	if e.V1 {
		return time.Time{}
	}
	return time.UnixMilli(int64(e.SentMillis))
}

// CheckStoredAt refuses a version 2 envelope whose send time is more than
// SendWindow from storedAt, the time the stream stored it: a captured
// envelope published again later (a replay) carries the old send time.
// A version 1 envelope has no send time and passes.
func (e *Envelope) CheckStoredAt(storedAt time.Time) error {
	if e.V1 {
		return nil
	}
	if d := storedAt.Sub(e.Sent()); d > SendWindow || d < -SendWindow {
		return fmt.Errorf("message %s from %s: sent at %s, stored %v later: %w", e.MsgID, e.Sender.Short(),
			e.Sent().UTC().Format(time.RFC3339), d.Round(time.Second), ErrReplayed)
	}
	return nil
}

// scratch buffers hold AAD || Payload while a receiver verifies and opens
// a message, so that neither allocates per message.
var scratch = sync.Pool{New: func() any { return new([]byte) }}

// maxScratch bounds the buffers kept in the pool: a rare large message
// does not pin its buffer.
const maxScratch = 64 << 10

func putScratch(bp *[]byte, b []byte) {
	if cap(b) <= maxScratch {
		*bp = b
		scratch.Put(bp)
	}
}

// withSigned calls f with AAD || Payload (the bytes the sender signs) in a
// pooled buffer that f must not keep.
func (e *Envelope) withSigned(f func(signed []byte) bool) bool {
	bp := scratch.Get().(*[]byte)
	b := append(e.appendAAD((*bp)[:0]), e.Payload...)
	ok := f(b)
	putScratch(bp, b)
	return ok
}

// SealMessage encrypts and signs plaintext, sent now. nonce must be unique
// per key: callers pass 24 random bytes.
func SealMessage(sender *identity.Identity, room RoomID, subject string, epoch uint64, key *RoomKey, msgID string, seq uint64, nonce []byte, plaintext []byte) (*Envelope, error) {
	return SealMessageAt(sender, room, subject, epoch, key, msgID, seq, time.Now(), nonce, plaintext)
}

// SealMessageAt is SealMessage with the send time given (the vectors pass
// a fixed one); it is kept to the millisecond.
//
// It makes three allocations whatever the size: the Envelope, one buffer
// holding AAD || Payload (Payload is its tail, so the signed bytes are
// never copied), and the signature.
func SealMessageAt(sender *identity.Identity, room RoomID, subject string, epoch uint64, key *RoomKey, msgID string, seq uint64, sent time.Time, nonce []byte, plaintext []byte) (*Envelope, error) {
	ms := sent.UnixMilli()
	if ms <= 0 {
		return nil, fmt.Errorf("seal message: send time %v is before 1970", sent)
	}
	e := &Envelope{Room: room, Subject: subject, Epoch: epoch, Sender: sender.SignPub(), MsgID: msgID, Seq: seq, SentMillis: uint64(ms)}
	if err := e.seal(sender, key, nonce, plaintext); err != nil {
		return nil, err
	}
	return e, nil
}

// seal fills e.Payload and e.Sig from e's other fields.
func (e *Envelope) seal(sender *identity.Identity, key *RoomKey, nonce []byte, plaintext []byte) error {
	if err := e.checkFields(); err != nil {
		return err
	}
	if len(nonce) != NonceSize {
		return fmt.Errorf("seal message: nonce must be %d bytes", NonceSize)
	}
	n := e.aadLen()
	buf := e.appendAAD(make([]byte, 0, n+NonceSize+len(plaintext)+TagSize))
	buf = append(buf, nonce...)
	buf = key.aead.Seal(buf, nonce, plaintext, buf[:n])
	e.Payload = buf[n:]
	// The same deterministic RFC 8032 signature crypto/ed25519 makes
	// (the vectors pin it), in less than half the time.
	e.Sig = voi.Sign(voi.PrivateKey(sender.SigningKey()), buf)
	return nil
}

func (e *Envelope) checkFields() error {
	switch {
	case e.Epoch == 0:
		return fmt.Errorf("%w: epoch must be >= 1", ErrMalformed)
	case e.Seq == 0:
		return fmt.Errorf("%w: sequence number must be >= 1", ErrMalformed)
	case len(e.Subject) == 0 || len(e.Subject) > MaxSubjectLen:
		return fmt.Errorf("%w: subject length out of range", ErrMalformed)
	case !e.belowRoom():
		return fmt.Errorf("%w: subject is not below this room", ErrMalformed)
	case len(e.MsgID) > MaxMsgIDLen:
		return fmt.Errorf("%w: message id too long", ErrMalformed)
	}
	stream, seq, ok := strings.Cut(e.MsgID, "-")
	var canon [20]byte
	if !ok || len(stream) != 16 || !isLowerHex(stream) || seq != string(strconv.AppendUint(canon[:0], e.Seq, 10)) {
		return fmt.Errorf("%w: message id must be <16 hex>-<seq> matching %s", ErrMalformed, HdrSeq)
	}
	return nil
}

// belowRoom reports whether Subject starts with "unibus.room.<room>.".
func (e *Envelope) belowRoom() bool {
	const prefix = "unibus.room."
	var room [2 * RoomIDSize]byte
	hex.Encode(room[:], e.Room[:])
	s := e.Subject
	return len(s) > len(prefix)+len(room) && s[:len(prefix)] == prefix &&
		s[len(prefix):len(prefix)+len(room)] == string(room[:]) && s[len(prefix)+len(room)] == '.'
}

// Headers returns the NATS headers that carry the envelope's fields. The
// result converts directly to nats.Header. It makes four allocations: the
// map, one backing array for the values and one string for the sender,
// sequence, epoch and signature texts (each value is a slice of it).
//
// A version 1 envelope's headers have Unibus-Version 1 and no Unibus-Time.
func (e *Envelope) Headers() map[string][]string {
	var b [2*len(identity.SignPub{}) + 20 + 20 + 20 + 86]byte
	t := hex.AppendEncode(b[:0], e.Sender[:])
	nSender := len(t)
	t = strconv.AppendUint(t, e.Seq, 10)
	nSeq := len(t)
	t = strconv.AppendUint(t, e.Epoch, 10)
	nEpoch := len(t)
	t = strconv.AppendUint(t, e.SentMillis, 10)
	nTime := len(t)
	t = base64.RawURLEncoding.AppendEncode(t, e.Sig)
	text := string(t)
	v := make([]string, 7)
	v[0], v[1], v[2] = Version, text[nSeq:nEpoch], text[:nSender]
	v[3], v[4], v[5], v[6] = text[nSender:nSeq], e.MsgID, text[nTime:], text[nEpoch:nTime]
	h := make(map[string][]string, 9) // room for the transport's own headers
	h[HdrVersion] = v[0:1:1]
	h[HdrEpoch] = v[1:2:2]
	h[HdrSender] = v[2:3:3]
	h[HdrSeq] = v[3:4:4]
	h[HdrSig] = v[5:6:6]
	if e.V1 {
		h[HdrVersion] = []string{VersionV1}
		h[HdrMsgIDV1] = v[4:5:5]
	} else {
		h[HdrMsgID] = v[4:5:5]
		h[HdrTime] = v[6:7:7]
	}
	return h
}

// sigEncoding decodes Unibus-Sig strictly: the unused low bits of the last
// character must be zero, so that one signature has one text.
var sigEncoding = base64.RawURLEncoding.Strict()

func header(h map[string][]string, k string) (string, error) {
	v := h[k]
	if len(v) != 1 {
		return "", fmt.Errorf("%w: header %s must appear exactly once", ErrMalformed, k)
	}
	return v[0], nil
}

// ParseEnvelope reads a message received on subject in room. It checks
// structure only; call VerifySignature, then Open. Only this version's
// envelopes are accepted.
func ParseEnvelope(room RoomID, subject string, h map[string][]string, payload []byte) (*Envelope, error) {
	e := new(Envelope)
	if err := ParseEnvelopeInto(e, room, subject, h, payload); err != nil {
		return nil, err
	}
	return e, nil
}

// ParseEnvelopeInto is ParseEnvelope into an Envelope the caller owns, for
// receivers that reuse them: it allocates nothing. e is overwritten; its
// Payload aliases payload and its Sig aliases e itself.
func ParseEnvelopeInto(e *Envelope, room RoomID, subject string, h map[string][]string, payload []byte) error {
	return parseEnvelopeInto(e, room, subject, h, payload, false)
}

// ParseStoredEnvelopeInto is ParseEnvelopeInto that also accepts a version
// 1 envelope. Use it only for messages read from a room's own stream,
// which may hold messages stored before the upgrade; since the upgrade no
// relay stores a version 1 envelope.
func ParseStoredEnvelopeInto(e *Envelope, room RoomID, subject string, h map[string][]string, payload []byte) error {
	return parseEnvelopeInto(e, room, subject, h, payload, true)
}

func parseEnvelopeInto(e *Envelope, room RoomID, subject string, h map[string][]string, payload []byte, allowV1 bool) error {
	*e = Envelope{Room: room, Subject: subject, Payload: payload}
	ver, err := header(h, HdrVersion)
	if err != nil {
		return err
	}
	switch {
	case ver == Version:
	case ver == VersionV1 && allowV1:
		e.V1 = true
	default:
		return fmt.Errorf("%w: %q", ErrVersion, ver)
	}
	var s string
	if !e.V1 {
		if s, err = header(h, HdrTime); err != nil {
			return err
		}
		if e.SentMillis, err = parseUint(s); err != nil || e.SentMillis == 0 || e.SentMillis > 1<<62 {
			return fmt.Errorf("%w: bad %s", ErrMalformed, HdrTime)
		}
	}
	if s, err = header(h, HdrEpoch); err != nil {
		return err
	}
	if e.Epoch, err = parseUint(s); err != nil {
		return fmt.Errorf("%w: bad %s", ErrMalformed, HdrEpoch)
	}
	if s, err = header(h, HdrSeq); err != nil {
		return err
	}
	if e.Seq, err = parseUint(s); err != nil {
		return fmt.Errorf("%w: bad %s", ErrMalformed, HdrSeq)
	}
	if s, err = header(h, HdrSender); err != nil {
		return err
	}
	if e.Sender, err = identity.ParseSignPub(s); err != nil {
		return fmt.Errorf("%w: bad %s", ErrMalformed, HdrSender)
	}
	msgIDHeader := HdrMsgID
	if e.V1 {
		msgIDHeader = HdrMsgIDV1
	}
	if e.MsgID, err = header(h, msgIDHeader); err != nil {
		return err
	}
	if s, err = header(h, HdrSig); err != nil {
		return err
	}
	// base64url of 64 bytes, no padding: 86 characters.
	if len(s) != base64.RawURLEncoding.EncodedLen(len(e.sig)) {
		return fmt.Errorf("%w: bad %s", ErrMalformed, HdrSig)
	}
	if n, err := sigEncoding.Decode(e.sig[:], []byte(s)); err != nil || n != len(e.sig) {
		return fmt.Errorf("%w: bad %s", ErrMalformed, HdrSig)
	}
	e.Sig = e.sig[:]
	if err := e.checkFields(); err != nil {
		return err
	}
	if len(payload) < NonceSize+TagSize {
		return ErrPayloadTooShort
	}
	return nil
}

// Signature verification.
//
// Receivers check envelope signatures with the RFC 8032 (FIPS 186-5)
// cofactored equation, rejecting non-canonical encodings of A and R and
// small-order public keys, the same rule for one signature and for a
// batch (github.com/oasisprotocol/curve25519-voi). Every signature an
// ed25519 signer produces verifies under it; it can differ from
// crypto/ed25519's cofactorless check only on signatures crafted by the
// key's own holder, so it never lets anyone speak for another sender.

// VerifySignature checks the sender's signature over AAD || Payload.
func (e *Envelope) VerifySignature() error {
	if len(e.Sig) != ed25519.SignatureSize ||
		!e.withSigned(func(b []byte) bool { return voi.Verify(voi.PublicKey(e.Sender[:]), b, e.Sig) }) {
		return e.badSignature()
	}
	return nil
}

// SenderKey is a sender's public key prepared for verifying many of its
// messages: the point is decompressed and its multiples precomputed once
// (about 1.5 KiB), where a one-off verification redoes that work for every
// message. It is immutable and safe for concurrent use.
type SenderKey struct {
	pub identity.SignPub
	x   *voi.ExpandedPublicKey
}

// NewSenderKey prepares p for verification; it fails for bytes that are
// not a curve point.
func NewSenderKey(p identity.SignPub) (*SenderKey, error) {
	x, err := voi.NewExpandedPublicKey(voi.PublicKey(p[:]))
	if err != nil {
		return nil, fmt.Errorf("%w: sender key: %v", ErrBadSignature, err)
	}
	return &SenderKey{pub: p, x: x}, nil
}

// VerifyWith is VerifySignature with the sender's prepared key, which must
// be the key of e.Sender.
func (e *Envelope) VerifyWith(k *SenderKey) error {
	if k == nil || k.pub != e.Sender || len(e.Sig) != ed25519.SignatureSize ||
		!e.withSigned(func(b []byte) bool { return voi.VerifyExpanded(k.x, b, e.Sig) }) {
		return e.badSignature()
	}
	return nil
}

// BatchVerifier checks the signatures of several envelopes at once, which
// costs roughly half of checking them one by one when they are all valid;
// when one is not, each is checked alone, so the result is always per
// envelope. It is not safe for concurrent use; reuse it.
type BatchVerifier struct {
	bv   *voi.BatchVerifier
	envs []*Envelope
	errs []error
	buf  []byte
}

// invalidKey is a small-order point: no signature verifies under it.
var invalidKey [voi.PublicKeySize]byte

// NewBatchVerifier returns an empty BatchVerifier.
func NewBatchVerifier() *BatchVerifier {
	return &BatchVerifier{bv: voi.NewBatchVerifier()}
}

// Add queues e's signature, checked against k, which must be the key of
// e.Sender. The batch keeps e, not the signed bytes.
func (b *BatchVerifier) Add(k *SenderKey, e *Envelope) {
	b.envs = append(b.envs, e)
	if k == nil || k.pub != e.Sender || len(e.Sig) != ed25519.SignatureSize {
		// A placeholder entry that cannot verify keeps the indexes aligned.
		b.bv.Add(invalidKey[:], nil, nil)
		return
	}
	// The signed bytes are hashed as they are added; one buffer serves
	// every entry.
	b.buf = append(e.appendAAD(b.buf[:0]), e.Payload...)
	b.bv.AddExpanded(k.x, b.buf, e.Sig)
}

// Len is the number of queued envelopes.
func (b *BatchVerifier) Len() int { return len(b.envs) }

// Verify checks every queued signature and empties the batch. The result
// has one entry per Add, in order: nil, or an error wrapping
// ErrBadSignature. It is valid until the next call.
func (b *BatchVerifier) Verify() []error {
	b.errs = b.errs[:0]
	if len(b.envs) > 0 {
		_, valid := b.bv.Verify(nil)
		for i, e := range b.envs {
			if valid[i] {
				b.errs = append(b.errs, nil)
			} else {
				b.errs = append(b.errs, e.badSignature())
			}
		}
	}
	clear(b.envs)
	b.envs = b.envs[:0]
	b.bv.Reset()
	return b.errs
}

func (e *Envelope) badSignature() error {
	return fmt.Errorf("message %s from %s: %w", e.MsgID, e.Sender.Short(), ErrBadSignature)
}

// Open decrypts the payload with the epoch's room key. Callers verify the
// signature and the sender's membership first. The plaintext is the only
// allocation.
func (e *Envelope) Open(key *RoomKey) ([]byte, error) {
	if len(e.Payload) < NonceSize+TagSize {
		return nil, ErrPayloadTooShort
	}
	pt := make([]byte, 0, len(e.Payload)-NonceSize-TagSize)
	var err error
	bp := scratch.Get().(*[]byte)
	aad := e.appendAAD((*bp)[:0])
	pt, err = key.aead.Open(pt, e.Payload[:NonceSize], e.Payload[NonceSize:], aad)
	putScratch(bp, aad)
	if err != nil {
		return nil, fmt.Errorf("message %s: %w", e.MsgID, ErrDecrypt)
	}
	return pt, nil
}

func parseUint(s string) (uint64, error) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("not a canonical decimal")
	}
	return strconv.ParseUint(s, 10, 64)
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
