// Package store defines unibus's control-plane state: users, rooms, members,
// sealed room keys, epochs and anti-replay nonces, behind one interface with
// two implementations (store/sqlite and store/kvstore).
//
// The store holds only public keys, ciphertext and membership. It never sees a
// room key in the clear. Every rule that must hold atomically under
// concurrency (a rotation covers every current member, a nonce is used once)
// is enforced here, not by callers, so that both backends enforce it the same
// way; the conformance suite in store/storetest checks each backend.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/unibus/unibus/internal/audit"
)

// Sentinel errors. Callers branch on them with errors.Is; the HTTP layer maps
// them to status codes in one place.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyRegistered  = errors.New("already registered")
	ErrHandleTaken        = errors.New("handle already taken")
	ErrRoomExists         = errors.New("room already exists")
	ErrAlreadyMember      = errors.New("already a member")
	ErrNotMember          = errors.New("not a member of the room")
	ErrReplay             = errors.New("nonce already used")
	ErrStaleEpoch         = errors.New("epoch is not the room's next epoch")
	ErrIncompleteRotation = errors.New("sealed keys must cover every current member exactly once")
	ErrRevoked            = errors.New("user is revoked")
	ErrUnavailable        = errors.New("store unavailable")
)

// Role is a user's global role.
type Role string

// Global roles.
const (
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
)

// Status is a user's status. Users are never deleted: revoking flips it.
type Status string

// User statuses.
const (
	StatusActive  Status = "active"
	StatusRevoked Status = "revoked"
)

// RoomRole is a member's role inside one room.
type RoomRole string

// Room roles.
const (
	RoomOwner  RoomRole = "owner"
	RoomMember RoomRole = "member"
)

// EpochReason says why an epoch was created; clients use it to decide whose
// seal they accept (see docs/FORMATS.md).
type EpochReason string

// Epoch reasons.
const (
	EpochCreate  EpochReason = "create"  // epoch 1, sealed by the creator
	EpochRotate  EpochReason = "rotate"  // an owner rotated
	EpochRemove  EpochReason = "remove"  // an owner removed a member and rotated
	EpochPending EpochReason = "pending" // a member resolved a rotation left pending by an admin removal
)

