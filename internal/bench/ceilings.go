package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/unibus/unibus/e2e"
	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/api"
	"github.com/unibus/unibus/internal/natsnode"
	"github.com/unibus/unibus/internal/store/kvstore"
	"github.com/unibus/unibus/internal/store/sqlite"
	"github.com/unibus/unibus/wire"
)

// Ceiling is what one CPU-bound operation reaches on this machine, on one
// core and on all of them, in operations per second.
type Ceiling struct {
	Op       string  `json:"op"`
	Size     int     `json:"size,omitempty"` // message plaintext bytes, if the op depends on it
	OneCore  float64 `json:"one_core_per_s"`
	AllCores float64 `json:"all_cores_per_s"`
	Cores    int     `json:"cores"`
}

// Ceiling operation names. OpVerify is crypto/ed25519's verification, the
// reference ceiling of the room target; the SDK's own verifier (a prepared
// sender key, batches) is measured beside it.
const (
	OpSign         = "ed25519 sign (crypto/ed25519)"
	OpVerify       = "ed25519 verify (crypto/ed25519)"
	OpVerifySDK    = "ed25519 verify (SDK, prepared key)"
	OpVerifyBatch  = "ed25519 verify (SDK, batch of 64)"
	OpSeal         = "xchacha20poly1305 seal"
	OpOpen         = "xchacha20poly1305 open"
	OpE2ESeal      = "e2e seal (encrypt+sign)"
	OpE2EOpen      = "e2e open (parse+verify+decrypt)"
	OpE2EOpenBatch = "e2e open, batches of 64"
	OpHTTPSigRead  = "httpsig verify GET /v1/me"
	OpHTTPSigPost  = "httpsig verify POST /v1/users"
	// OpHTTPSigNonce is the signed-request target's ceiling: one request
	// verified and its nonce recorded in a SQLite store (membershipd's
	// store, a fresh file, synchronous commits), nothing else.
	OpHTTPSigNonce = "httpsig verify + SQLite nonce write"
	// OpHTTPSigNonceKV is the same with the nonce recorded in the kv
	// store of a single embedded node (the memory-backed nonce bucket).
	OpHTTPSigNonceKV = "httpsig verify + KV nonce write"
)

// batchOf is the batch size of the batch ceilings.
const batchOf = 64

