package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/unibus/unibus/wire"
)

func TestDecodeStrict(t *testing.T) {
	cases := map[string]string{
		"":                          wire.CodeBadJSON,
		"   ":                       wire.CodeBadJSON,
		"{":                         wire.CodeBadJSON,
		`{"handle":1}`:              wire.CodeBadJSON,
		`{"handle":"a"} x`:          wire.CodeBadJSON,
		`{"handle":"a","extra":1}`:  wire.CodeUnknownField,
		`{"handle":"a"}{"role":""}`: wire.CodeBadJSON,
		"null":                      wire.CodeBadJSON,
		` [{"handle":"a"}]`:         wire.CodeBadJSON,
		`"a"`:                       wire.CodeBadJSON,
	}
	for body, code := range cases {
		var v wire.AddUserRequest
		err := decode([]byte(body), &v)
		var ae *apiError
		if !errors.As(err, &ae) || ae.code != code || ae.status != http.StatusBadRequest {
			t.Errorf("%q: got %v, want %s", body, err, code)
		}
	}
	var v wire.AddUserRequest
	if err := decode([]byte(` {"handle":"a","sign_pub":"b","role":"member"} `), &v); err != nil || v.Handle != "a" {
		t.Fatalf("valid body: %v", err)
	}
}

// TestRoomNameLimits (handles: identity.TestValidHandle).
func TestRoomNameLimits(t *testing.T) {
	for n, ok := range map[string]bool{
		"demo": true, "ops room ✓": true, strings.Repeat("x", MaxRoomNameLen): true,
		strings.Repeat("x", MaxRoomNameLen+1): false, "": false, " x": false, "a\nb": false, "\xff": false,
	} {
		if validRoomName(n) != ok {
			t.Errorf("room name %q: want %v", n, ok)
		}
	}
}

// FuzzDecode: the strict decoder never panics, and what it accepts is an
// object whose re-encoding decodes to the same value.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"handle":"alice","sign_pub":"00","role":"member"}`))
	f.Add([]byte(`{"epoch":2,"keys":[{"room":"x","epoch":2,"member":"m","sealer":"s","sealed":"AAAA","sig":"AA=="}]}`))
	f.Add([]byte(`{"handle":"a"`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var a wire.AddUserRequest
		if err := decode(body, &a); err == nil {
			re, _ := json.Marshal(a)
			var b wire.AddUserRequest
			if err := decode(re, &b); err != nil || a != b {
				t.Fatalf("accepted %q but re-encoding differs: %v", body, err)
			}
		} else {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != http.StatusBadRequest {
				t.Fatalf("decode error is not a 400: %v", err)
			}
		}
		var r wire.RotateRequest
		_ = decode(body, &r)
	})
}
