package httpsig

import (
	"errors"
	"fmt"
)

// Errors returned by [Verifier.Verify]. Each one is wrapped with a detail that
// says what was wrong; test with errors.Is. None of the messages repeats a
// signature or a digest. membershipd answers all of them with 401.
var (
	// ErrMissingSignature: the request carries no Signature-Input or no
	// Signature header.
	ErrMissingSignature = errors.New("httpsig: request is not signed: send Signature-Input and Signature headers (RFC 9421)")

	// ErrMalformed: a signature header does not parse, is too long, does not
	// hold exactly one signature labelled "sig1", or lists a component twice,
	// with parameters, or that the request does not carry.
	ErrMalformed = errors.New(`httpsig: malformed signature headers: send one signature labelled "sig1" as RFC 9421 structured fields`)

	// ErrUnsupportedAlg: the alg parameter names an algorithm other than
	// ed25519.
	ErrUnsupportedAlg = errors.New(`httpsig: unsupported signature algorithm: sign with ed25519 and send alg="ed25519" or no alg`)

	// ErrMissingComponent: a component we require is not covered.
	ErrMissingComponent = errors.New(`httpsig: signature does not cover a required component: cover "@method" "@path" "@query" and, with a body, "content-digest"`)

	// ErrMissingParam: the created, nonce or keyid parameter is missing or
	// empty.
	ErrMissingParam = errors.New("httpsig: signature parameters must include created, nonce and keyid")

	// ErrExpired: created is outside the accepted window around the server's
	// clock, or expires has passed.
	ErrExpired = errors.New("httpsig: signature created outside the accepted time window: check the client clock and sign each request just before sending it")

	// ErrUnknownKey: keyid names no usable key (unknown, revoked, or the
	// lookup failed). The error also wraps what Resolve returned, so a caller
	// can still tell a store outage apart with errors.Is; its text then
	// includes Resolve's message.
	ErrUnknownKey = errors.New("httpsig: unknown or revoked signing key")

	// ErrBadSignature: the signature does not verify over the request.
	ErrBadSignature = errors.New("httpsig: signature does not verify: sign the exact method, path, query and Content-Digest that are sent, with the key named by keyid")

	// ErrWrongTag: the verifier requires a tag parameter (unibus binds
	// every request to its deployment with it) and the signature carries
	// none or another. A request signed for one deployment is refused by
	// every other, even one where the same key is registered.
	ErrWrongTag = errors.New("httpsig: signature is not bound to this deployment: sign with the tag parameter this server announces")

	// ErrDigest: with a body, Content-Digest is missing, malformed, has no
	// sha-256 member, or does not match the body.
	ErrDigest = errors.New("httpsig: Content-Digest is missing, malformed or does not match the body: send Content-Digest: sha-256=:<base64 of SHA-256(body)>:")
)

// detail wraps sentinel with a description of what was wrong.
func detail(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}

// quoteShort quotes s for an error message, cut to a length that identifies it
// without echoing a long attacker-chosen string.
func quoteShort(s string) string {
	const max = 40
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
