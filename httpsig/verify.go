package httpsig

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"net/http"
	"slices"
	"time"
)

// Verified describes a signature that [Verifier.Verify] accepted.
type Verified struct {
	// KeyID is the keyid parameter: the signer's sign-pub.
	KeyID string
	// Created is the created parameter.
	Created time.Time
	// Nonce is the nonce parameter. The caller must record (KeyID, Nonce)
	// in its replay store and deny the request if it was seen before.
	Nonce string
	// Components are the covered component identifiers, in signed order.
	Components []string
	// BaseDigest is the SHA-256 of the signature base: a digest of exactly
	// what the key signed (method, path, query, body digest, parameters),
	// which an audit log can record to name the request.
	BaseDigest [32]byte
}

// Verifier checks request signatures.
type Verifier struct {
	// Resolve returns the public key for keyid. Any error => the request is
	// denied with ErrUnknownKey wrapping it.
	Resolve func(ctx context.Context, keyID string) (ed25519.PublicKey, error)
	// Window is the accepted |now - created|; 0 means DefaultWindow.
	Window time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Keys, if not nil, keeps the keys Resolve returns prepared for
	// verification across requests (see [KeyCache]); the rule is the same
	// either way: crypto/ed25519's.
	Keys *KeyCache
	// Tag, if not empty, must be the signature's tag parameter, exactly
	// (RFC 9421 §2.3: an application-specific tag). It binds a signature
	// to one deployment, so that a request captured at one is refused by
	// another that knows the same key (ErrWrongTag).
	Tag string
}

// requiredComponents must be covered by every signature.
var requiredComponents = []string{compMethod, compPath, compQuery}

// Verify checks the request's signature. body is the full request body
// already read by the caller (may be nil).
//
// It requires: exactly one signature with label [Label]; alg absent or
// "ed25519"; keyid present; created present and within the window either
// side of now; nonce present and non-empty (at most [MaxNonceBytes]);
// covered components including "@method", "@path", "@query" and, when body is
// non-empty, "content-digest"; when body is non-empty (or content-digest is
// covered), a Content-Digest header whose sha-256 member equals SHA-256(body)
// (other algorithms in the field are ignored).
//
// It does NOT check the nonce for replay: the caller records (keyid, nonce)
// in its store after Verify succeeds. Resolve is called with req's context,
// only after every cheaper check has passed.
func (v *Verifier) Verify(req *http.Request, body []byte) (Verified, error) {
	vr, _, err := v.verify(req, body, false)
	return vr, err
}

// VerifyStreaming checks the signature of a request whose body is too large
// to hold in memory (a blob upload). It requires "content-digest" to be
// covered and returns the signed sha-256 digest of the body; the caller
// hashes the body as it streams it and must refuse the request (and keep
// nothing of it) unless the hash equals the returned digest.
func (v *Verifier) VerifyStreaming(req *http.Request) (Verified, []byte, error) {
	return v.verify(req, nil, true)
}

func (v *Verifier) verify(req *http.Request, body []byte, streaming bool) (Verified, []byte, error) {
	inputs := req.Header.Values(headerSignatureInput)
	sigs := req.Header.Values(headerSignature)
	if len(inputs) == 0 && len(sigs) == 0 {
		return Verified{}, nil, ErrMissingSignature
	}
	in, err := parseSignatureInput(inputs, Label)
	if err != nil {
		return Verified{}, nil, err
	}
	sig, err := parseSignature(sigs, Label)
	if err != nil {
		return Verified{}, nil, err
	}

	if in.hasAlg && in.alg != algorithm {
		return Verified{}, nil, detail(ErrUnsupportedAlg, "alg is %s", quoteShort(in.alg))
	}
	switch {
	case in.keyID == "":
		return Verified{}, nil, detail(ErrMissingParam, "keyid is missing")
	case !in.hasCreated:
		return Verified{}, nil, detail(ErrMissingParam, "created is missing")
	case in.nonce == "":
		return Verified{}, nil, detail(ErrMissingParam, "nonce is missing")
	case v.Tag != "" && in.tag != v.Tag:
		if in.tag == "" {
			return Verified{}, nil, detail(ErrWrongTag, "the signature has no tag (an older client?); this server wants tag %s", quoteShort(v.Tag))
		}
		return Verified{}, nil, detail(ErrWrongTag, "tag %s is another deployment's; this server wants %s", quoteShort(in.tag), quoteShort(v.Tag))
	}
	for _, c := range requiredComponents {
		if !slices.Contains(in.components, c) {
			return Verified{}, nil, detail(ErrMissingComponent, "%q is not covered", c)
		}
	}
	digestCovered := slices.Contains(in.components, compContentDigest)
	if streaming && !digestCovered {
		return Verified{}, nil, detail(ErrMissingComponent, "a streamed body needs %q covered", compContentDigest)
	}
	if len(body) > 0 && !digestCovered {
		return Verified{}, nil, detail(ErrMissingComponent, "the request has a body but %q is not covered", compContentDigest)
	}

	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	window := v.Window
	if window == 0 {
		window = DefaultWindow
	}
	t := now()
	created := time.Unix(in.created, 0)
	if skew := t.Sub(created); skew > window || skew < -window {
		return Verified{}, nil, detail(ErrExpired, "created is %s from the server clock; at most %s is accepted", skew.Round(time.Second), window)
	}
	if in.hasExpires && t.Unix() > in.expires {
		return Verified{}, nil, detail(ErrExpired, "expires has passed")
	}

	var digest []byte
	switch {
	case streaming:
		if digest, err = parseContentDigest(req.Header.Values(headerContentDigest)); err != nil {
			return Verified{}, nil, err
		}
	case len(body) > 0 || digestCovered:
		if err := checkContentDigest(req.Header.Values(headerContentDigest), body); err != nil {
			return Verified{}, nil, err
		}
	}

	base, err := SignatureBase(req, in.components, in.params)
	if err != nil {
		return Verified{}, nil, err
	}

	if v.Resolve == nil {
		return Verified{}, nil, detail(ErrUnknownKey, "the verifier has no key resolver")
	}
	pub, err := v.Resolve(req.Context(), in.keyID)
	if err != nil {
		return Verified{}, nil, detail(ErrUnknownKey, "keyid %s: %w", quoteShort(in.keyID), err)
	}
	if len(pub) != ed25519.PublicKeySize {
		return Verified{}, nil, detail(ErrUnknownKey, "keyid %s does not name an ed25519 key", quoteShort(in.keyID))
	}
	if !verifySignature(v.Keys, pub, base, sig) {
		return Verified{}, nil, ErrBadSignature
	}

	return Verified{
		KeyID:      in.keyID,
		Created:    created,
		Nonce:      in.nonce,
		Components: in.components,
		BaseDigest: sha256.Sum256(base),
	}, digest, nil
}
