package scrub

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/internal/natsnode"
)

var updateBlock = flag.Bool("update-block", false, "rewrite testdata/verify/ from a real server's block")

// The fixture's stream: MaxBytes small enough that the server picks its
// smallest block size, so the messages fill more than one block and a
// delete in the first block leaves a tombstone in the last.
const (
	fixtureStream   = "ORDERS"
	fixtureMaxBytes = 120_000
	fixturePublish  = 40 // messages published before the deletes
	fixtureDeleted  = 3  // deleted: a tombstone in the last block
	fixtureErased   = 38 // securely deleted: erased in place
	payloadSize     = 1000
)

// payload is message seq's body: a marker the tests find in the block
// files, padded.
func payload(seq uint64) []byte {
	p := fmt.Appendf(nil, "payload-%04d-", seq)
	return append(p, bytes.Repeat([]byte{'x'}, payloadSize-len(p))...)
}

// verifyFixture is a real nats-server with JetStream on a store in a temp
// dir, holding one file-storage stream in the global account: messages
// with and without headers, a deleted one and an erased one.
type verifyFixture struct {
	t        *testing.T
	dir      string // the StoreDir given to the server
	storeDir string // the JetStream store dir the server reports
	account  string
	opts     server.Options
	srv      *server.Server
	stop     func()
	js       jetstream.JetStream
}

func newVerifyFixture(t *testing.T, cfg jetstream.StreamConfig, opts server.Options) *verifyFixture {
	t.Helper()
	f := &verifyFixture{t: t, dir: t.TempDir(), opts: opts}
	f.opts.Host, f.opts.Port, f.opts.JetStream, f.opts.StoreDir = "127.0.0.1", -1, true, f.dir
	f.opts.NoLog, f.opts.NoSigs = true, true
	f.start()
	t.Cleanup(f.shutdown)
	f.storeDir = f.srv.JetStreamConfig().StoreDir
	f.account = f.srv.GlobalAccount().Name

	ctx := testContext(t)
	cfg.Name, cfg.Subjects, cfg.Storage, cfg.MaxBytes = fixtureStream, []string{"orders.>"}, jetstream.FileStorage, fixtureMaxBytes
	s, err := f.js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= fixturePublish+1; seq++ {
		if seq == fixturePublish+1 {
			// The last record is a message, not the tombstone or erasure.
			if err := s.DeleteMsg(ctx, fixtureDeleted); err != nil {
				t.Fatal(err)
			}
			if err := s.SecureDeleteMsg(ctx, fixtureErased); err != nil {
				t.Fatal(err)
			}
		}
		m := &nats.Msg{Subject: fmt.Sprintf("orders.%d", seq), Data: payload(seq)}
		if seq%2 == 0 {
			m.Header = nats.Header{"X-Seq": {strconv.FormatUint(seq, 10)}}
		}
		if _, err := f.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// start starts the server on the fixture's store.
func (f *verifyFixture) start() {
	f.t.Helper()
	opts := f.opts // the server writes to its options
	srv, err := server.NewServer(&opts)
	if err != nil {
		f.t.Fatal(err)
	}
	started := make(chan struct{})
	go func() { defer close(started); srv.Start() }()
	f.srv = srv
	f.stop = func() { srv.Shutdown(); srv.WaitForShutdown(); <-started }
	if !srv.ReadyForConnections(10*time.Second) || !srv.JetStreamEnabled() {
		f.shutdown()
		f.t.Fatal("nats-server not ready with JetStream")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		f.shutdown()
		f.t.Fatal(err)
	}
	prev := f.stop
	f.stop = func() { nc.Close(); prev() }
	if f.js, err = jetstream.New(nc); err != nil {
		f.shutdown()
		f.t.Fatal(err)
	}
}

// shutdown stops the server; the store is flushed and closed.
func (f *verifyFixture) shutdown() {
	if f.stop != nil {
		f.stop()
		f.stop, f.srv = nil, nil
	}
}

func (f *verifyFixture) verify() (Damage, error) {
	return VerifyStream(testContext(f.t), f.storeDir, f.account, fixtureStream)
}

// blocks lists the stream's block files, in block order.
func (f *verifyFixture) blocks() []string {
	f.t.Helper()
	paths, err := filepath.Glob(filepath.Join(f.storeDir, f.account, "streams", fixtureStream, "msgs", "*.blk"))
	if err != nil || len(paths) == 0 {
		f.t.Fatalf("no block files (%v)", err)
	}
	index := func(p string) int {
		n, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(p), ".blk"))
		return n
	}
	slices.SortFunc(paths, func(a, b string) int { return index(a) - index(b) })
	return paths
}

