package httpsig

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/dunglas/httpsfv"
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Signer signs requests on behalf of one user.
type Signer struct {
	// KeyID is the user's sign-pub, 64 lowercase hex; it travels as the keyid
	// parameter.
	KeyID string
	// Key is the user's ed25519 signing key.
	Key ed25519.PrivateKey
	// Now is the clock for the created parameter; nil means time.Now.
	Now func() time.Time
	// Rand is the nonce source; nil means crypto/rand.
	Rand io.Reader
	// Tag, if not empty, travels as the tag parameter: unibus puts its
	// deployment's binding there (see [Verifier.Tag]).
	Tag string
}

// Sign adds Content-Digest (sha-256, only when body is non-empty),
// Signature-Input and Signature to req, replacing any it had. With an empty
// body it leaves Content-Digest as it is; the signature does not cover it.
//
// Covered components, in this order: "@method" "@path" "@query" and, with a
// body, "content-digest". Parameters: created (unix seconds), nonce (22-char
// base64url of 16 random bytes), keyid, alg="ed25519", and tag when the
// Signer has one.
//
// body must be exactly the bytes req will send; Sign does not read req.Body.
// Sign each request just before sending it: the verifier accepts it only
// within its window of created, and only once.
func (s *Signer) Sign(req *http.Request, body []byte) error {
	if len(body) == 0 {
		return s.sign(req, nil)
	}
	sum := sha256.Sum256(body)
	return s.sign(req, sum[:])
}

// SignDigest signs a request whose body is streamed: sha256 is the SHA-256
// of the exact bytes the body will carry. It sets Content-Digest and covers
// it, as Sign does for a body in memory.
func (s *Signer) SignDigest(req *http.Request, sha256sum []byte) error {
	if len(sha256sum) != sha256.Size {
		return errors.New("httpsig: sign: digest must be a SHA-256 sum")
	}
	return s.sign(req, sha256sum)
}

func (s *Signer) sign(req *http.Request, digest []byte) error {
	if req == nil || req.URL == nil {
		return errors.New("httpsig: sign: no request")
	}
	if len(s.Key) != ed25519.PrivateKeySize {
		return errors.New("httpsig: sign: Signer.Key is not an ed25519 private key")
	}
	if s.KeyID == "" {
		return errors.New("httpsig: sign: Signer.KeyID is empty; set it to the signing public key")
	}

	nonce := make([]byte, nonceBytes)
	r := s.Rand
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, nonce); err != nil {
		return fmt.Errorf("httpsig: sign: read nonce: %w", err)
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}

	if req.Header == nil {
		req.Header = make(http.Header)
	}
	components := []string{compMethod, compPath, compQuery}
	if digest != nil {
		req.Header.Set(headerContentDigest, digestAlg+"=:"+base64.StdEncoding.EncodeToString(digest)+":")
		components = append(components, compContentDigest)
	}

	params := httpsfv.NewParams()
	params.Add("created", now().Unix())
	params.Add("nonce", base64.RawURLEncoding.EncodeToString(nonce))
	params.Add("keyid", s.KeyID)
	params.Add("alg", algorithm)
	if s.Tag != "" {
		params.Add("tag", s.Tag)
	}
	items := make([]httpsfv.Item, len(components))
	for i, c := range components {
		items[i] = httpsfv.NewItem(c)
	}
	input := httpsfv.InnerList{Items: items, Params: params}
	sigParams, err := httpsfv.Marshal(input)
	if err != nil {
		return fmt.Errorf("httpsig: sign: Signer.KeyID must be printable ASCII: %w", err)
	}

	base, err := SignatureBase(req, components, sigParams)
	if err != nil {
		return fmt.Errorf("httpsig: sign: %w", err)
	}
	sig := voi.Sign(voi.PrivateKey(s.Key), base) // crypto/ed25519's bytes, faster (identity.Sign)

	inputDict := httpsfv.NewDictionary()
	inputDict.Add(Label, input)
	inputField, err := httpsfv.Marshal(inputDict)
	if err != nil {
		return fmt.Errorf("httpsig: sign: serialize Signature-Input: %w", err)
	}
	sigDict := httpsfv.NewDictionary()
	sigDict.Add(Label, httpsfv.NewItem(sig))
	sigField, err := httpsfv.Marshal(sigDict)
	if err != nil {
		return fmt.Errorf("httpsig: sign: serialize Signature: %w", err)
	}
	req.Header.Set(headerSignatureInput, inputField)
	req.Header.Set(headerSignature, sigField)
	return nil
}
