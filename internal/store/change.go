package store

// ChangeKind says what a Change is about.
type ChangeKind uint8

// Kinds of change.
const (
	// ChangeAll: anything may have changed. A consumer drops every cache
	// it keeps of the store. SQLite reports it when another process
	// committed to the file.
	ChangeAll ChangeKind = iota + 1
	// ChangeUser: the record of the user Change.User changed. The User*
	// fields say how.
	ChangeUser
	// ChangeRoom: the state of the room Change.Room changed: it was
	// created, or its members, its epoch or its rotation-pending flag
	// changed. Joined and Left name the users whose membership changed.
	ChangeRoom
)

// Change is what Store.Watch reports after a write is committed: enough
// for a consumer that caches what it read (the data-plane authorizer's
// grants; a relay's members, epochs and user statuses) to know what to
// read again. It names what may have changed, never the new values: a
// consumer reads those from the store.
type Change struct {
	Kind ChangeKind

	// User is the user's sign-pub (ChangeUser).
	User string
	// UserAdded: the user was registered (ChangeUser).
	UserAdded bool
	// StatusChanged: the user's status or role changed, or its record
	// went away, so what the user may do changed (ChangeUser).
	StatusChanged bool
	// KEMKeyChanged: the user published a KEM key (ChangeUser).
	KEMKeyChanged bool

	// Room is the room's id (ChangeRoom).
	Room string
	// Joined and Left are the sign-pubs of the users who became, or
	// stopped being, members of Room with this change (ChangeRoom). Both
	// are empty when only the epoch or the rotation-pending flag changed.
	Joined, Left []string

	// Own is set when the change was made through this Store value and
	// reported before the write method returned, so the writer has
	// already acted on its own write when it needed to. A backend that
	// learns of its own writes from its watch (kv) reports them with Own
	// false, as it does every other node's.
	Own bool
}
