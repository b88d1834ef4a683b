package scrub

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DefaultReverify is how long a verified block file is trusted while its
// size and modification time stay the same: damage that changes neither
// (bit rot) is found within this time.
const DefaultReverify = 24 * time.Hour

// Verifier verifies this node's own replicas' block files (VerifyStream)
// for the scrub's state answers, and remembers what each block held: a
// block is read again only when its size or modification time changed,
// when it stopped being the block the server appends to, or once its
// last reading is older than Reverify. So a state request reads the
// blocks written since the last one (and a restarted node, whose files
// may have been damaged while it was down, all of its blocks once), not
// the whole store each time.
type Verifier struct {
	dir      string
	reverify time.Duration
	now      func() time.Time

	mu      sync.Mutex
	streams map[[2]string]map[uint32]seenBlock // by account and stream, by block index
}

// seenBlock is what verifying one block file found.
type seenBlock struct {
	size   int64
	mod    time.Time
	newest bool
	read   time.Time
	bad    []uint64
}

// NewVerifier verifies the replicas under storeDir, the JetStream store
// directory that holds the account directories (server.JetStreamConfig's
// StoreDir). reverify <= 0 means DefaultReverify.
func NewVerifier(storeDir string, reverify time.Duration) *Verifier {
	if reverify <= 0 {
		reverify = DefaultReverify
	}
	return &Verifier{dir: storeDir, reverify: reverify, now: time.Now, streams: map[[2]string]map[uint32]seenBlock{}}
}

// Stream verifies the replica of one stream, reading only the blocks that
// need it, and returns the damage of the whole replica. Errors are
// VerifyStream's (ErrUnverifiable for blocks it cannot read, an error
// wrapping fs.ErrNotExist when this node holds no replica).
func (v *Verifier) Stream(ctx context.Context, account, stream string) (Damage, error) {
	fail := func(err error) (Damage, error) {
		return Damage{}, fmt.Errorf("verify stream %q of account %q: %w", stream, account, err)
	}
	for _, name := range []string{account, stream} {
		if name == "" || !filepath.IsLocal(name) || filepath.Base(name) != name {
			return fail(fmt.Errorf("%q is not an account or stream name", name))
		}
	}
	dir := filepath.Join(v.dir, account, "streams", stream)
	name, err := hashName(dir)
	if err != nil {
		return fail(err)
	}
	blocks, err := blockIndexes(filepath.Join(dir, "msgs"))
	if err != nil {
		return fail(err)
	}
	key := [2]string{account, stream}
	v.mu.Lock()
	before := v.streams[key]
	v.mu.Unlock()
	now := make(map[uint32]seenBlock, len(blocks))
	var d Damage
	for i, index := range blocks {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		path := filepath.Join(dir, "msgs", fmt.Sprintf("%d.blk", index))
		fi, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed (emptied or purged) since it was listed
		}
		if err != nil {
			return fail(err)
		}
		newest := i == len(blocks)-1
		seen, ok := before[index]
		if !ok || seen.size != fi.Size() || !seen.mod.Equal(fi.ModTime()) || seen.newest != newest || v.now().Sub(seen.read) >= v.reverify {
			bad, n, err := verifyBlockFile(path, blockHash(name, index), newest)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return fail(err)
			}
			d.Bytes += n
			seen = seenBlock{size: fi.Size(), mod: fi.ModTime(), newest: newest, read: v.now(), bad: bad}
		}
		now[index] = seen
		d.Blocks++
		d.Records += uint64(len(seen.bad))
		for _, seq := range seen.bad {
			if seq != 0 && len(d.Seqs) < maxDamagedSeqs {
				d.Seqs = append(d.Seqs, seq)
			}
		}
	}
	v.mu.Lock()
	v.streams[key] = now
	v.mu.Unlock()
	return d, nil
}

// Forget drops what was remembered of streams not in keep (streams
// deleted since), so the memory follows the store.
func (v *Verifier) Forget(keep map[[2]string]bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k := range v.streams {
		if !keep[k] {
			delete(v.streams, k)
		}
	}
}
