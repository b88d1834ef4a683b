package httpsig

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"

	"github.com/dunglas/httpsfv"
)

// digestAlg is the only Content-Digest algorithm we emit and check (RFC 9530
// §5: sha-256 is the one both sides must support).
const digestAlg = "sha-256"

// ContentDigest returns the RFC 9530 Content-Digest field value for body:
// sha-256=:<base64>:
func ContentDigest(body []byte) string {
	sum := sha256.Sum256(body)
	return digestAlg + "=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
}

// checkContentDigest checks that the Content-Digest field lines hold a sha-256
// member equal to SHA-256(body). Other algorithms in the field are ignored.
// Every error wraps [ErrDigest].
func checkContentDigest(lines []string, body []byte) error {
	got, err := parseContentDigest(lines)
	if err != nil {
		return err
	}
	want := sha256.Sum256(body)
	if subtle.ConstantTimeCompare(got, want[:]) != 1 {
		return detail(ErrDigest, "sha-256 does not match the %d-byte body", len(body))
	}
	return nil
}

// parseContentDigest returns the 32-byte sha-256 member of the
// Content-Digest field lines. Every error wraps [ErrDigest].
func parseContentDigest(lines []string) ([]byte, error) {
	if len(lines) == 0 {
		return nil, detail(ErrDigest, "no Content-Digest header")
	}
	if fieldLen(lines) > MaxContentDigestBytes {
		return nil, detail(ErrDigest, "Content-Digest is longer than %d bytes", MaxContentDigestBytes)
	}
	dict, err := httpsfv.UnmarshalDictionary(lines)
	if err != nil {
		return nil, detail(ErrDigest, "Content-Digest is not a structured-field dictionary: %v", err)
	}
	m, ok := dict.Get(digestAlg)
	if !ok {
		return nil, detail(ErrDigest, "Content-Digest has no sha-256 member")
	}
	item, ok := m.(httpsfv.Item)
	if !ok {
		return nil, detail(ErrDigest, "Content-Digest sha-256 member is not a byte sequence")
	}
	got, ok := item.Value.([]byte)
	if !ok || len(got) != sha256.Size {
		return nil, detail(ErrDigest, "Content-Digest sha-256 member is not a %d-byte sequence", sha256.Size)
	}
	return got, nil
}

// fieldLen is the length of the field lines as httpsfv joins them (", ").
func fieldLen(lines []string) int {
	n := 2 * (len(lines) - 1)
	for _, l := range lines {
		n += len(l)
	}
	return n
}
