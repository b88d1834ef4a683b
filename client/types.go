package client

import (
	"time"

	"github.com/unibus/unibus/wire"
)

// The SDK's own types for what the control plane answers. They are
// converted from the wire bodies (package wire) here, at the boundary, so
// that a program depends on the SDK and not on the JSON of the API.

// Role is a user's role on the whole deployment.
type Role string

// User roles.
const (
	RoleAdmin  Role = "admin"  // registers and revokes users, removes members from any room
	RoleMember Role = "member" // uses the rooms it is a member of
)

// RoomRole is a member's role in one room.
type RoomRole string

// Room roles.
const (
	RoomOwner  RoomRole = "owner"  // adds and removes members, rotates the room key
	RoomMember RoomRole = "member" // reads and sends
)

// Status is a user's status. Users are never deleted: revoking one flips
// its status, and the server then denies it on both planes.
type Status string

// User statuses.
const (
	StatusActive  Status = "active"
	StatusRevoked Status = "revoked"
)

// EpochReason says why a room key epoch was created.
type EpochReason string

// Epoch reasons.
const (
	EpochCreate  EpochReason = "create"  // epoch 1, made by the room's creator
	EpochRotate  EpochReason = "rotate"  // an owner rotated the key
	EpochRemove  EpochReason = "remove"  // an owner removed a member and rotated
	EpochPending EpochReason = "pending" // a member resolved a rotation an admin's removal left pending
)

// User is a user's public record as the server gives it. Nothing in it is
// checked against the pinned keys; Whois does that.
type User struct {
	// SignPub is the user's id: its ed25519 public key, 64 lowercase hex.
	SignPub string
	// Handle is the user's unique name.
	Handle string
	Role   Role
	Status Status
	// KEMPub is the user's published KEM public key and KEMSig the
	// signature that binds it to SignPub; both are nil until the user
	// registers (Dial registers the caller's own key).
	KEMPub, KEMSig []byte
	// CreatedAt is when the user was registered.
	CreatedAt time.Time
}

// Room is a room's record.
type Room struct {
	// ID is the room's id, 32 lowercase hex; names need not be unique.
	ID   string
	Name string
	// CreatedBy is the sign-pub of the room's creator.
	CreatedBy string
	CreatedAt time.Time
	// Epoch is the current key epoch, from 1.
	Epoch uint64
	// RotationPending is set when an admin removed a member without
	// rotating: the next send or member add rotates first.
	RotationPending bool
	// MaxAge and MaxBytes bound how long and how much of the room's
	// history the server keeps; 0 is no limit.
	MaxAge   time.Duration
	MaxBytes int64
	// Shared is true when the room's messages are in the server's shared
	// stream; false for a room with a stream of its own (a room with a byte
	// limit, or one created before protocol 2).
	Shared bool
}

// Member is a room member, with the public keys the server gives for it.
type Member struct {
	// SignPub is the member's id (64 lowercase hex), Handle its name.
	SignPub string
	Handle  string
	Role    RoomRole
	Status  Status
	// KEMPub and KEMSig are as in User.
	KEMPub, KEMSig []byte
}

// Epoch says who created a room key epoch and why.
type Epoch struct {
	Epoch uint64
	// CreatedBy is the sign-pub of the member who made the epoch's key.
	CreatedBy string
	Reason    EpochReason
	CreatedAt time.Time
}

// RoomInfo is a room with its current members and its key epochs.
type RoomInfo struct {
	Room
	Members []Member
	Epochs  []Epoch // oldest first
}

// BlobAnnouncement is what a member needs to fetch and decrypt a blob. It
// travels only inside an encrypted room message: SendBlob sends it,
// ParseBlobAnnouncement reads it from a received message.
type BlobAnnouncement struct {
	// ID is the hex SHA-256 of the blob's ciphertext.
	ID string
	// Key is the blob's 32-byte key: whoever holds it can read the blob.
	Key []byte
	// Name and ContentType are the sender's description; the name is not
	// a safe path.
	Name        string
	ContentType string
	// Size is the plaintext size in bytes.
	Size int64
}

func userFromWire(u wire.User) User {
	return User{SignPub: u.SignPub, Handle: u.Handle, Role: Role(u.Role), Status: Status(u.Status),
		KEMPub: u.KEMPub, KEMSig: u.KEMSig, CreatedAt: u.CreatedAt}
}

func usersFromWire(us []wire.User) []User {
	if us == nil {
		return nil
	}
	out := make([]User, len(us))
	for i, u := range us {
		out[i] = userFromWire(u)
	}
	return out
}

func roomFromWire(r wire.Room) Room {
	return Room{ID: r.ID, Name: r.Name, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt, Epoch: r.Epoch,
		RotationPending: r.RotationPending, MaxAge: time.Duration(r.MaxAgeSeconds) * time.Second, MaxBytes: r.MaxBytes, Shared: r.Shared}
}

func roomsFromWire(rs []wire.Room) []Room {
	if rs == nil {
		return nil
	}
	out := make([]Room, len(rs))
	for i, r := range rs {
		out[i] = roomFromWire(r)
	}
	return out
}

func roomInfoFromWire(ri wire.RoomInfo) RoomInfo {
	out := RoomInfo{Room: roomFromWire(ri.Room)}
	if ri.Members != nil {
		out.Members = make([]Member, len(ri.Members))
		for i, m := range ri.Members {
			out.Members[i] = Member{SignPub: m.SignPub, Handle: m.Handle, Role: RoomRole(m.Role), Status: Status(m.Status),
				KEMPub: m.KEMPub, KEMSig: m.KEMSig}
		}
	}
	if ri.Epochs != nil {
		out.Epochs = make([]Epoch, len(ri.Epochs))
		for i, e := range ri.Epochs {
			out.Epochs[i] = Epoch{Epoch: e.Epoch, CreatedBy: e.CreatedBy, Reason: EpochReason(e.Reason), CreatedAt: e.CreatedAt}
		}
	}
	return out
}

func announcementFromWire(a wire.BlobAnnouncement) BlobAnnouncement {
	return BlobAnnouncement{ID: a.ID, Key: a.Key, Name: a.Name, ContentType: a.ContentType, Size: a.Size}
}

func (a BlobAnnouncement) toWire() wire.BlobAnnouncement {
	return wire.BlobAnnouncement{Type: blobType, ID: a.ID, Key: a.Key, Name: a.Name, Size: a.Size, ContentType: a.ContentType}
}
