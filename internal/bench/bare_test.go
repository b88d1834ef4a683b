package bench

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
)

// The bare server is a bound only if it does the work: it answers a
// signed request, refuses the same request again (the nonce was recorded)
// and refuses another key, for both stores.
func TestBareServerVerifiesAndRecordsNonces(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded node")
	}
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	other, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	me := []byte(`{"handle":"bench"}`)
	for _, store := range []string{"sqlite", "kv"} {
		t.Run(store, func(t *testing.T) {
			srv, err := startBareServer(BareHTTPSpec{Store: store, SignPub: id.SignPub().String(), Me: me})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.stop()
			signed := func(who *identity.Identity) *http.Request {
				req, err := http.NewRequestWithContext(context.Background(), "GET", srv.url+"/v1/me", nil)
				if err != nil {
					t.Fatal(err)
				}
				s := &httpsig.Signer{KeyID: who.SignPub().String(), Key: who.SigningKey()}
				if err := s.Sign(req, nil); err != nil {
					t.Fatal(err)
				}
				return req
			}
			send := func(req *http.Request) (int, []byte) {
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, b
			}
			req := signed(id)
			if code, body := send(req); code != http.StatusOK || !bytes.Equal(body, me) {
				t.Fatalf("signed request: %d %q", code, body)
			}
			replay := req.Clone(context.Background())
			if code, _ := send(replay); code != http.StatusConflict {
				t.Errorf("replayed request: %d, want 409", code)
			}
			if code, _ := send(signed(other)); code != http.StatusUnauthorized {
				t.Errorf("another key: %d, want 401", code)
			}
			unsigned, _ := http.NewRequest("GET", srv.url+"/v1/me", nil)
			if code, _ := send(unsigned); code != http.StatusUnauthorized {
				t.Errorf("unsigned: %d, want 401", code)
			}
		})
	}
}
