package blobcrypt

import (
	"encoding/binary"

	"golang.org/x/crypto/chacha20poly1305"
)

// Chunk flags: the last byte of a chunk's nonce.
const (
	flagMore = 0x00
	flagLast = 0x01
)

// maxChunks bounds the chunk counter. The nonce has room for 2^88 chunks;
// a uint64 counter is far beyond any blob (2^64 chunks is 2^80 bytes), and
// stopping one short of wrapping keeps every nonce unique.
const maxChunks = 1<<64 - 1

// chunkNonce returns nonce(i, flag): i as an 11-byte big-endian integer,
// then the flag.
func chunkNonce(i uint64, flag byte) [chacha20poly1305.NonceSize]byte {
	var n [chacha20poly1305.NonceSize]byte
	setNonce(&n, i, flag)
	return n
}

// setNonce writes nonce(i, flag) into n. Reader and writer keep n in their
// struct: a local array sliced for the AEAD interface would escape to the
// heap, one allocation per chunk.
func setNonce(n *[chacha20poly1305.NonceSize]byte, i uint64, flag byte) {
	n[0], n[1], n[2] = 0, 0, 0
	binary.BigEndian.PutUint64(n[3:11], i)
	n[11] = flag
}
