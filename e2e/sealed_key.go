package e2e

import (
	"crypto/hpke"
	"encoding/binary"
	"fmt"

	"github.com/unibus/unibus/identity"
)

// Labels of the sealed-key format (version 1).
const (
	SealedKeyInfoLabel = "unibus/v1/sealed-key"
	SealedKeySigLabel  = "unibus/v1/sealed-key-sig"
)

// SealedSize is the size of a sealed room key: the MLKEM768X25519
// encapsulation (1120 bytes) followed by the ChaCha20-Poly1305 ciphertext of
// the 32-byte room key (48 bytes).
const SealedSize = 1120 + RoomKeySize + 16

// SealedKey is a room key for one epoch sealed to one member, signed by the
// member (owner) who sealed it.
type SealedKey struct {
	Room   RoomID
	Epoch  uint64
	Member identity.SignPub
	Sealer identity.SignPub
	Sealed []byte // enc || ciphertext
	Sig    []byte // ed25519 by Sealer over SealedKeySigMessage
}

// SealedKeyInfo is the HPKE info: label || 0x00 || room (16) || epoch (u64
// big endian) || member sign-pub (32).
func SealedKeyInfo(room RoomID, epoch uint64, member identity.SignPub) []byte {
	b := make([]byte, 0, len(SealedKeyInfoLabel)+1+RoomIDSize+8+32)
	b = append(b, SealedKeyInfoLabel...)
	b = append(b, 0)
	b = append(b, room[:]...)
	b = binary.BigEndian.AppendUint64(b, epoch)
	return append(b, member[:]...)
}

// SealedKeySigMessage is what the sealer signs: label || 0x00 || room (16)
// || epoch (u64 big endian) || member sign-pub (32) || sealed bytes.
func SealedKeySigMessage(room RoomID, epoch uint64, member identity.SignPub, sealed []byte) []byte {
	b := make([]byte, 0, len(SealedKeySigLabel)+1+RoomIDSize+8+32+len(sealed))
	b = append(b, SealedKeySigLabel...)
	b = append(b, 0)
	b = append(b, room[:]...)
	b = binary.BigEndian.AppendUint64(b, epoch)
	b = append(b, member[:]...)
	return append(b, sealed...)
}

func suite() (hpke.KDF, hpke.AEAD) { return hpke.HKDFSHA256(), hpke.ChaCha20Poly1305() }

// SealRoomKey seals key for member (whose published KEM key is memberKEM)
// and signs the result as sealer.
func SealRoomKey(sealer *identity.Identity, room RoomID, epoch uint64, member identity.SignPub, memberKEM identity.KEMPub, key *RoomKey) (SealedKey, error) {
	if memberKEM.IsZero() {
		return SealedKey{}, fmt.Errorf("seal room key: member %s has no KEM key", member.Short())
	}
	if epoch == 0 {
		return SealedKey{}, fmt.Errorf("seal room key: epoch must be >= 1")
	}
	kdf, aead := suite()
	sealed, err := hpke.Seal(memberKEM.HPKE(), kdf, aead, SealedKeyInfo(room, epoch, member), key.k[:])
	if err != nil {
		return SealedKey{}, fmt.Errorf("seal room key: %w", err)
	}
	return SealedKey{
		Room: room, Epoch: epoch, Member: member, Sealer: sealer.SignPub(),
		Sealed: sealed,
		Sig:    sealer.Sign(SealedKeySigMessage(room, epoch, member, sealed)),
	}, nil
}

// VerifySig checks the sealer's signature. It does not check that the sealer
// may seal for the room: that is the caller's membership rule.
func (sk SealedKey) VerifySig() error {
	if len(sk.Sealed) != SealedSize {
		return fmt.Errorf("%w: sealed key is %d bytes, want %d", ErrMalformed, len(sk.Sealed), SealedSize)
	}
	if !sk.Sealer.Verify(SealedKeySigMessage(sk.Room, sk.Epoch, sk.Member, sk.Sealed), sk.Sig) {
		return fmt.Errorf("sealed key for epoch %d: %w", sk.Epoch, ErrBadSignature)
	}
	return nil
}

// OpenRoomKey verifies the sealer's signature and opens sk with id's KEM
// key. sk must be addressed to id.
func OpenRoomKey(id *identity.Identity, sk SealedKey) (*RoomKey, error) {
	if !sk.Member.Equal(id.SignPub()) {
		return nil, ErrWrongRecipient
	}
	if err := sk.VerifySig(); err != nil {
		return nil, err
	}
	kdf, aead := suite()
	pt, err := hpke.Open(id.KEMPrivate(), kdf, aead, SealedKeyInfo(sk.Room, sk.Epoch, sk.Member), sk.Sealed)
	if err != nil {
		return nil, fmt.Errorf("open sealed key for epoch %d: %w", sk.Epoch, ErrDecrypt)
	}
	return RoomKeyFromBytes(pt)
}
