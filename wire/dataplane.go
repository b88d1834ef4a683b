package wire

// The data plane's replies and the listener resource.
//
// A member publishes a message as a request on its ingress subject,
// unibus.in.<sender>.<room>.<topic>, with a reply subject under its own
// inbox (_INBOX_<sender>.…). membershipd's relay answers in JetStream's
// publish-acknowledgement format, so that any JetStream client library can
// publish through it: PubAck on success, or PubAck with Error set.

// PubAck is the relay's answer to a published message.
type PubAck struct {
	Stream    string      `json:"stream,omitempty"`
	Seq       uint64      `json:"seq,omitempty"`
	Duplicate bool        `json:"duplicate,omitempty"`
	Error     *RelayError `json:"error,omitempty"`
}

// RelayError is a refused or failed publish, in JetStream's API error form.
// Code is an HTTP-like class (400, 403, 409, 503); ErrCode says which.
type RelayError struct {
	Code        int    `json:"code"`
	ErrCode     uint16 `json:"err_code"`
	Description string `json:"description"`
}

// Relay error codes (ErrCode). They sit above JetStream's own codes (which
// the relay passes on unchanged when the stream refuses a message).
const (
	// RelayBadSubject: the subject is not unibus.in.<sender>.<room>.<topic>
	// with a valid room id and topic. Code 400.
	RelayBadSubject uint16 = 60001
	// RelayBadEnvelope: a header is missing or malformed, the sender header
	// is not the publisher, or the version is not this protocol's. Code 400.
	RelayBadEnvelope uint16 = 60002
	// RelayNotMember: the sender is not a member of the room (or the room
	// does not exist). Code 403.
	RelayNotMember uint16 = 60003
	// RelayRevoked: the sender is revoked or unknown. Code 403.
	RelayRevoked uint16 = 60004
	// RelayStaleEpoch: the message is sealed for an epoch other than the
	// room's current one (after a rotation). The sender fetches the room
	// again and seals anew. Code 409.
	RelayStaleEpoch uint16 = 60005
	// RelayClockSkew: the envelope's send time is too far from the relay's
	// clock. Code 400.
	RelayClockSkew uint16 = 60006
	// RelayUnavailable: the control plane cannot be read, or the stream
	// cannot be written; retry with the same message id. Code 503.
	RelayUnavailable uint16 = 60007
	// RelayOldProtocol: the envelope is of an older protocol version that
	// this server no longer accepts. Code 400.
	RelayOldProtocol uint16 = 60008
	// RelayDiskFull: the server's free disk space is below its reserve;
	// the message was not stored (a retry after space is freed is safe).
	// Code 507.
	RelayDiskFull uint16 = 60009
	// RelayQuotaExceeded: the sender's room messages still kept have
	// reached its per-user quota; the message was not stored. It succeeds
	// again once older messages expire or the operator raises the quota.
	// Code 507.
	RelayQuotaExceeded uint16 = 60010
)

// HdrListenerEnded is the header of the message membershipd sends, with no
// body, on a listener's deliver subject after deleting it because its
// member left the room or was revoked: a hint to ask for a new listener
// now (which is refused) rather than after three missed heartbeats.
const HdrListenerEnded = "Unibus-Listener-Ended"

// ListenRequest is POST /v1/rooms/{room}/listeners: make a consumer of the
// room's messages that delivers to the caller.
type ListenRequest struct {
	// Topic filters to one topic (subject tokens; may use "*" and end in
	// ">"); empty means every topic.
	Topic string `json:"topic,omitempty"`
	// Deliver is where the consumer starts: "new" (the default: messages
	// stored from now on), "all" (the room's stored history first), or
	// "seq" (from StartSeq).
	Deliver  string `json:"deliver,omitempty"`
	StartSeq uint64 `json:"start_seq,omitempty"`
}

// Deliver policies of ListenRequest.
const (
	DeliverNew = "new"
	DeliverAll = "all"
	DeliverSeq = "seq"
)

// Listener is a consumer membershipd made for the caller. It delivers on
// DeliverSubject (unibus.dlv.<caller>.<token>), which the caller
// subscribes to before or right after this answer, with idle heartbeats
// every Heartbeat seconds and flow-control requests the caller answers.
type Listener struct {
	Name           string `json:"name"`
	Room           string `json:"room"`
	Stream         string `json:"stream"`
	DeliverSubject string `json:"deliver_subject"`
	// SubjectPrefix is the prefix of the stored subjects this listener
	// delivers (unibus.msgs.<room>. or unibus.room.<room>.): what follows
	// it is the message's topic.
	SubjectPrefix string `json:"subject_prefix"`
	// Pending is how many stored messages matched when it was made: with
	// deliver "all", the history it delivers before new messages.
	Pending uint64 `json:"pending"`
	// LastSeq is the stream's last sequence when it was made.
	LastSeq          uint64 `json:"last_seq"`
	HeartbeatSeconds int    `json:"heartbeat_seconds"`
}