// User is a registered identity. SignPub (64 lowercase hex) is its id.
type User struct {
	SignPub   string
	Handle    string
	Role      Role
	Status    Status
	KEMPub    []byte // nil until the user publishes it
	KEMSig    []byte // the user's ed25519 signature binding KEMPub to SignPub
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Room is a room's record. ID is 32 lowercase hex characters.
type Room struct {
	ID              string
	Name            string
	CreatedBy       string
	CreatedAt       time.Time
	Epoch           uint64 // current epoch, starting at 1
	RotationPending bool   // set by an admin removal; cleared by the next rotation
	MaxAge          time.Duration
	MaxBytes        int64
	// Shared is true when the room's messages live in the deployment's
	// one shared stream (protocol 2), false when the room has a stream of
	// its own: a room created with a byte limit, and every room created
	// before protocol 2. The store keeps what CreateRoom was given; a
	// room stored before the field existed reads as false.
	Shared bool
}

// Member is one user's membership in one room.
type Member struct {
	Room    string
	SignPub string
	Role    RoomRole
	AddedBy string
	AddedAt time.Time
}

// SealedKey is a room key for one epoch sealed to one member, with the
// sealer's signature. The store keeps it opaque.
type SealedKey struct {
	Room   string
	Epoch  uint64
	Member string
	Sealer string
	Sealed []byte
	Sig    []byte
}

// Epoch records who created an epoch of a room and why.
type Epoch struct {
	Room      string
	Epoch     uint64
	CreatedBy string
	Reason    EpochReason
	CreatedAt time.Time
}

// Rotation moves a room to Epoch (which must be the current epoch + 1) with a
// sealed key for every current member — after a removal, every remaining one.
type Rotation struct {
	Room   string
	Epoch  uint64
	By     string
	Reason EpochReason
	Keys   []SealedKey
	At     time.Time
}

// Store is the control-plane state. Implementations are safe for concurrent
// use. Every method that takes a context may block on I/O. Reads see every
// write that returned before them (read-your-writes): a backend must not
// answer from a replica that is behind. A backend failure is wrapped in
// ErrUnavailable, which callers treat as a denial.
//
// A store may exist before it is open: the kv store opens in the
// background (a cold cluster has no quorum to open it on yet), and until
// then every method but Watch and Close fails with an error wrapping
// ErrUnavailable. The sqlite store opens before its constructor returns
// and has no such state.
type Store interface {
	// AddUser registers u. A sign-pub already present (whatever its status)
	// is ErrAlreadyRegistered and changes nothing; a handle in use is
	// ErrHandleTaken.
	AddUser(ctx context.Context, u User) error
	// GetUser returns the user with this sign-pub, or ErrNotFound.
	GetUser(ctx context.Context, signPub string) (User, error)
	// GetUserByHandle returns the user with this handle, or ErrNotFound.
	GetUserByHandle(ctx context.Context, handle string) (User, error)
	// ListUsers returns every user, revoked ones included, ordered by handle.
	ListUsers(ctx context.Context) ([]User, error)
	// RevokeUser flips the user's status to revoked and returns the updated
	// record. Revoking a revoked user is not an error. Unknown: ErrNotFound.
	RevokeUser(ctx context.Context, signPub string, at time.Time) (User, error)
	// SetKEMKey stores the user's KEM public key and binding signature
	// (replacing an earlier one). Unknown: ErrNotFound.
	SetKEMKey(ctx context.Context, signPub string, kemPub, sig []byte, at time.Time) error
	// CountActiveAdmins counts users with role admin and status active.
	CountActiveAdmins(ctx context.Context) (int, error)

	// CreateRoom atomically creates the room at epoch 1, its owner and the
	// owner's sealed key for epoch 1. An existing id is ErrRoomExists.
	CreateRoom(ctx context.Context, r Room, owner Member, key SealedKey) error
	// GetRoom returns the room, or ErrNotFound.
	GetRoom(ctx context.Context, id string) (Room, error)
	// ListRooms returns the rooms signPub is a member of, ordered by name.
	ListRooms(ctx context.Context, signPub string) ([]Room, error)
	// RoomIDs returns the ids of the rooms signPub is a member of; it is the
	// data-plane authenticator's fast path.
	RoomIDs(ctx context.Context, signPub string) ([]string, error)
	// ListMembers returns the room's current members, ordered by sign-pub.
	ListMembers(ctx context.Context, room string) ([]Member, error)
	// GetMember returns one membership, or ErrNotMember.
	GetMember(ctx context.Context, room, signPub string) (Member, error)
	// AddMember adds m with its sealed keys (which must all be for m.SignPub,
	// and must include the room's current epoch). Already a member:
	// ErrAlreadyMember. Missing current-epoch key: ErrIncompleteRotation.
	AddMember(ctx context.Context, m Member, keys []SealedKey) error
	// RemoveMember removes signPub from the room. With rot non-nil the room
	// moves to rot.Epoch in the same transaction and rot.Keys must cover
	// every remaining member exactly (ErrIncompleteRotation, ErrStaleEpoch).
	// With rot nil (an admin's incident-response removal) the room is marked
	// RotationPending instead. Not a member: ErrNotMember.
	RemoveMember(ctx context.Context, room, signPub string, rot *Rotation) error
	// Rotate moves the room to rot.Epoch (current+1, else ErrStaleEpoch) with
	// keys covering every current member exactly (else
	// ErrIncompleteRotation), and clears RotationPending.
	Rotate(ctx context.Context, rot Rotation) error
	// SealedKeys returns member's sealed keys for the room, by epoch: the
	// keys of committed writes, for epochs up to the room's current one
	// (a removed member's keys for the epochs it held included). It reads
	// the room's whole history: a client that needs one epoch's key uses
	// SealedKey.
	SealedKeys(ctx context.Context, room, member string) ([]SealedKey, error)
	// SealedKey returns member's sealed key for one epoch of the room,
	// under the same rules as SealedKeys. An unknown room, an epoch above
	// the room's current one, or no such key is ErrNotFound.
	SealedKey(ctx context.Context, room, member string, epoch uint64) (SealedKey, error)
	// Epochs returns the room's epochs in order. It reads the room's whole
	// history: a reader that needs one epoch uses Epoch.
	Epochs(ctx context.Context, room string) ([]Epoch, error)
	// Epoch returns one epoch's record. An unknown room, or an epoch that
	// is 0 or above the room's current one (whatever an interrupted write
	// left behind), is ErrNotFound.
	Epoch(ctx context.Context, room string, epoch uint64) (Epoch, error)

	// DeploymentID returns the deployment's id (see NewDeploymentID): made
	// at random the first time any node or process asks for it, the same
	// ever after for every handle on the same state. Concurrent first
	// calls agree: the id is created atomically if absent.
	DeploymentID(ctx context.Context) (string, error)

	// UseNonce records (keyID, nonce) until expires. If the pair is already
	// recorded and not expired it returns ErrReplay. The check and the
	// record are one atomic operation. Any other failure is an error that
	// callers must treat as a denial (fail closed).
	UseNonce(ctx context.Context, keyID, nonce string, now, expires time.Time) error

	AuditLog

	// Watch calls fn with a Change for every write committed from the
	// moment Watch returns until ctx ends or the store is closed: a user
	// added, revoked or with a new KEM key; a room created, or whose
	// members, epoch or rotation-pending flag changed. Nonces and audit
	// entries are not reported. A Change may name something that did not
	// change in the end; a committed change is never left out.
	//
	// fn is never called concurrently with itself (nor with another
	// watcher's fn of the same store), and receives the changes to one
	// user or one room in the order they were committed. It must return
	// promptly and must not write to the store; reading is fine.
	//
	// What each backend reports, and when:
	//   - kv: every write, by any node or admin tool, from its watch of
	//     the users and members buckets: shortly after the write
	//     returned, with Own false. On a store that is not open yet,
	//     Watch returns at once and the watch is established before the
	//     store opens, so nothing it can be read for is missed.
	//   - sqlite: its own writes synchronously, before the write method
	//     returns, with Own true; commits by other connections to the
	//     same file (another process, such as 'membershipd user revoke
	//     --db') as ChangeAll, found by polling PRAGMA data_version, so
	//     within the store's poll interval.
	//
	// Watch returns an error wrapping ErrUnavailable when the watch
	// cannot be established.
	Watch(ctx context.Context, fn func(Change)) error

	// ChangeVersion is the read path's freshness check, for a consumer
	// that also acts on Watch: a value cached while ChangeVersion returned
	// v is current as long as ChangeVersion still returns v, except for
	// changes Watch reports. It never returns 0. On an error the caller
	// must read the store.
	//   - kv: constant while the store's watch runs (Watch reports every
	//     write from every node, so there is nothing else to detect); an
	//     error when no watch runs (Watch was never called, or its watch
	//     ended).
	//   - sqlite: moves on every commit to the file by anyone, so that a
	//     change by another process, which Watch reports only at its next
	//     poll, is seen at once. It costs one PRAGMA on a connection of
	//     its own.
	ChangeVersion(ctx context.Context) (uint64, error)

	// Close releases the store and stops what it runs in the background
	// (an open in progress, watches). Methods called after Close fail.
	Close() error
}

// AuditLog is the append-only, hash-chained record of admin and membership
// actions (package audit). Entries are never changed or deleted through
// any interface; both backends also refuse it at the storage level (SQLite
// triggers; a JetStream stream with deletes and purges denied).
type AuditLog interface {
	// AppendAudit chains r after the newest entry and stores it durably
	// (on a quorum, in kv mode) before it returns. Concurrent appends are
	// serialized: every entry gets the next seq. A failure is an error
	// wrapping ErrUnavailable; callers must not make the change the entry
	// describes without it.
	AppendAudit(ctx context.Context, r audit.Record) (audit.Entry, error)
	// AuditEntries returns at most limit entries with seq > after, in seq
	// order, as stored (they are not verified: audit.Verify does that).
	AuditEntries(ctx context.Context, after uint64, limit int) ([]audit.Entry, error)
}

// UsageKind names what a usage ledger counts.
type UsageKind string

// Usage kinds.
const (
	// UsageBlobBytes are the ciphertext bytes of the blobs a user uploaded
	// (blobs are never deleted: they count for ever).
	UsageBlobBytes UsageKind = "blob_bytes"
	// UsageMsgBytes are the bytes of the room messages a user sent, each
	// counted until its room's age limit removes it.
	UsageMsgBytes UsageKind = "msg_bytes"
	// UsageRooms counts the rooms a user created, one each, for ever
	// (rooms are never deleted; leaving one does not give it back).
	UsageRooms UsageKind = "rooms"
	// UsageChanges counts a user's signed changes (requests that may
	// write the store and the audit log), each until the end of its UTC
	// day: a daily budget.
	UsageChanges UsageKind = "changes"
)

// Ledger counts what each user has stored, for the per-user quotas. It is
// kept beside the control-plane state (a table in SQLite, the
// UNIBUS_usage bucket in kv mode) and counts in days: bytes that lapse at
// a time are held in the bucket of the day that time falls in (UTC, see
// UsageDay) and stop counting when that day is over, so a message counts
// at most a day longer than it is kept.
type Ledger interface {
	// AddUsage adds n bytes of kind to user's ledger, counted until until
	// (the zero time: for ever). It also drops the user's days that have
	// lapsed at now.
	AddUsage(ctx context.Context, user string, kind UsageKind, n int64, until, now time.Time) error
	// Usage returns the bytes of kind of user's that count at now.
	Usage(ctx context.Context, user string, kind UsageKind, now time.Time) (int64, error)
}

// UsageDay is the ledger's day of bytes that lapse at until: the number of
// the first UTC day that begins at or after it, counted from the Unix
// epoch; 0 (the zero time) is "never".
func UsageDay(until time.Time) int64 {
	if until.IsZero() {
		return 0
	}
	return (max(until.Unix(), 0) + 86399) / 86400
}

// UsageCounts reports whether the bytes of day count at now.
func UsageCounts(day int64, now time.Time) bool {
	return day == 0 || now.Unix() < day*86400
}
