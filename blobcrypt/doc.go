// Package blobcrypt encrypts blobs (files) on the client, streaming, so that
// the server stores only ciphertext and neither side ever holds a whole blob
// in memory.
//
// It is the STREAM online authenticated encryption of Hoang, Reyhanitabar,
// Rogaway and Vizár, as age uses it for its payload: the plaintext is cut
// into 64 KiB chunks, each sealed with ChaCha20-Poly1305 under a nonce made
// of the chunk's position and a last-chunk flag. Truncation (even exactly at
// a chunk boundary), extension, reordering, chunks spliced in from another
// blob and any altered byte are detected, and a Reader releases plaintext
// only of chunks that authenticated.
//
// It is not a file format for people: it has no recipients, no armor and no
// key management. The blob key is a random Key that the caller carries
// inside an end-to-end encrypted room message; this package never sees
// where it goes.
//
// # Format, version 1
//
// All integers are big endian, || is concatenation. The same text, for
// implementers, is in docs/FORMATS.md ("Blob ciphertext"); vectors are in
// testdata/vectors.json.
//
//	header     = magic || salt                                  31 bytes
//	magic      = "unibus/blob/v1\n"                             15 bytes: 75 6e 69 62 75 73 2f 62 6c 6f 62 2f 76 31 0a
//	salt       = 16 random bytes, fresh for every blob
//	payload    = HKDF-SHA256(ikm = blob key (32), salt = salt, info = "unibus/v1/blob", L = 32)
//	nonce(i,f) = i as an 11-byte big-endian integer || f        12 bytes
//	chunk i    = ChaCha20-Poly1305.Seal(key = payload, nonce = nonce(i, f), plaintext = P_i, ad = header)
//	f          = 0x01 for the final chunk, 0x00 for every other chunk
//	blob       = header || chunk 0 || chunk 1 || … || chunk n-1
//
// The plaintext is cut into P_0 … P_{n-1}: every P_i but the last is exactly
// [ChunkSize] (65,536) bytes, so every chunk but the last is exactly 65,552
// bytes (plaintext and its 16-byte tag). The last holds 1 to 65,536 bytes,
// except for an empty blob, which is a single empty final chunk (its 16-byte
// tag only). A non-empty blob never ends with an empty chunk, so each
// plaintext size has exactly one ciphertext size ([CiphertextSize],
// [PlaintextSize]).
//
// The salt makes the payload key fresh even if a blob key is reused by
// mistake. The whole header is the additional data of every chunk, so a
// changed salt or magic fails every chunk, and a chunk moved to another
// position, to another blob, or from the end to the middle fails its tag.
//
// # Reading
//
// A reader cannot tell from a full-size chunk alone whether it is the last
// one, so it reads one byte ahead: a full-size chunk followed by the end of
// the input must open with f = 0x01, one followed by more data with f = 0x00.
// Errors, all sticky, say what was found ([errors.Is] tests them):
//
//   - [ErrTruncated]: the input ends before the final chunk: inside the
//     header (an empty input too), right after a chunk that authenticated as
//     not final (the final chunk was dropped at a chunk boundary), or less
//     than a tag's 16 bytes into a chunk.
//   - [ErrAuth]: a chunk does not authenticate: a changed byte, reordered or
//     foreign chunks, the wrong key, a cut inside a chunk (a STREAM chunk
//     cannot be told apart from a cut one), or data appended after a short
//     final chunk.
//   - [ErrTrailingData]: a full-size chunk authenticated as the final one,
//     but data follows it.
//   - [ErrFormat]: the input does not start with the v1 magic, or it has an
//     empty final chunk after a full one (no v1 writer produces that).
package blobcrypt