// rate runs the op that newOp returns (one per worker, so workers share no
// state) on workers goroutines for d and returns operations per second;
// one call of an op is per operations.
func rate(d time.Duration, workers, per int, newOp func() func() error) (float64, error) {
	var total atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	ops := make([]func() error, workers)
	for i := range ops {
		ops[i] = newOp()
	}
	start := time.Now()
	deadline := start.Add(d)
	for _, op := range ops {
		wg.Go(func() {
			n := int64(0)
			for time.Now().Before(deadline) {
				for range 8 {
					if err := op(); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
				n += 8
			}
			total.Add(n)
		})
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	return float64(total.Load()) * float64(per) / time.Since(start).Seconds(), nil
}

// ceiling measures op on one core and on all cores.
func ceiling(name string, size, per int, d time.Duration, newOp func() func() error) (Ceiling, error) {
	c := Ceiling{Op: name, Size: size, Cores: runtime.GOMAXPROCS(0)}
	var err error
	if c.OneCore, err = rate(d, 1, per, newOp); err != nil {
		return c, fmt.Errorf("%s: %w", name, err)
	}
	if c.AllCores, err = rate(d, c.Cores, per, newOp); err != nil {
		return c, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// Ceilings measures the CPU bounds of the E2E message path for each size
// (ed25519 sign and verify over a message's signed bytes, XChaCha20-
// Poly1305 seal and open, and the whole e2e codec) and of the control
// plane (RFC 9421 request verification), d per measurement.
func Ceilings(d time.Duration, sizes []int) ([]Ceiling, error) {
	var out []Ceiling
	add := func(name string, size, per int, newOp func() func() error) error {
		c, err := ceiling(name, size, per, d, newOp)
		if err != nil {
			return err
		}
		out = append(out, c)
		return nil
	}
	id, err := identity.Generate()
	if err != nil {
		return nil, err
	}
	room, _ := e2e.NewRoomID()
	key, _ := e2e.NewRoomKey(nil)
	subject := "unibus.room." + room.String() + ".msg"
	sk, err := e2e.NewSenderKey(id.SignPub())
	if err != nil {
		return nil, err
	}
	var rawKey [32]byte
	rand.Read(rawKey[:])
	for _, size := range sizes {
		pt := make([]byte, size)
		rand.Read(pt)
		envs := make([]*e2e.Envelope, batchOf)
		hdrs := make([]map[string][]string, batchOf)
		for i := range envs {
			nonce := make([]byte, e2e.NonceSize)
			rand.Read(nonce)
			if envs[i], err = e2e.SealMessage(id, room, subject, 1, key, e2e.MsgID([8]byte{1}, uint64(i+1)), uint64(i+1), nonce, pt); err != nil {
				return out, err
			}
			hdrs[i] = envs[i].Headers()
		}
		env := envs[0]
		signed := append(env.AAD(), env.Payload...)
		pub := id.SignPub()
		steps := []struct {
			name  string
			per   int
			newOp func() func() error
		}{
			{OpSign, 1, func() func() error {
				priv := id.SigningKey()
				return func() error { ed25519.Sign(priv, signed); return nil }
			}},
			{OpVerify, 1, func() func() error {
				return func() error {
					if !ed25519.Verify(pub[:], signed, env.Sig) {
						return fmt.Errorf("signature does not verify")
					}
					return nil
				}
			}},
			{OpVerifySDK, 1, func() func() error {
				return func() error { return env.VerifyWith(sk) }
			}},
			{OpVerifyBatch, batchOf, func() func() error {
				bv := e2e.NewBatchVerifier()
				return func() error {
					for _, e := range envs {
						bv.Add(sk, e)
					}
					return errors.Join(bv.Verify()...)
				}
			}},
			{OpSeal, 1, func() func() error {
				a, _ := chacha20poly1305.NewX(rawKey[:])
				nonce := make([]byte, e2e.NonceSize)
				buf := make([]byte, 0, size+e2e.TagSize)
				aad := env.AAD()
				return func() error { a.Seal(buf[:0], nonce, pt, aad); return nil }
			}},
			{OpOpen, 1, func() func() error {
				a, _ := chacha20poly1305.NewX(rawKey[:])
				nonce := make([]byte, e2e.NonceSize)
				aad := env.AAD()
				ct := a.Seal(nil, nonce, pt, aad)
				buf := make([]byte, 0, size)
				return func() error { _, err := a.Open(buf[:0], nonce, ct, aad); return err }
			}},
			{OpE2ESeal, 1, func() func() error {
				nonce := make([]byte, e2e.NonceSize)
				seq := uint64(0)
				return func() error {
					seq++
					_, err := e2e.SealMessage(id, room, subject, 1, key, e2e.MsgID([8]byte{1}, seq), seq, nonce, pt)
					return err
				}
			}},
			{OpE2EOpen, 1, func() func() error {
				var e e2e.Envelope
				return func() error {
					if err := e2e.ParseEnvelopeInto(&e, room, subject, hdrs[0], env.Payload); err != nil {
						return err
					}
					if err := e.VerifySignature(); err != nil {
						return err
					}
					_, err := e.Open(key)
					return err
				}
			}},
			{OpE2EOpenBatch, batchOf, func() func() error {
				bv := e2e.NewBatchVerifier()
				parsed := make([]e2e.Envelope, batchOf)
				return func() error {
					for i := range parsed {
						if err := e2e.ParseEnvelopeInto(&parsed[i], room, subject, hdrs[i], envs[i].Payload); err != nil {
							return err
						}
						bv.Add(sk, &parsed[i])
					}
					if err := errors.Join(bv.Verify()...); err != nil {
						return err
					}
					for i := range parsed {
						if _, err := parsed[i].Open(key); err != nil {
							return err
						}
					}
					return nil
				}
			}},
		}
		for _, st := range steps {
			if err := add(st.name, size, st.per, st.newOp); err != nil {
				return out, err
			}
		}
	}
	// The control plane's per-request signature check, on the two request
	// shapes the control-plane scenario sends.
	body, _ := json.Marshal(wire.AddUserRequest{Handle: "bench-user-000000", SignPub: id.SignPub().String(), Role: "member"})
	for _, r := range []struct {
		name, method, path string
		body               []byte
	}{
		{OpHTTPSigRead, "GET", "/v1/me", nil},
		{OpHTTPSigPost, "POST", "/v1/users", body},
	} {
		if err := add(r.name, 0, 1, func() func() error {
			return httpsigVerifyOp(id, r.method, r.path, r.body)
		}); err != nil {
			return out, err
		}
	}
	if err := nonceCeilings(id, add); err != nil {
		return out, err
	}
	return out, nil
}

// nonceCeilings measures OpHTTPSigNonce on a SQLite store in a temporary
// directory (TMPDIR, where the bench also starts membershipd), and
// OpHTTPSigNonceKV on the kv store of a single embedded node there: each
// store's own UseNonce, as membershipd calls it.
func nonceCeilings(id *identity.Identity, add func(string, int, int, func() func() error) error) error {
	dir, err := os.MkdirTemp("", "unibus-bench-nonce-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "unibus.db"))
	if err != nil {
		return fmt.Errorf("%s: %w", OpHTTPSigNonce, err)
	}
	defer st.Close()
	if err := add(OpHTTPSigNonce, 0, 1, nonceOp(id, st)); err != nil {
		return err
	}
	kv, stop, err := kvNonceStore(filepath.Join(dir, "jetstream"))
	if err != nil {
		return fmt.Errorf("%s: %w", OpHTTPSigNonceKV, err)
	}
	defer stop()
	return add(OpHTTPSigNonceKV, 0, 1, nonceOp(id, kv))
}

// nonceOp returns the newOp of a nonce ceiling: verify a request, then
// record a fresh nonce for its key, for the signature window's lifetime.
func nonceOp(id *identity.Identity, st nonceStore) func() func() error {
	var next atomic.Uint64
	key := id.SignPub().String()
	prefix := randHex(4) // a rerun on the same store never replays
	return func() func() error {
		verify := httpsigVerifyOp(id, "GET", "/v1/me", nil)
		return func() error {
			if err := verify(); err != nil {
				return err
			}
			now := time.Now()
			return st.UseNonce(context.Background(), key, prefix+strconv.FormatUint(next.Add(1), 36), now, now.Add(2*api.DefaultWindow))
		}
	}
}

// noMembers is the Authorizer of the kv ceiling's node, where no member
// logs in.
type noMembers struct{}

func (noMembers) Grant(context.Context, string) (natsnode.Grant, error) {
	return natsnode.Grant{}, nil
}

// kvNonceStore starts a single embedded node with its JetStream store in
// dir (membershipd's defaults: fsync before acknowledgement, the nonce
// bucket in memory) and opens the kv store on it over an in-process
// connection, as membershipd --store kv does.
func kvNonceStore(dir string) (*kvstore.Store, func(), error) {
	internal, err := identity.Generate()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := natsnode.Start(ctx, natsnode.Options{
		Host: "127.0.0.1", Port: -1, ServerName: "bench-kv-ceiling", StoreDir: dir,
		InternalNKey: internal.NKey(), Authorizer: noMembers{},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, nil, err
	}
	nc, err := n.Connect(internal.NKey(), internal.SignNonce)
	if err != nil {
		n.Shutdown()
		return nil, nil, err
	}
	stop := func() { nc.Close(); n.Shutdown() }
	st, err := kvstore.Open(ctx, nc, kvstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		stop()
		return nil, nil, err
	}
	return st, stop, nil
}

// ceilingTag is the deployment tag of the ceilings' requests: every
// request carries one, so it is part of what is signed and checked.
var ceilingTag = wire.DeploymentTag(strings.Repeat("0", 32))

// httpsigVerifyOp signs one request the way the SDK does (with a
// deployment tag) and returns an op that verifies it the way membershipd
// does (without the store lookups and the nonce write, which the
// control-plane scenario measures).
func httpsigVerifyOp(id *identity.Identity, method, path string, body []byte) func() error {
	req, err := http.NewRequestWithContext(context.Background(), method, "http://127.0.0.1:1"+path, bytes.NewReader(body))
	if err != nil {
		return func() error { return err }
	}
	s := &httpsig.Signer{KeyID: id.SignPub().String(), Key: id.SigningKey(), Tag: ceilingTag}
	if err := s.Sign(req, body); err != nil {
		return func() error { return err }
	}
	pub := id.SignPub()
	// The key prepared once, as membershipd does (api.Server's KeyCache).
	v := &httpsig.Verifier{Keys: httpsig.NewKeyCache(1), Tag: ceilingTag, Resolve: func(_ context.Context, keyID string) (ed25519.PublicKey, error) {
		p, err := identity.ParseSignPub(keyID)
		if err != nil || p != pub {
			return nil, fmt.Errorf("unknown key")
		}
		return ed25519.PublicKey(p[:]), nil
	}}
	return func() error { _, err := v.Verify(req, body); return err }
}
