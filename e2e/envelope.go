package e2e

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/unibus/unibus/identity"
)

// Envelope format version 1 (see docs/FORMATS.md).
const (
	Version       = "1"
	AADLabel      = "unibus/v1/msg"
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
	HdrMsgID   = "Nats-Msg-Id"
)

// Envelope is one encrypted, signed room message as it travels.
type Envelope struct {
	Room    RoomID
	Subject string
	Epoch   uint64
	Sender  identity.SignPub
	MsgID   string // "<16 lowercase hex sender-stream id>-<seq>"
	Seq     uint64
	Payload []byte // nonce (24) || XChaCha20-Poly1305 ciphertext
	Sig     []byte // ed25519 by Sender over AAD || Payload
}

// MsgID builds the message id for a sender stream and sequence number. The
// same id on a retried publish lets JetStream de-duplicate it.
func MsgID(stream [8]byte, seq uint64) string {
	return hex.EncodeToString(stream[:]) + "-" + strconv.FormatUint(seq, 10)
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
//	"unibus/v1/msg" || 0x00 || room (16) || u16 len || subject || u64 epoch
//	|| sender (32) || u16 len || msg id || u64 seq
//
// all integers big endian.
func (e *Envelope) AAD() []byte { return e.appendAAD(nil) }

func (e *Envelope) appendAAD(b []byte) []byte {
	b = append(b, AADLabel...)
	b = append(b, 0)
	b = append(b, e.Room[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.Subject)))
	b = append(b, e.Subject...)
	b = binary.BigEndian.AppendUint64(b, e.Epoch)
	b = append(b, e.Sender[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.MsgID)))
	b = append(b, e.MsgID...)
	return binary.BigEndian.AppendUint64(b, e.Seq)
}

// signed returns AAD || Payload, the bytes the sender signs.
func (e *Envelope) signed() []byte {
	b := make([]byte, 0, len(AADLabel)+1+RoomIDSize+2+len(e.Subject)+8+32+2+len(e.MsgID)+8+len(e.Payload))
	return append(e.appendAAD(b), e.Payload...)
}

// SealMessage encrypts and signs plaintext. nonce must be unique per key:
// callers pass 24 random bytes (the vectors pass fixed ones).
func SealMessage(sender *identity.Identity, room RoomID, subject string, epoch uint64, key *RoomKey, msgID string, seq uint64, nonce []byte, plaintext []byte) (*Envelope, error) {
	e := &Envelope{Room: room, Subject: subject, Epoch: epoch, Sender: sender.SignPub(), MsgID: msgID, Seq: seq}
	if err := e.checkFields(); err != nil {
		return nil, err
	}
	if len(nonce) != NonceSize {
		return nil, fmt.Errorf("seal message: nonce must be %d bytes", NonceSize)
	}
	aad := e.AAD()
	e.Payload = make([]byte, NonceSize, NonceSize+len(plaintext)+TagSize)
	copy(e.Payload, nonce)
	e.Payload = key.aead.Seal(e.Payload, nonce, plaintext, aad)
	e.Sig = sender.Sign(e.signed())
	return e, nil
}

func (e *Envelope) checkFields() error {
	switch {
	case e.Epoch == 0:
		return fmt.Errorf("%w: epoch must be >= 1", ErrMalformed)
	case e.Seq == 0:
		return fmt.Errorf("%w: sequence number must be >= 1", ErrMalformed)
	case len(e.Subject) == 0 || len(e.Subject) > MaxSubjectLen:
		return fmt.Errorf("%w: subject length out of range", ErrMalformed)
	case !strings.HasPrefix(e.Subject, "unibus.room."+e.Room.String()+"."):
		return fmt.Errorf("%w: subject is not below this room", ErrMalformed)
	case len(e.MsgID) > MaxMsgIDLen:
		return fmt.Errorf("%w: message id too long", ErrMalformed)
	}
	stream, seq, ok := strings.Cut(e.MsgID, "-")
	if !ok || len(stream) != 16 || !isLowerHex(stream) || seq != strconv.FormatUint(e.Seq, 10) {
		return fmt.Errorf("%w: message id must be <16 hex>-<seq> matching %s", ErrMalformed, HdrSeq)
	}
	return nil
}