// modify finds message seq's payload in the block files and calls change
// with the block file's bytes and the payload's offset in them.
func (f *verifyFixture) modify(seq uint64, change func(b []byte, at int) []byte) {
	f.t.Helper()
	for _, path := range f.blocks() {
		b, err := os.ReadFile(path)
		if err != nil {
			f.t.Fatal(err)
		}
		if at := bytes.Index(b, payload(seq)); at >= 0 {
			if err := os.WriteFile(path, change(b, at), 0o600); err != nil {
				f.t.Fatal(err)
			}
			return
		}
	}
	f.t.Fatalf("payload of message %d not in any block", seq)
}

func (f *verifyFixture) state() jetstream.StreamState {
	f.t.Helper()
	s, err := f.js.Stream(testContext(f.t), fixtureStream)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := s.Info(testContext(f.t))
	if err != nil {
		f.t.Fatal(err)
	}
	return info.State
}

// get fetches message seq from the server.
func (f *verifyFixture) get(seq uint64) error {
	s, err := f.js.Stream(testContext(f.t), fixtureStream)
	if err != nil {
		return err
	}
	m, err := s.GetMsg(testContext(f.t), seq)
	if err == nil && !bytes.Equal(m.Data, payload(seq)) {
		return fmt.Errorf("message %d served with other contents", seq)
	}
	return err
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantDamage(t *testing.T, d Damage, err error, records uint64, seqs ...uint64) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if d.Records != records || !slices.Equal(d.Seqs, seqs) || d.Blocks < 1 || d.Bytes <= 0 {
		t.Fatalf("got %+v, want %d damaged records, seqs %v, blocks and bytes read", d, records, seqs)
	}
}

// TestVerifyStreamLive: a healthy replica shows no damage, read while the
// server runs and while it appends.
func TestVerifyStreamLive(t *testing.T) {
	f := newVerifyFixture(t, jetstream.StreamConfig{}, server.Options{})

	// The StoreDir given to the server gets "jetstream" appended; under it
	// are the accounts' directories.
	if want := filepath.Join(f.dir, "jetstream"); f.storeDir != want {
		t.Fatalf("JetStream store dir %s, want %s", f.storeDir, want)
	}
	if n := len(f.blocks()); n < 2 {
		t.Fatalf("%d block files, want several", n)
	}
	d, err := f.verify()
	wantDamage(t, d, err, 0)
	if d.Blocks != len(f.blocks()) {
		t.Fatalf("read %d blocks, want %d", d.Blocks, len(f.blocks()))
	}

	// Verify over and over while another client appends to the newest
	// block (and the limit removes the oldest): a record caught
	// half-written, or a block gone, is not damage.
	ctx, cancel := context.WithCancel(testContext(t))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	appended := make(chan struct{})
	wg.Go(func() {
		defer close(appended)
		for seq := uint64(fixturePublish + 2); seq < 3000 && ctx.Err() == nil; seq++ {
			f.js.PublishAsync("orders.more", payload(seq)[:100+seq%900])
			if seq%64 == 0 {
				select {
				case <-f.js.PublishAsyncComplete():
				case <-ctx.Done():
				}
			}
		}
	})
	for verified := 1; ; verified++ {
		d, err := f.verify()
		wantDamage(t, d, err, 0)
		select {
		case <-appended:
			t.Logf("verified %d times while appending", verified)
			return
		default:
		}
	}
}

