// Package e2e implements unibus's end-to-end encryption formats: room ids and
// room keys, room keys sealed to a member's KEM key (HPKE, RFC 9180), and the
// signed, encrypted message envelope carried on the data plane.
//
// Every format is versioned and byte-exact; docs/FORMATS.md describes each
// byte and testdata/vectors.json holds vectors generated from fixed seeds.
// This package never touches the network or the store: it turns keys and
// bytes into bytes, and reports why it refuses.
package e2e

import "errors"

// Errors a caller branches on.
var (
	ErrMalformed       = errors.New("malformed unibus envelope")
	ErrVersion         = errors.New("unsupported unibus format version")
	ErrBadSignature    = errors.New("signature does not verify")
	ErrDecrypt         = errors.New("decryption failed: ciphertext truncated, tampered with, or wrong key")
	ErrWrongRecipient  = errors.New("sealed key is addressed to another member")
	ErrBadRoomID       = errors.New("room id must be 32 lowercase hex characters")
	ErrPayloadTooShort = errors.New("message payload shorter than nonce and tag: truncated ciphertext")
	ErrReplayed        = errors.New("message stored long after it was sent: replayed")
)