// Headers returns the NATS headers that carry the envelope's fields. The
// result converts directly to nats.Header.
func (e *Envelope) Headers() map[string][]string {
	return map[string][]string{
		HdrVersion: {Version},
		HdrEpoch:   {strconv.FormatUint(e.Epoch, 10)},
		HdrSender:  {e.Sender.String()},
		HdrSeq:     {strconv.FormatUint(e.Seq, 10)},
		HdrMsgID:   {e.MsgID},
		HdrSig:     {base64.RawURLEncoding.EncodeToString(e.Sig)},
	}
}

func header(h map[string][]string, k string) (string, error) {
	v := h[k]
	if len(v) != 1 {
		return "", fmt.Errorf("%w: header %s must appear exactly once", ErrMalformed, k)
	}
	return v[0], nil
}

// ParseEnvelope reads a message received on subject in room. It checks
// structure only; call VerifySignature, then Open.
func ParseEnvelope(room RoomID, subject string, h map[string][]string, payload []byte) (*Envelope, error) {
	ver, err := header(h, HdrVersion)
	if err != nil {
		return nil, err
	}
	if ver != Version {
		return nil, fmt.Errorf("%w: %q", ErrVersion, ver)
	}
	e := &Envelope{Room: room, Subject: subject, Payload: payload}
	var s string
	if s, err = header(h, HdrEpoch); err != nil {
		return nil, err
	}
	if e.Epoch, err = parseUint(s); err != nil {
		return nil, fmt.Errorf("%w: bad %s", ErrMalformed, HdrEpoch)
	}
	if s, err = header(h, HdrSeq); err != nil {
		return nil, err
	}
	if e.Seq, err = parseUint(s); err != nil {
		return nil, fmt.Errorf("%w: bad %s", ErrMalformed, HdrSeq)
	}
	if s, err = header(h, HdrSender); err != nil {
		return nil, err
	}
	if e.Sender, err = identity.ParseSignPub(s); err != nil {
		return nil, fmt.Errorf("%w: bad %s", ErrMalformed, HdrSender)
	}
	if e.MsgID, err = header(h, HdrMsgID); err != nil {
		return nil, err
	}
	if s, err = header(h, HdrSig); err != nil {
		return nil, err
	}
	if len(s) != 86 { // base64url of 64 bytes, no padding
		return nil, fmt.Errorf("%w: bad %s", ErrMalformed, HdrSig)
	}
	if e.Sig, err = base64.RawURLEncoding.DecodeString(s); err != nil {
		return nil, fmt.Errorf("%w: bad %s", ErrMalformed, HdrSig)
	}
	if err := e.checkFields(); err != nil {
		return nil, err
	}
	if len(payload) < NonceSize+TagSize {
		return nil, ErrPayloadTooShort
	}
	return e, nil
}

// VerifySignature checks the sender's signature over AAD || Payload.
func (e *Envelope) VerifySignature() error {
	if !e.Sender.Verify(e.signed(), e.Sig) {
		return fmt.Errorf("message %s from %s: %w", e.MsgID, e.Sender.Short(), ErrBadSignature)
	}
	return nil
}

// Open decrypts the payload with the epoch's room key. Callers verify the
// signature and the sender's membership first.
func (e *Envelope) Open(key *RoomKey) ([]byte, error) {
	if len(e.Payload) < NonceSize+TagSize {
		return nil, ErrPayloadTooShort
	}
	pt, err := key.aead.Open(nil, e.Payload[:NonceSize], e.Payload[NonceSize:], e.AAD())
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