// TestVerifyStreamFlippedPayload: bits flipped in one message's body are
// one damaged record, and the server, restarted, no longer serves that
// message (but does its neighbours).
func TestVerifyStreamFlippedPayload(t *testing.T) {
	f := newVerifyFixture(t, jetstream.StreamConfig{}, server.Options{})
	before := f.state()
	f.shutdown()
	f.modify(20, func(b []byte, at int) []byte { b[at+500] ^= 0x11; return b })

	d, err := f.verify()
	wantDamage(t, d, err, 1, 20)

	f.start()
	if err := f.get(20); err == nil {
		t.Fatal("the server serves the damaged message")
	} else {
		t.Logf("the server on getting the damaged message: %v", err)
	}
	for _, seq := range []uint64{19, 21} {
		if err := f.get(seq); err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
	}
	// The counts still agree with an undamaged replica's: only a checksum
	// verification sees this.
	if after := f.state(); after.Msgs != before.Msgs || after.LastSeq != before.LastSeq {
		t.Fatalf("state %+v after restart, was %+v", after, before)
	}
	d, err = f.verify()
	wantDamage(t, d, err, 1, 20)
}

// TestVerifyStreamFlippedChecksum: a bit flipped in a record's hash alone
// is one damaged record.
func TestVerifyStreamFlippedChecksum(t *testing.T) {
	f := newVerifyFixture(t, jetstream.StreamConfig{}, server.Options{})
	f.shutdown()
	f.modify(21, func(b []byte, at int) []byte { b[at+payloadSize+3] ^= 0x04; return b })
	d, err := f.verify()
	wantDamage(t, d, err, 1, 21)
}

// TestVerifyStreamTornTail: the newest block cut in its last record is not
// damage. The server, restarted, drops the torn record: the replica holds
// one message fewer (its last sequence is kept), which Check's count
// comparison sees.
func TestVerifyStreamTornTail(t *testing.T) {
	f := newVerifyFixture(t, jetstream.StreamConfig{}, server.Options{})
	before := f.state()
	f.shutdown()
	f.modify(fixturePublish+1, func(b []byte, at int) []byte {
		if end := at + payloadSize + recordHashSize; end != len(b) {
			t.Fatalf("the last message's record ends at %d of %d bytes", end, len(b))
		}
		return b[:at+payloadSize/2]
	})

	d, err := f.verify()
	wantDamage(t, d, err, 0)

	f.start()
	if after := f.state(); after.Msgs != before.Msgs-1 || after.LastSeq != before.LastSeq {
		t.Fatalf("after restart %d messages to seq %d, want %d to %d", after.Msgs, after.LastSeq, before.Msgs-1, before.LastSeq)
	}
	if err := f.get(fixturePublish + 1); err == nil {
		t.Fatal("the server serves the torn message")
	}
	d, err = f.verify()
	wantDamage(t, d, err, 0)
}

// TestVerifyStreamGarbageLength: a record whose length field is garbage is
// one damaged record, and the walk of its block stops there.
func TestVerifyStreamGarbageLength(t *testing.T) {
	f := newVerifyFixture(t, jetstream.StreamConfig{}, server.Options{})
	f.shutdown()
	f.modify(10, func(b []byte, at int) []byte {
		rec := bytes.LastIndex(b[:at], []byte("orders.10")) - msgHdrSize
		binary.LittleEndian.PutUint32(b[rec:], hbit|5) // shorter than its own header
		return b
	})
	d, err := f.verify()
	wantDamage(t, d, err, 1)
}

