package httpsig_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/unibus/unibus/httpsig"
)

// A client signs a request with its signing key; the server verifies it,
// looking the key up by keyid, and then records the nonce against replay.
func ExampleSigner() {
	// Fixed key, clock and nonce bytes so the output is stable; real
	// clients leave Now and Rand nil.
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	keyID := hex.EncodeToString(key.Public().(ed25519.PublicKey))
	now := time.Unix(1767225600, 0)
	signer := &httpsig.Signer{
		KeyID: keyID,
		Key:   key,
		Now:   func() time.Time { return now },
		Rand:  bytes.NewReader(make([]byte, 16)),
	}

	body := []byte(`{"name":"ops"}`)
	req, err := http.NewRequest(http.MethodPost, "https://bus.example/v1/rooms?dry_run=1", bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	if err := signer.Sign(req, body); err != nil {
		panic(err)
	}
	fmt.Println("Content-Digest:", req.Header.Get("Content-Digest"))
	fmt.Println("Signature-Input:", req.Header.Get("Signature-Input"))

	// On the server.
	verifier := &httpsig.Verifier{
		Resolve: func(ctx context.Context, id string) (ed25519.PublicKey, error) {
			if id != keyID {
				return nil, errors.New("no such user")
			}
			return key.Public().(ed25519.PublicKey), nil
		},
		Now: func() time.Time { return now.Add(2 * time.Second) },
	}
	received := httptest.NewRequest(req.Method, req.URL.String(), bytes.NewReader(body))
	received.Header = req.Header.Clone()
	v, err := verifier.Verify(received, body)
	if err != nil {
		fmt.Println("denied:", err)
		return
	}
	fmt.Println("verified:", v.Components, "nonce", v.Nonce)

	// The same request with another body is denied.
	_, err = verifier.Verify(received, []byte(`{"name":"admins"}`))
	fmt.Println("tampered body:", errors.Is(err, httpsig.ErrDigest))

	// Output:
	// Content-Digest: sha-256=:bcK8Hja3R5aZOnLqPvnFDCwUAEfzroh0iKhiIuxVeEI=:
	// Signature-Input: sig1=("@method" "@path" "@query" "content-digest");created=1767225600;nonce="AAAAAAAAAAAAAAAAAAAAAA";keyid="8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";alg="ed25519"
	// verified: [@method @path @query content-digest] nonce AAAAAAAAAAAAAAAAAAAAAA
	// tampered body: true
}
