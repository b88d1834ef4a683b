package httpsig

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/dunglas/httpsfv"
)

// Fixed test identities and clock. Keys come from fixed seeds so failures
// reproduce.
var (
	testKey   = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x07}, ed25519.SeedSize))
	testKeyID = hex.EncodeToString(testKey.Public().(ed25519.PublicKey))
	otherKey  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x42}, ed25519.SeedSize))
	t0        = time.Unix(1_767_225_600, 0) // 2026-01-01T00:00:00Z
)

// errNoSuchKey is what the test resolver returns for a keyid it does not know.
var errNoSuchKey = errors.New("no such key in the test store")

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

// testSigner signs as testKey at t0.
func testSigner() *Signer {
	return &Signer{KeyID: testKeyID, Key: testKey, Now: at(t0)}
}

// testVerifier knows testKey and whatever is in extra, with its clock at now.
func testVerifier(now time.Time, extra map[string]ed25519.PublicKey) *Verifier {
	return &Verifier{
		Resolve: func(_ context.Context, keyID string) (ed25519.PublicKey, error) {
			if keyID == testKeyID {
				return testKey.Public().(ed25519.PublicKey), nil
			}
			if k, ok := extra[keyID]; ok {
				return k, nil
			}
			return nil, errNoSuchKey
		},
		Now: at(now),
	}
}

// newClientRequest is a request as a client builds it before sending.
func newClientRequest(t testing.TB, method, url string, body []byte) *http.Request {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// overWire writes the client request in HTTP/1.1 wire format and reads it
// back as a server does, with req.TLS set when isTLS. The body stays unread in
// the returned request.
func overWire(t testing.TB, client *http.Request, isTLS bool) *http.Request {
	t.Helper()
	var buf bytes.Buffer
	if err := client.Write(&buf); err != nil {
		t.Fatal(err)
	}
	server, err := http.ReadRequest(bufio.NewReader(&buf))
	if err != nil {
		t.Fatal(err)
	}
	if isTLS {
		server.TLS = &tls.ConnectionState{}
	}
	return server
}

// receive sends client over the wire and returns the server's request and
// the body it read.
func receive(t testing.TB, client *http.Request) (*http.Request, []byte) {
	t.Helper()
	server := overWire(t, client, client.URL.Scheme == "https")
	body, err := io.ReadAll(server.Body)
	if err != nil {
		t.Fatal(err)
	}
	return server, body
}

// signedRequest signs a request with testSigner and returns it as the server
// receives it, with its body.
func signedRequest(t testing.TB, method, url string, body []byte) (*http.Request, []byte) {
	t.Helper()
	req := newClientRequest(t, method, url, body)
	if err := testSigner().Sign(req, body); err != nil {
		t.Fatal(err)
	}
	return receive(t, req)
}

// param is one signature parameter, in order.
type param struct {
	key   string
	value any
}

// signCustom signs req with key under label, covering components with params
// as given, so a test can produce well-signed requests that break one rule of
// our profile. When the base cannot be built (for instance a duplicate
// component) it sends 64 zero bytes as the signature.
func signCustom(t testing.TB, req *http.Request, body []byte, key ed25519.PrivateKey, label string, components []string, params []param) {
	t.Helper()
	if len(body) > 0 {
		req.Header.Set("Content-Digest", ContentDigest(body))
	}
	p := httpsfv.NewParams()
	for _, kv := range params {
		p.Add(kv.key, kv.value)
	}
	items := make([]httpsfv.Item, len(components))
	for i, c := range components {
		items[i] = httpsfv.NewItem(c)
	}
	list := httpsfv.InnerList{Items: items, Params: p}
	sigParams, err := httpsfv.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, ed25519.SignatureSize)
	if base, err := SignatureBase(req, components, sigParams); err == nil {
		sig = ed25519.Sign(key, base)
	}
	in := httpsfv.NewDictionary()
	in.Add(label, list)
	s := httpsfv.NewDictionary()
	s.Add(label, httpsfv.NewItem(sig))
	inField, err := httpsfv.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	sigField, err := httpsfv.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Signature-Input", inField)
	req.Header.Set("Signature", sigField)
}

// standardParams are the parameters the Signer sends, with a fixed nonce.
func standardParams() []param {
	return []param{
		{"created", t0.Unix()},
		{"nonce", "n0nce-n0nce-n0nce-n0nc"},
		{"keyid", testKeyID},
		{"alg", "ed25519"},
	}
}
