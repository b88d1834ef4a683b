package scrub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/minio/highwayhash"
	"github.com/nats-io/nats-server/v2/server"
)

// ErrUnverifiable is returned (wrapped) by VerifyStream for a stream whose
// block files it cannot read: compressed, encrypted, or in a format it does
// not know. It says nothing about the replica's health.
var ErrUnverifiable = errors.New("block files of a format the scrub cannot verify; only the comparison of replica counts covers this stream")

// Damage is what verifying one replica's block files found.
type Damage struct {
	Records uint64   // records whose checksum or framing is bad
	Seqs    []uint64 // their sequence numbers where readable (at most 100 kept)
	Blocks  int      // block files read
	Bytes   int64    // bytes read
}

// maxDamagedSeqs bounds Damage.Seqs: a few are enough to name the damage
// in a report, and a wrecked block must not fill memory.
const maxDamagedSeqs = 100

// The record format of nats-server's file store (server/filestore.go),
// under the same names. A record is
//
//	rl(4) seq(8) ts(8) slen(2) subject [hlen(4) headers] message hash(8)
//
// little-endian, rl counting the whole record. The high bit of rl (hbit)
// says the headers are present; the high bits of seq say the record is
// erased (ebit) or a tombstone for a message of another block (tbit). The
// hash is HighwayHash-64 over seq, ts, and subject, headers and message
// run together; the lengths are not covered. A flipped rl or slen mostly
// shows as a hash taken over other bytes, but not a subject length of a
// record without headers (the boundary between subject and message moves
// where the hash cannot see it) or a headers length that still fits: the
// server serves those with another subject or other headers, and nothing
// here sees them either.
const (
	msgHdrSize     = 22
	recordHashSize = 8
	rlBadThresh    = 32 * 1024 * 1024 // larger rl is garbage, never a record
	hbit           = 1 << 31
	ebit           = 1 << 63
	tbit           = 1 << 62
)

