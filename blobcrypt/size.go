package blobcrypt

import "math"

// ChunkSize is the plaintext size of every chunk but the last.
const ChunkSize = 64 << 10

const (
	tagSize  = 16                  // Poly1305 tag
	encChunk = ChunkSize + tagSize // a full chunk's ciphertext, 65,552 bytes
)

// CiphertextSize returns the exact size of the encryption of plaintextSize
// bytes: the header, the plaintext and one 16-byte tag per chunk. It returns
// -1 if plaintextSize is negative or its encryption would be larger than
// math.MaxInt64 bytes.
func CiphertextSize(plaintextSize int64) int64 {
	if plaintextSize < 0 {
		return -1
	}
	chunks := plaintextSize / ChunkSize
	if plaintextSize%ChunkSize != 0 || plaintextSize == 0 {
		chunks++
	}
	overhead := headerSize + chunks*tagSize // no overflow: chunks ≤ 2^47
	if plaintextSize > math.MaxInt64-overhead {
		return -1
	}
	return plaintextSize + overhead
}

// PlaintextSize returns the size of the plaintext of a ciphertext of
// ciphertextSize bytes. It is the inverse of CiphertextSize, and fails with
// ErrFormat for a size that no encryption has (one that would end in a
// partial tag, or in an empty chunk after a full one), so a server can
// check a declared size before it reads a byte.
func PlaintextSize(ciphertextSize int64) (int64, error) {
	body := ciphertextSize - headerSize
	if ciphertextSize < 0 || body < tagSize {
		return 0, errorf(ErrFormat, "%d bytes is shorter than the smallest blob ciphertext (%d)", ciphertextSize, headerSize+tagSize)
	}
	full, rest := body/encChunk, body%encChunk
	switch {
	case rest == 0:
		return full * ChunkSize, nil
	case rest > tagSize, full == 0 && rest == tagSize:
		return full*ChunkSize + rest - tagSize, nil
	default:
		return 0, errorf(ErrFormat, "no blob ciphertext is %d bytes long", ciphertextSize)
	}
}
