// Package wire holds the JSON bodies of the unibus control-plane API
// (/v1/...). The server (package api) and the client SDK both import it, so
// the two can never disagree on a field name. Byte fields travel as standard
// base64 (encoding/json's []byte encoding); ids and sign-pubs as lowercase hex.
package wire

import "time"

// Error is every error body: {"error":{"code":"…","message":"…"}}.
type Error struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody is the inside of Error.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes. The HTTP status says the class; the code says which.
const (
	CodeBadRequest        = "bad_request"
	CodeUnknownField      = "unknown_field"
	CodeBadJSON           = "bad_json"
	CodeTooLarge          = "too_large"
	CodeUnauthorized      = "unauthorized"
	CodeStaleSignature    = "stale_signature"
	CodeBadSignature      = "bad_signature"
	CodeBadDigest         = "bad_digest"
	CodeUnknownKey        = "unknown_key"
	CodeForbidden         = "forbidden"
	CodeNotFound          = "not_found"
	CodeNotMember         = "not_member"
	CodeConflict          = "conflict"
	CodeReplay            = "replay"
	CodeAlreadyRegistered = "already_registered"
	CodeHandleTaken       = "handle_taken"
	CodeAlreadyMember     = "already_member"
	CodeNoKEMKey          = "no_kem_key"
	CodeStaleEpoch        = "stale_epoch"
	CodeIncompleteKeys    = "incomplete_keys"
	CodeUnavailable       = "unavailable"
	CodeWrongDeployment   = "wrong_deployment"
	CodeTooMany           = "too_many"
	CodeInternal          = "internal"
	// CodeRateLimited (429): the user sent more signed requests than its
	// rate allows; nothing was done. Retry after Retry-After seconds.
	CodeRateLimited = "rate_limited"
	// CodeOutcomeUnknown (503): a change the store did not confirm (a
	// timeout, a lost quorum): it may or may not have been applied. Read
	// the state back or retry; admin and membership changes are safe to
	// retry (a retry never applies one twice).
	CodeOutcomeUnknown = "outcome_unknown"
	// CodeDiskFull (507): the server's free disk space is below its
	// reserve; nothing was stored, and a retry after space is freed is safe.
	CodeDiskFull = "disk_full"
	// CodeQuotaExceeded (403 for rooms, 507 for bytes): the request would
	// take its user over a per-user quota (rooms created, blob bytes);
	// nothing was done. The message names the quota.
	CodeQuotaExceeded = "quota_exceeded"
)

// User is a user's public record.
type User struct {
	SignPub   string    `json:"sign_pub"`
	Handle    string    `json:"handle"`
	Role      string    `json:"role"`
	Status    string    `json:"status"`
	KEMPub    []byte    `json:"kem_pub,omitempty"`
	KEMSig    []byte    `json:"kem_sig,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// AddUserRequest is POST /v1/users (admin).
type AddUserRequest struct {
	Handle  string `json:"handle"`
	SignPub string `json:"sign_pub"`
	Role    string `json:"role"`
}

// KEMKeyRequest is PUT /v1/me/kem-key: the caller's KEM public key and its
// binding signature (identity.KEMBindingMessage).
type KEMKeyRequest struct {
	KEMPub []byte `json:"kem_pub"`
	Sig    []byte `json:"sig"`
}

// SealedKey is a room key sealed to one member (see docs/FORMATS.md).
type SealedKey struct {
	Room   string `json:"room"`
	Epoch  uint64 `json:"epoch"`
	Member string `json:"member"`
	Sealer string `json:"sealer"`
	Sealed []byte `json:"sealed"`
	Sig    []byte `json:"sig"`
}

// CreateRoomRequest is POST /v1/rooms. The client picks the room id (it is
// bound into the sealed key) and seals epoch 1 to itself.
type CreateRoomRequest struct {
	ID            string    `json:"id"`
	Name          string    `json:"name"`
	Key           SealedKey `json:"key"`
	MaxAgeSeconds int64     `json:"max_age_seconds,omitempty"`
	MaxBytes      int64     `json:"max_bytes,omitempty"`
}

// Room is a room's record.
type Room struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	CreatedBy       string    `json:"created_by"`
	CreatedAt       time.Time `json:"created_at"`
	Epoch           uint64    `json:"epoch"`
	RotationPending bool      `json:"rotation_pending"`
	MaxAgeSeconds   int64     `json:"max_age_seconds"`
	MaxBytes        int64     `json:"max_bytes"`
	// Shared is true when the room's messages are in the shared stream;
	// false for a room with a stream of its own (a byte-limited room, or
	// one created before protocol 2).
	Shared bool `json:"shared"`
}

// Member is a room member with the public keys needed to seal to it.
type Member struct {
	SignPub string `json:"sign_pub"`
	Handle  string `json:"handle"`
	Role    string `json:"role"`
	Status  string `json:"status"`
	KEMPub  []byte `json:"kem_pub,omitempty"`
	KEMSig  []byte `json:"kem_sig,omitempty"`
}

// Epoch says who created an epoch and why.
type Epoch struct {
	Epoch     uint64    `json:"epoch"`
	CreatedBy string    `json:"created_by"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
}

// RoomInfo is GET /v1/rooms/{room}. Epochs holds the current epoch only:
// the record of any other comes with its key (GET .../keys?epoch=N).
type RoomInfo struct {
	Room    Room     `json:"room"`
	Members []Member `json:"members"`
	Epochs  []Epoch  `json:"epochs"`
}