// VerifyStream reads every block file of one stream's local replica under
// storeDir (the JetStream store directory as nats-server reports it: the
// dir that holds the account directories), verifying each record's
// checksum the way nats-server's file store does when it reads it
// (server/filestore.go: msgFromBufEx, rebuildStateLocked,
// hashKeyForBlock). It returns ErrUnverifiable (wrapped) for a stream
// whose blocks are compressed or encrypted or otherwise in a format it
// does not know, rather than reporting damage, and an error wrapping
// fs.ErrNotExist for a stream this node holds no replica of.
//
// Unlike the server, which stops at the first bad record of a block (and,
// when it rebuilds the block, truncates it there), it goes on past a
// record whose checksum fails, so Records counts the damaged records.
// Only a record whose length is garbage ends the walk of its block: it
// counts once, and what follows cannot be framed.
//
// A record cut short at the end of the newest block is not damage: the
// server may be appending it while we read, and a tail torn by a crash is
// dropped by the server when it restarts (the replica then holds one
// message fewer, which the count comparison of Check sees). A record
// whose length runs past the end but that is whole, ending the block or
// with one bit of its length flipped, is damage.
//
// It reads while the server runs. A block that shows damage is read a
// second time and the second reading counts, so a record the server was
// rewriting in place (a secure erase) is not mistaken for damage; the
// caller should still see damage twice, a moment apart, before repairing.
func VerifyStream(ctx context.Context, storeDir, account, stream string) (Damage, error) {
	fail := func(err error) (Damage, error) {
		return Damage{}, fmt.Errorf("verify stream %q of account %q: %w", stream, account, err)
	}
	for _, name := range []string{account, stream} {
		if name == "" || !filepath.IsLocal(name) || strings.ContainsAny(name, `/\`) {
			return fail(fmt.Errorf("%q is not an account or stream name", name))
		}
	}
	dir := filepath.Join(storeDir, account, "streams", stream)
	name, err := hashName(dir)
	if err != nil {
		return fail(err)
	}
	blocks, err := blockIndexes(filepath.Join(dir, "msgs"))
	if err != nil {
		return fail(err)
	}
	var d Damage
	for i, index := range blocks {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		path := filepath.Join(dir, "msgs", fmt.Sprintf("%d.blk", index))
		bad, n, err := verifyBlockFile(path, blockHash(name, index), i == len(blocks)-1)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed (emptied or purged) since we listed it
		}
		if err != nil {
			return fail(err)
		}
		d.Blocks++
		d.Bytes += n
		d.Records += uint64(len(bad))
		for _, seq := range bad {
			if seq != 0 && len(d.Seqs) < maxDamagedSeqs {
				d.Seqs = append(d.Seqs, seq)
			}
		}
	}
	return d, nil
}

// hashName reads the stream's metadata file in dir and returns the name
// its block hashes are keyed with, or ErrUnverifiable if its blocks are
// encrypted (the metadata is then encrypted too, and a key file sits
// beside it) or compressed.
func hashName(dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, server.JetStreamMetaFileKey)); err == nil {
		return "", fmt.Errorf("encrypted: %w", ErrUnverifiable)
	}
	b, err := os.ReadFile(filepath.Join(dir, server.JetStreamMetaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no replica of the stream in this store: %w", err)
	}
	if err != nil {
		return "", err
	}
	var meta struct {
		Name        string                  `json:"name"`
		Compression server.StoreCompression `json:"compression"`
	}
	if err := json.Unmarshal(b, &meta); err != nil || meta.Name == "" {
		return "", fmt.Errorf("%s is not a stream configuration: %w", server.JetStreamMetaFile, ErrUnverifiable)
	}
	if meta.Compression != server.NoCompression {
		return "", fmt.Errorf("compressed (%s): %w", meta.Compression, ErrUnverifiable)
	}
	return meta.Name, nil
}

// blockIndexes lists the indexes of the block files in dir, in order (the
// last is the block the server appends to). A missing dir is a stream
// with no blocks yet; a block key file means encrypted blocks.
func blockIndexes(dir string) ([]uint32, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var indexes []uint32
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".key") {
			return nil, fmt.Errorf("block key %s, blocks encrypted: %w", e.Name(), ErrUnverifiable)
		}
		num, ok := strings.CutSuffix(e.Name(), ".blk")
		if !ok {
			continue
		}
		if index, err := strconv.ParseUint(num, 10, 32); err == nil {
			indexes = append(indexes, uint32(index))
		}
	}
	slices.Sort(indexes)
	return indexes, nil
}

// blockHash is the record hash of block index of the stream with the given
// name, keyed as the server keys it (hashKeyForBlock).
func blockHash(name string, index uint32) hash.Hash64 {
	key := sha256.Sum256(fmt.Appendf(nil, "%s-%d", name, index))
	h, err := highwayhash.New64(key[:])
	if err != nil {
		panic(err) // only for a key that is not 32 bytes
	}
	return h
}

// verifyBlockFile reads and verifies one block file, a second time if the
// first reading shows damage, and returns verifyBlock's findings and the
// bytes read.
func verifyBlockFile(path string, h hash.Hash64, newest bool) (bad []uint64, n int64, err error) {
	for range 2 {
		buf, err := os.ReadFile(path)
		if err != nil {
			return nil, n, err
		}
		n += int64(len(buf))
		if isCompressed(buf) {
			return nil, n, fmt.Errorf("compressed block %s: %w", filepath.Base(path), ErrUnverifiable)
		}
		if bad = verifyBlock(buf, h, newest); len(bad) == 0 {
			break
		}
	}
	return bad, n, nil
}

// isCompressed reports whether buf starts with the header of a compressed
// block ("cmp", the algorithm, the original size): a stream whose
// compression was switched off keeps its compressed blocks.
func isCompressed(buf []byte) bool {
	return bytes.HasPrefix(buf, []byte{'c', 'm', 'p', byte(server.S2Compression)})
}

// verifyBlock walks the records of one block, hashing with the block's
// hash, and returns the sequence of each damaged record (0 where none can
// be read). See VerifyStream for what counts; newest says buf is the block
// the server appends to.
func verifyBlock(buf []byte, h hash.Hash64, newest bool) (bad []uint64) {
	le := binary.LittleEndian
	for len(buf) > 0 {
		if len(buf) < msgHdrSize {
			if !newest {
				bad = append(bad, 0)
			}
			return bad
		}
		rl := le.Uint32(buf) &^ hbit
		if rl > rlBadThresh || int(rl) < minRecordLen(buf) {
			return append(bad, 0) // garbage length: nothing after it can be framed
		}
		seq := le.Uint64(buf[4:]) &^ (ebit | tbit)
		if int(rl) > len(buf) {
			if !newest || misframed(buf, rl, h) {
				bad = append(bad, seq)
			}
			return bad
		}
		if !intact(buf[:rl], h) {
			bad = append(bad, seq)
		}
		buf = buf[rl:]
	}
	return bad
}

// minRecordLen is the least length of the record whose header starts rec
// (at least msgHdrSize bytes): header, subject, headers length if any,
// hash.
func minRecordLen(rec []byte) int {
	n := msgHdrSize + int(binary.LittleEndian.Uint16(rec[20:])) + recordHashSize
	if binary.LittleEndian.Uint32(rec)&hbit != 0 {
		n += 4
	}
	return n
}

// misframed reports whether rec, the rest of the newest block, whose
// length field rl runs past its end, is a whole record with a damaged
// length rather than one the server is still appending: whether it is
// intact read to its end, or to where rl with one bit restored ends (the
// record then not being the last).
func misframed(rec []byte, rl uint32, h hash.Hash64) bool {
	if intact(rec, h) {
		return true
	}
	for bit := range 31 {
		if n := rl ^ 1<<bit; n < rl && int(n) <= len(rec) && intact(rec[:n], h) {
			return true
		}
	}
	return false
}

// intact reports whether rec, read as one whole record whatever its length
// field says, is framed within itself and ends in the hash of its
// contents. The headers length, which the hash does not cover, must fit;
// the server fails to read a record whose headers do not.
func intact(rec []byte, h hash.Hash64) bool {
	if len(rec) < msgHdrSize || len(rec) < minRecordLen(rec) {
		return false
	}
	le := binary.LittleEndian
	subjEnd := msgHdrSize + int(le.Uint16(rec[20:]))
	body, end := subjEnd, len(rec)-recordHashSize
	if le.Uint32(rec)&hbit != 0 {
		body += 4
		if uint64(le.Uint32(rec[subjEnd:])) > uint64(end-body) {
			return false
		}
	}
	h.Reset()
	h.Write(rec[4:20])
	h.Write(rec[msgHdrSize:subjEnd])
	h.Write(rec[body:end])
	var sum [recordHashSize]byte
	return bytes.Equal(h.Sum(sum[:0]), rec[end:])
}
