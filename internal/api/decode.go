package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/unibus/unibus/wire"
)

// Limits, named so that tests can probe their boundaries.
const (
	// MaxBodyBytes bounds every /v1 request body.
	MaxBodyBytes = 1 << 20
	// MaxMembersPerRoom bounds a room's size (and so a rotation's body).
	MaxMembersPerRoom = 256
	// MaxRoomNameLen bounds a room name in bytes.
	MaxRoomNameLen = 64
)

// validRoomName: 1..64 bytes of UTF-8 with no control characters.
func validRoomName(n string) bool {
	if n == "" || len(n) > MaxRoomNameLen || !utf8.ValidString(n) || strings.TrimSpace(n) != n {
		return false
	}
	for _, r := range n {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// decode parses a JSON body strictly: one object, no unknown fields, no
// trailing data.
func decode(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return errorf(http.StatusBadRequest, wire.CodeBadJSON, "request body is empty; a JSON object is required")
	}
	if trimmed[0] != '{' {
		return errorf(http.StatusBadRequest, wire.CodeBadJSON, "the body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return errorf(http.StatusBadRequest, wire.CodeUnknownField, "%s", strings.TrimPrefix(err.Error(), "json: "))
		case errors.As(err, &se):
			return errorf(http.StatusBadRequest, wire.CodeBadJSON, "malformed JSON at byte %d", se.Offset)
		case errors.As(err, &te):
			return errorf(http.StatusBadRequest, wire.CodeBadJSON, "field %q must be %s", te.Field, te.Type)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errorf(http.StatusBadRequest, wire.CodeBadJSON, "truncated JSON")
		default:
			return errorf(http.StatusBadRequest, wire.CodeBadJSON, "malformed JSON body")
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(http.StatusBadRequest, wire.CodeBadJSON, "unexpected data after the JSON object")
	}
	return nil
}
