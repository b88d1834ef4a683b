package bench

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/wire"
)

// The bare server is a bound only if it does the work: it announces its
// protocol and deployment as membershipd does, answers a request signed
// for that deployment, refuses the same request again (the nonce was
// recorded), another key, and a signature without the deployment's tag or
// with another's, for both stores.
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
			h, err := Health(context.Background(), http.DefaultClient, srv.url)
			if err != nil || h.Protocol != wire.Protocol || h.Deployment == "" || h.Posture.Store != store {
				t.Fatalf("healthz: %+v, %v", h, err)
			}
			tag := wire.DeploymentTag(h.Deployment)
			signedWith := func(who *identity.Identity, tag string) *http.Request {
				req, err := http.NewRequestWithContext(context.Background(), "GET", srv.url+"/v1/me", nil)
				if err != nil {
					t.Fatal(err)
				}
				s := &httpsig.Signer{KeyID: who.SignPub().String(), Key: who.SigningKey(), Tag: tag}
				if err := s.Sign(req, nil); err != nil {
					t.Fatal(err)
				}
				return req
			}
			signed := func(who *identity.Identity) *http.Request { return signedWith(who, tag) }
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
			for _, other := range []string{"", wire.DeploymentTag(strings.Repeat("0", len(h.Deployment)))} {
				if code, _ := send(signedWith(id, other)); code != http.StatusUnauthorized {
					t.Errorf("signed with tag %q: %d, want 401", other, code)
				}
			}
			unsigned, _ := http.NewRequest("GET", srv.url+"/v1/me", nil)
			if code, _ := send(unsigned); code != http.StatusUnauthorized {
				t.Errorf("unsigned: %d, want 401", code)
			}
		})
	}
}