// RoomList is GET /v1/rooms.
type RoomList struct {
	Rooms []Room `json:"rooms"`
}

// UserList is GET /v1/users.
type UserList struct {
	Users []User `json:"users"`
}

// AddMemberRequest is POST /v1/rooms/{room}/members (owner): the new
// member and its sealed keys, which must include the current epoch.
type AddMemberRequest struct {
	Member string      `json:"member"`
	Role   string      `json:"role"`
	Keys   []SealedKey `json:"keys"`
}

// RotateRequest is POST /v1/rooms/{room}/rotate, and the body of DELETE
// /v1/rooms/{room}/members/{user}: the next epoch sealed to every (remaining)
// member. An admin's incident-response removal sends an empty body.
type RotateRequest struct {
	Epoch uint64      `json:"epoch"`
	Keys  []SealedKey `json:"keys"`
}

// Keys is GET /v1/rooms/{room}/keys[?epoch=N]: the caller's sealed key
// for one epoch (the current one when N is absent), with that epoch's
// record, so a client opens only the epochs it needs however many
// rotations the room has had. Epoch and RotationPending are the room's
// current state.
type Keys struct {
	Room            string      `json:"room"`
	Epoch           uint64      `json:"epoch"`
	RotationPending bool        `json:"rotation_pending"`
	Keys            []SealedKey `json:"keys"`
	Epochs          []Epoch     `json:"epochs"`
}

// Health is GET /healthz.
type Health struct {
	Status  string  `json:"status"`
	Node    string  `json:"node"`
	Version string  `json:"version"`
	Posture Posture `json:"posture"`
	Error   string  `json:"error,omitempty"`
	// Reason is why the node is not ok, for machines: one of the
	// Health* reasons ("" when ok).
	Reason string `json:"reason,omitempty"`
	// DiskFree is the least free space, in bytes, over the file systems
	// that hold the node's state (-1 when it cannot be read).
	DiskFree int64 `json:"disk_free"`
	// Deployment is the deployment's id: every request signature carries
	// DeploymentTag(Deployment) (empty while the store is not open).
	Deployment string `json:"deployment,omitempty"`
	// Protocol is the data-plane protocol the server speaks ("2").
	Protocol string `json:"protocol,omitempty"`
}

// Reasons a node is not ok (Health.Reason). A node answers 503 to
// /healthz with one of them; the first that applies is given.
const (
	// HealthNoQuorum: JetStream has no meta leader or quorum.
	HealthNoQuorum = "no_quorum"
	// HealthStoreUnreadable: the control-plane store cannot be read (or is
	// not open yet).
	HealthStoreUnreadable = "store_unreadable"
	// HealthStoreUnwritable: the control-plane store cannot be written, so
	// no signed request can succeed (each records its nonce).
	HealthStoreUnwritable = "store_unwritable"
	// HealthDiskLow: a file system that holds the node's state has less
	// free space than the reserve: new data (messages, blobs) is refused.
	HealthDiskLow = "disk_low"
	// HealthJetStreamOff: JetStream is not enabled.
	HealthJetStreamOff = "jetstream_disabled"
	// HealthStarting: the node is still setting up the data plane.
	HealthStarting = "starting"
)

// HealthReasons lists every Health* reason.
var HealthReasons = []string{HealthNoQuorum, HealthStoreUnreadable, HealthStoreUnwritable, HealthDiskLow, HealthJetStreamOff, HealthStarting}

// Protocol is the protocol this package describes.
const Protocol = "2"

// DeploymentTag is the tag parameter every control-plane request
// signature carries (RFC 9421 §2.3): it binds the request to one
// deployment, so that a request signed for one is refused by another
// where the same key is registered.
func DeploymentTag(deployment string) string { return "unibus/" + Protocol + "/" + deployment }

// Posture is what a monitor checks on every node.
type Posture struct {
	BusAuth    string `json:"bus_auth"`
	ACL        bool   `json:"acl"`
	TLS        bool   `json:"tls"`
	RouteTLS   bool   `json:"route_tls"`
	Cluster    bool   `json:"cluster"`
	Store      string `json:"store"`
	KVReplicas int    `json:"kv_replicas"`
	JSSync     string `json:"js_sync"`
	// MetaLeader is the JetStream meta-group leader ("" without quorum);
	// Peers the meta group's size (the nodes this node knows of).
	MetaLeader string `json:"meta_leader"`
	Peers      int    `json:"peers"`
	// DiskReserve is the free space, in bytes, below which the node
	// refuses new data and reports HealthDiskLow (0: no reserve).
	DiskReserve int64 `json:"disk_reserve"`
}

// Blob is a stored blob's metadata (PUT and GET .../blobs/{id}/info).
type Blob struct {
	Room      string    `json:"room"`
	ID        string    `json:"id"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
}

// BlobAnnouncement is the plaintext of a room message that announces a
// blob: everything a receiver needs to fetch and decrypt it. It travels
// only inside an encrypted room message.
type BlobAnnouncement struct {
	Type        string `json:"type"` // "unibus.blob"
	ID          string `json:"id"`
	Key         []byte `json:"key"`
	Name        string `json:"name,omitempty"`
	Size        int64  `json:"size"` // plaintext size
	ContentType string `json:"content_type,omitempty"`
}
