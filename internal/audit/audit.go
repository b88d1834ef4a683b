// Package audit is unibus's append-only, hash-chained log of admin and
// membership actions: who (the actor's key), what, when, through which
// path, and the digest of the signed request that asked for it.
//
// Each entry carries the SHA-256 of the entry before it, so editing,
// reordering or removing an entry in the stored log breaks the chain at
// that point, and [Verify] reports where. Truncating the newest entries
// leaves a shorter valid chain: an operator who needs to detect that keeps
// the head (the last seq and hash that `membershipd audit verify` prints)
// somewhere the bus cannot write, and passes it back with --expect-head.
//
// The log is stored by the control-plane store (a table in SQLite, a
// JetStream stream in kv mode); this package defines the entry, its byte
// encoding and the chain rules, which both backends share. The encoding is
// specified in docs/FORMATS.md and pinned by testdata/chain.jsonl.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Actions.
const (
	ActionUserAdd        = "user.add"
	ActionUserRevoke     = "user.revoke"
	ActionUserKEMKey     = "user.kem_key"
	ActionRoomCreate     = "room.create"
	ActionMemberAdd      = "member.add"
	ActionMemberRemove   = "member.remove"
	ActionRoomRotate     = "room.rotate"
	ActionBootstrapAdmin = "bootstrap.admin"
	ActionMigrate        = "migrate.import"
	// ActionFailed follows an entry whose change the store then refused:
	// Refers is that entry's seq and Detail the reason. Entries are written
	// before the change they describe (so no change is ever unaudited);
	// this is how the log says one did not happen.
	ActionFailed = "failed"
)

// Paths an action arrives by (Entry.Via).
const (
	ViaAPI       = "api"       // a signed HTTP request; Actor is its key
	ViaCLI       = "cli"       // membershipd user … on the host
	ViaBootstrap = "bootstrap" // membershipd's first start
	ViaMigrate   = "migrate"   // membershipd migrate-to-kv
)

// ActorLocal is the actor of a change made by opening the SQLite file
// directly on the host (membershipd user … --db): whoever could open it.
const ActorLocal = "local"

// Record is what a caller says about one action. The store adds the chain.
type Record struct {
	Time time.Time `json:"time"`
	// Actor is the sign-pub (64 hex) of whoever acted: the signer of the
	// request, or on the host the internal identity (kv) or "local" (a
	// SQLite file opened directly: whoever can open it).
	Actor  string `json:"actor"`
	Via    string `json:"via"`
	Action string `json:"action"`
	// Room and Subject are what was acted on (a room id, a user's sign-pub).
	Room    string `json:"room,omitempty"`
	Subject string `json:"subject,omitempty"`
	// Detail is a short, secret-free description (role, epoch, reason).
	Detail string `json:"detail,omitempty"`
	// Request is the hex SHA-256 of the RFC 9421 signature base of the
	// signed request (what the actor's key signed), for ViaAPI.
	Request string `json:"request,omitempty"`
	// Refers is, for ActionFailed, the seq of the entry that did not apply.
	Refers uint64 `json:"refers,omitempty"`
}

// Entry is one link of the chain.
type Entry struct {
	Seq uint64 `json:"seq"`
	Record
	// Prev is the hex SHA-256 of the previous entry's encoding; the first
	// entry's Prev is Genesis.
	Prev string `json:"prev"`
	// Hash is the hex SHA-256 of this entry's encoding with Hash empty.
	Hash string `json:"hash,omitempty"`
}

// Genesis is the Prev of the first entry.
var Genesis = strings.Repeat("0", 64)

// MaxEntryBytes bounds one encoded entry; longer ones are refused.
const MaxEntryBytes = 4096

// Errors.
var (
	ErrInvalid = errors.New("invalid audit entry")
	ErrBroken  = errors.New("audit chain broken")
)

// Next builds the entry that follows prev (nil for the first) from r.
func Next(prev *Entry, r Record) (Entry, error) {
	if err := r.check(); err != nil {
		return Entry{}, err
	}
	e := Entry{Seq: 1, Prev: Genesis, Record: r}
	e.Time = e.Time.UTC()
	if prev != nil {
		e.Seq, e.Prev = prev.Seq+1, prev.Hash
	}
	h, err := e.digest()
	if err != nil {
		return Entry{}, err
	}
	e.Hash = h
	return e, nil
}

func (r Record) check() error {
	switch {
	case r.Time.IsZero():
		return fmt.Errorf("%w: no time", ErrInvalid)
	case r.Actor == "":
		return fmt.Errorf("%w: no actor", ErrInvalid)
	case r.Via == "":
		return fmt.Errorf("%w: no via", ErrInvalid)
	case r.Action == "":
		return fmt.Errorf("%w: no action", ErrInvalid)
	}
	return nil
}

// digest is the hex SHA-256 of e's encoding without its hash.
func (e Entry) digest() (string, error) {
	e.Hash = ""
	b, err := json.Marshal(e)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Marshal is an entry's stored form: compact JSON, members in the order of
// the struct (seq, time, actor, via, action, room, subject, detail,
// request, refers, prev, hash), empty optional members left out.
func Marshal(e Entry) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(b) > MaxEntryBytes {
		return nil, fmt.Errorf("%w: %d bytes encoded, at most %d", ErrInvalid, len(b), MaxEntryBytes)
	}
	return b, nil
}

// Unmarshal parses a stored entry strictly (unknown members, trailing data
// and oversized input are errors). It does not check the hash: Verify does.
func Unmarshal(b []byte) (Entry, error) {
	if len(b) > MaxEntryBytes {
		return Entry{}, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalid, len(b), MaxEntryBytes)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var e Entry
	if err := d.Decode(&e); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return Entry{}, fmt.Errorf("%w: trailing data after the entry", ErrInvalid)
	}
	return e, nil
}

// Head is where a verified chain ends.
type Head struct {
	Seq  uint64
	Hash string
}

// Verify checks that entries form a chain: seqs consecutive from
// after.Seq+1, each Prev the hash of the one before (after.Hash for the
// first, Genesis when after is the zero Head), each Hash the digest of its
// entry. It returns the new head, or an error wrapping ErrBroken that
// names the first entry that does not hold.
func Verify(after Head, entries []Entry) (Head, error) {
	h := after
	if h.Seq == 0 {
		h.Hash = Genesis
	}
	for _, e := range entries {
		if e.Seq != h.Seq+1 {
			return h, fmt.Errorf("%w at seq %d: expected seq %d (an entry is missing or out of order)", ErrBroken, e.Seq, h.Seq+1)
		}
		if e.Prev != h.Hash {
			return h, fmt.Errorf("%w at seq %d: prev does not match the hash of entry %d", ErrBroken, e.Seq, h.Seq)
		}
		if err := e.check(); err != nil {
			return h, fmt.Errorf("%w at seq %d: %w", ErrBroken, e.Seq, err)
		}
		want, err := e.digest()
		if err != nil {
			return h, fmt.Errorf("%w at seq %d: %w", ErrBroken, e.Seq, err)
		}
		if e.Hash != want {
			return h, fmt.Errorf("%w at seq %d: the entry's content does not match its hash (it was edited)", ErrBroken, e.Seq)
		}
		h = Head{Seq: e.Seq, Hash: e.Hash}
	}
	return h, nil
}
