package api

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/wire"
)

// A change the store did not confirm is answered as such — its outcome is
// unknown — never as "denied", which it may not have been; a failure
// before anything could change (the nonce, a read) is a denial; a
// handler's own refusal keeps its status.
func TestUnconfirmedChangeIsNotADenial(t *testing.T) {
	unavailable := fmt.Errorf("revoke bob: %w: timeout", store.ErrUnavailable)
	for _, c := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"a change the store did not confirm", &changeErr{unavailable}, http.StatusServiceUnavailable, wire.CodeOutcomeUnknown},
		{"a read or the nonce: nothing changed", unavailable, http.StatusServiceUnavailable, wire.CodeUnavailable},
		{"a change whose audit entry could not be written: nothing changed", &changeErr{&notApplied{unavailable}}, http.StatusServiceUnavailable, wire.CodeUnavailable},
		{"a change refused by the store", &changeErr{fmt.Errorf("add: %w", store.ErrAlreadyMember)}, http.StatusConflict, wire.CodeAlreadyMember},
		{"a change refused by the handler", &changeErr{forbidden("no")}, http.StatusForbidden, wire.CodeForbidden},
	} {
		ae := classify(c.err)
		if ae.status != c.status || ae.code != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, ae.status, ae.code, c.status, c.code)
		}
	}
	if m := classify(&changeErr{unavailable}).msg; m == classify(unavailable).msg {
		t.Errorf("an unconfirmed change is worded as a denial: %q", m)
	}
}