// TestVerifyStreamUnverifiable: compressed or encrypted blocks are
// ErrUnverifiable, not damage.
func TestVerifyStreamUnverifiable(t *testing.T) {
	s2 := jetstream.StreamConfig{Compression: jetstream.S2Compression}
	for name, tc := range map[string]struct {
		cfg        jetstream.StreamConfig
		opts       server.Options
		uncompress bool // switch compression off: the full blocks stay compressed
	}{
		"compressed":             {cfg: s2},
		"compression turned off": {cfg: s2, uncompress: true},
		"encrypted":              {opts: server.Options{JetStreamKey: "verify-test-key"}},
	} {
		t.Run(name, func(t *testing.T) {
			f := newVerifyFixture(t, tc.cfg, tc.opts)
			if tc.uncompress {
				s, err := f.js.Stream(testContext(t), fixtureStream)
				if err != nil {
					t.Fatal(err)
				}
				cfg := s.CachedInfo().Config
				cfg.Compression = jetstream.NoCompression
				if _, err := f.js.UpdateStream(testContext(t), cfg); err != nil {
					t.Fatal(err)
				}
			}
			f.shutdown()
			d, err := f.verify()
			if !errors.Is(err, ErrUnverifiable) {
				t.Fatalf("got %+v, %v; want ErrUnverifiable", d, err)
			}
			t.Log(err)
		})
	}
}

// TestVerifyStreamMissing: a stream this node holds no replica of, or a
// name that is not one, is an error, not damage.
func TestVerifyStreamMissing(t *testing.T) {
	f := newVerifyFixture(t, jetstream.StreamConfig{}, server.Options{})
	ctx := testContext(t)
	_, err := VerifyStream(ctx, f.storeDir, f.account, "NOPE")
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrUnverifiable) {
		t.Fatalf("missing stream: %v", err)
	}
	t.Logf("missing stream: %v", err)
	for _, name := range []string{"", "..", "../" + fixtureStream, fixtureStream + "/msgs"} {
		if _, err := VerifyStream(ctx, f.storeDir, f.account, name); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stream name %q: %v", name, err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := VerifyStream(cancelled, f.storeDir, f.account, fixtureStream); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// TestVerifyStreamReplicas: on unibus's own clustered nodes, each node
// verifies its replica of an R3 stream; bits flipped in one node's copy
// of a message are damage on that node only.
func TestVerifyStreamReplicas(t *testing.T) {
	c, _, _ := setup(t)
	storeDir := func(i int) string { return filepath.Join(c.dirs[i], "jetstream") }
	for i, n := range c.nodes {
		if got := n.Server().JetStreamConfig().StoreDir; got != storeDir(i) {
			t.Fatalf("%s: JetStream store dir %s, want %s", c.names[i], got, storeDir(i))
		}
		for acc, stream := range map[string]string{natsnode.ControlAccount: "CTL", natsnode.BusAccount: "BUS"} {
			d, err := VerifyStream(testContext(t), storeDir(i), acc, stream)
			wantDamage(t, d, err, 0)
		}
	}
	c.Stop(2)
	c.flipBits(2, natsnode.BusAccount, "BUS", recordHashSize+2) // in the last message's body
	for i := range c.nodes {
		d, err := VerifyStream(testContext(t), storeDir(i), natsnode.BusAccount, "BUS")
		if i == 2 {
			wantDamage(t, d, err, 1, msgs)
		} else {
			wantDamage(t, d, err, 0)
		}
	}
}

// vectorDir holds real block files, each named <stream>-<index>.blk: the
// name is the block's hash key.
const vectorDir = "testdata/verify"

func vectors(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(vectorDir, "*.blk"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no block vectors in %s (%v)", vectorDir, err)
	}
	v := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		v[strings.TrimSuffix(filepath.Base(p), ".blk")] = b
	}
	return v
}

// vectorHash is the record hash of the vector named key.
func vectorHash(t testing.TB, key string) hash.Hash64 {
	i := strings.LastIndexByte(key, '-')
	index, err := strconv.ParseUint(key[i+1:], 10, 32)
	if err != nil {
		t.Fatalf("vector %s: %v", key, err)
	}
	return blockHash(key[:i], uint32(index))
}

