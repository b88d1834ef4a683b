package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/wire"
)

// apiError is an error with its HTTP status and wire code. Its message is
// shown to the client, so it never carries a secret or an internal detail.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, code, format string, args ...any) error {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return errorf(http.StatusBadRequest, wire.CodeBadRequest, format, args...)
}

func forbidden(format string, args ...any) error {
	return errorf(http.StatusForbidden, wire.CodeForbidden, format, args...)
}

// changeErr is an error of a handler that changes state, returned after
// the request was authenticated: if it is the store's unavailability, the
// change may have been applied before the store failed to confirm it.
type changeErr struct{ err error }

func (e *changeErr) Error() string { return e.err.Error() }
func (e *changeErr) Unwrap() error { return e.err }

// notApplied is a change's error known to have left everything as it was
// (its audit entry, which comes first, could not be written): a denial.
type notApplied struct{ err error }

func (e *notApplied) Error() string { return e.err.Error() }
func (e *notApplied) Unwrap() error { return e.err }

// outcomeUnknown is the answer to a change the store did not confirm.
var outcomeUnknown = &apiError{http.StatusServiceUnavailable, wire.CodeOutcomeUnknown,
	"the store did not confirm the change: it may or may not have been applied; read the state back, or retry (a retry never applies a change twice)"}

// classify maps every error a handler can return to its status, code and
// client-visible message, in one place. Unknown errors are 500 with a
// generic message (the detail goes to the log only).
func classify(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var ce *changeErr
	var na *notApplied
	if errors.As(err, &ce) && !errors.As(err, &na) && errors.Is(err, store.ErrUnavailable) {
		return outcomeUnknown
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return &apiError{http.StatusRequestEntityTooLarge, wire.CodeTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)}
	// Signature verification (all 401: the request is not authenticated).
	case errors.Is(err, httpsig.ErrExpired):
		return &apiError{http.StatusUnauthorized, wire.CodeStaleSignature, "signature 'created' is outside the allowed clock window; check the client's clock"}
	case errors.Is(err, httpsig.ErrUnknownKey):
		return &apiError{http.StatusUnauthorized, wire.CodeUnknownKey, "unknown or revoked key"}
	case errors.Is(err, httpsig.ErrBadSignature):
		return &apiError{http.StatusUnauthorized, wire.CodeBadSignature, "signature does not verify"}
	case errors.Is(err, httpsig.ErrWrongTag):
		return &apiError{http.StatusUnauthorized, wire.CodeWrongDeployment, "the signature is not bound to this deployment: it was made for another deployment, or by a client older than protocol " + wire.Protocol + " (upgrade it); sign with the tag /healthz announces"}
	case errors.Is(err, httpsig.ErrDigest):
		return &apiError{http.StatusUnauthorized, wire.CodeBadDigest, err.Error()}
	case errors.Is(err, httpsig.ErrMissingSignature), errors.Is(err, httpsig.ErrMalformed),
		errors.Is(err, httpsig.ErrMissingComponent), errors.Is(err, httpsig.ErrMissingParam),
		errors.Is(err, httpsig.ErrUnsupportedAlg):
		return &apiError{http.StatusUnauthorized, wire.CodeUnauthorized, err.Error()}
	// Data-plane conditions.
	case errors.Is(err, ErrBadListen):
		return &apiError{http.StatusBadRequest, wire.CodeBadRequest, err.Error()}
	case errors.Is(err, ErrTooManyListeners):
		return &apiError{http.StatusTooManyRequests, wire.CodeTooMany, err.Error()}
	case errors.Is(err, ErrNoListener):
		return &apiError{http.StatusNotFound, wire.CodeNotFound, "no such listener of yours in this room"}
	case errors.Is(err, ErrStreamExists):
		return &apiError{http.StatusConflict, wire.CodeConflict, "a room with this id already exists"}
	// Store conditions.
	case errors.Is(err, store.ErrReplay):
		return &apiError{http.StatusConflict, wire.CodeReplay, "this request's nonce was already used (replay)"}
	case errors.Is(err, store.ErrAlreadyRegistered):
		return &apiError{http.StatusConflict, wire.CodeAlreadyRegistered, "already registered: this sign-pub is already a user; to replace it, revoke it and add a new key"}
	case errors.Is(err, store.ErrHandleTaken):
		return &apiError{http.StatusConflict, wire.CodeHandleTaken, "handle already taken"}
	case errors.Is(err, store.ErrRoomExists):
		return &apiError{http.StatusConflict, wire.CodeConflict, "a room with this id already exists"}
	case errors.Is(err, store.ErrAlreadyMember):
		return &apiError{http.StatusConflict, wire.CodeAlreadyMember, "user is already a member of the room"}
	case errors.Is(err, store.ErrNotMember):
		return &apiError{http.StatusNotFound, wire.CodeNotMember, "user is not a member of the room"}
	case errors.Is(err, store.ErrNotFound):
		return &apiError{http.StatusNotFound, wire.CodeNotFound, "not found"}
	case errors.Is(err, store.ErrStaleEpoch):
		return &apiError{http.StatusConflict, wire.CodeStaleEpoch, "epoch is not the room's next epoch; fetch the room and retry"}
	case errors.Is(err, store.ErrIncompleteRotation):
		return &apiError{http.StatusConflict, wire.CodeIncompleteKeys, "sealed keys must cover every current member of the room exactly once, for the right epoch"}
	case errors.Is(err, store.ErrUnavailable):
		return &apiError{http.StatusServiceUnavailable, wire.CodeUnavailable, "the store is unavailable; the request was denied (fail closed)"}
	// Format errors in client-supplied keys.
	case errors.Is(err, identity.ErrBadSignPub), errors.Is(err, identity.ErrBadKEMPub),
		errors.Is(err, identity.ErrBadKEMBinding), errors.Is(err, e2e.ErrBadRoomID),
		errors.Is(err, e2e.ErrMalformed), errors.Is(err, e2e.ErrBadSignature):
		return &apiError{http.StatusBadRequest, wire.CodeBadRequest, err.Error()}
	}
	return &apiError{http.StatusInternalServerError, wire.CodeInternal, "internal error"}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, ae *apiError) {
	writeJSON(w, ae.status, wire.Error{Error: wire.ErrorBody{Code: ae.code, Message: ae.msg}})
}