// TestVerifyBlockVectors: the real blocks verify clean, and every bit
// flipped in them is damage, but in the lengths the record's hash does not
// cover (see unhashed) when the record still frames.
func TestVerifyBlockVectors(t *testing.T) {
	if *updateBlock {
		writeVector(t)
	}
	for key, blk := range vectors(t) {
		h := vectorHash(t, key)
		if bad := verifyBlock(blk, h, false); len(bad) != 0 {
			t.Fatalf("%s: damaged records %v", key, bad)
		}
		unseen := unhashed(t, blk)
		// One bit of each byte, a different one from byte to byte, so that
		// each field has several of its bits flipped in eighth of the time
		// flipping every bit would take.
		for i := range blk {
			b := bytes.Clone(blk)
			b[i] ^= 1 << (i % 8)
			for _, newest := range []bool{false, true} {
				if len(verifyBlock(b, h, newest)) == 0 && !unseen[i] {
					t.Fatalf("%s: bit %d of byte %d flipped (newest %v): no damage seen", key, i%8, i, newest)
				}
			}
		}
	}
}

// writeVector replaces the vectors with the newest block of a fresh
// fixture: messages with and without headers, an erased record and
// tombstones.
func writeVector(t *testing.T) {
	f := newVerifyFixture(t, jetstream.StreamConfig{}, server.Options{})
	f.shutdown()
	blks := f.blocks()
	last := blks[len(blks)-1]
	b, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(vectorDir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(vectorDir, 0o755); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%s-%s", fixtureStream, filepath.Base(last))
	if err := os.WriteFile(filepath.Join(vectorDir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// unhashed marks the bytes of blk's length fields that the records' hash
// does not cover in effect: the headers length of a record with headers,
// and the subject length of one without (the hash runs over subject and
// message as one string, so moving the boundary between them changes
// nothing it sees). The server reads such a flip as a message with other
// headers or another subject.
func unhashed(t *testing.T, blk []byte) map[int]bool {
	le := binary.LittleEndian
	marks := map[int]bool{}
	var withHeaders, without bool
	for _, rec := range records(blk) {
		at, width := rec[0]+20, 2 // the subject length
		if le.Uint32(blk[rec[0]:])&hbit != 0 {
			at, width = rec[0]+msgHdrSize+int(le.Uint16(blk[rec[0]+20:])), 4 // the headers length
			withHeaders = true
		} else {
			without = true
		}
		for j := range width {
			marks[at+j] = true
		}
	}
	if !withHeaders || !without {
		t.Fatal("the vector lacks a record with headers or one without")
	}
	return marks
}

// records lists where each record of blk, a sound block, starts and ends.
func records(blk []byte) [][2]int {
	var recs [][2]int
	for i := 0; i < len(blk); {
		end := i + int(binary.LittleEndian.Uint32(blk[i:])&^hbit)
		recs = append(recs, [2]int{i, end})
		i = end
	}
	return recs
}

// FuzzVerifyBlock: no input panics the walk, it reports at most one
// damaged record per record's worth of bytes, and newest only ever
// forgives. The seeds are runs of two records of the vectors (the whole
// blocks make the fuzzer spend its time minimizing), hashed with the
// first vector's hash.
func FuzzVerifyBlock(f *testing.F) {
	vecs := vectors(f)
	keys := slices.Sorted(maps.Keys(vecs))
	for _, key := range keys {
		blk := vecs[key]
		recs := records(blk)
		for i := range len(recs) - 1 {
			f.Add(blk[recs[i][0]:recs[i+1][1]])
		}
		last := blk[recs[len(recs)-1][0]:]
		f.Add(last[:len(last)-recordHashSize])
		f.Add(append(bytes.Clone(last), make([]byte, 64)...))
	}
	f.Add([]byte{})
	f.Add([]byte("cmp\x01\x80\x80"))
	h := vectorHash(f, keys[0])
	f.Fuzz(func(t *testing.T, blk []byte) {
		older, newest := verifyBlock(blk, h, false), verifyBlock(blk, h, true)
		if most := len(blk)/(msgHdrSize+recordHashSize) + 1; len(older) > most {
			t.Fatalf("%d damaged records in %d bytes", len(older), len(blk))
		}
		if len(newest) > len(older) {
			t.Fatalf("newest block: %d damaged records, as an older block %d", len(newest), len(older))
		}
	})
}
