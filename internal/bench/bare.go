package bench

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/internal/api"
	"github.com/unibus/unibus/internal/store/sqlite"
	"github.com/unibus/unibus/wire"
)

// BareHTTPSpec describes a bare signed-request server: the HTTP side of
// the signed-request target's bound. It answers GET /v1/me with Me after
// verifying the request's signature (a prepared key, and the deployment
// tag, as membershipd) and recording its nonce in a store of kind Store,
// in a fresh temporary directory, and does nothing else: no user lookup,
// no routing beyond the one path, no metrics, no logging. Like
// membershipd it announces its protocol and its deployment id (its
// store's) on GET /healthz, where the SDK reads the tag to sign with.
type BareHTTPSpec struct {
	Store   string          `json:"store"`    // "sqlite" or "kv"
	SignPub string          `json:"sign_pub"` // hex: the one key it accepts
	Me      json.RawMessage `json:"me"`       // the response body
}

// BareHTTPFlag is the hidden unibus-bench flag that makes the command
// serve a bare signed-request server (a JSON BareHTTPSpec) instead of
// measuring, in a process of its own as membershipd runs.
const BareHTTPFlag = "serve-bare-http"

// nonceStore is what the bare server and the nonce ceilings need of a
// store.
type nonceStore interface {
	UseNonce(ctx context.Context, keyID, nonce string, now, expires time.Time) error
	DeploymentID(ctx context.Context) (string, error)
}

// bareServer is a running bare server in this process.
type bareServer struct {
	url  string
	stop func()
}

func startBareServer(s BareHTTPSpec) (*bareServer, error) {
	raw, err := hex.DecodeString(s.SignPub)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("bare server: sign_pub is not 32 bytes of hex")
	}
	pub := ed25519.PublicKey(raw)
	dir, err := os.MkdirTemp("", "unibus-bench-bare-")
	if err != nil {
		return nil, err
	}
	var st nonceStore
	var closeStore func()
	switch s.Store {
	case "sqlite":
		db, err := sqlite.Open(context.Background(), filepath.Join(dir, "unibus.db"))
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		st, closeStore = db, func() { db.Close() }
	case "kv":
		kv, stop, err := kvNonceStore(filepath.Join(dir, "jetstream"))
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		st, closeStore = kv, stop
	default:
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bare server: store must be sqlite or kv, not %q", s.Store)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	deployment, err := st.DeploymentID(ctx)
	cancel()
	if err != nil {
		closeStore()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bare server: deployment id: %w", err)
	}
	health, err := json.Marshal(wire.Health{Status: "ok", Node: "bare", Protocol: wire.Protocol, Deployment: deployment,
		Posture: wire.Posture{Store: s.Store}})
	if err != nil {
		closeStore()
		os.RemoveAll(dir)
		return nil, err
	}
	v := &httpsig.Verifier{Keys: httpsig.NewKeyCache(1), Tag: wire.DeploymentTag(deployment), Resolve: func(_ context.Context, keyID string) (ed25519.PublicKey, error) {
		if keyID != s.SignPub {
			return nil, errors.New("unknown key")
		}
		return pub, nil
	}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(health)
	})
	mux.HandleFunc("GET /v1/me", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBodyBytes))
		if err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		vr, err := v.Verify(r, body)
		if err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		now := time.Now()
		if err := st.UseNonce(r.Context(), vr.KeyID, vr.Nonce, now, now.Add(2*api.DefaultWindow)); err != nil {
			http.Error(w, "nonce", http.StatusConflict)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(s.Me)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		closeStore()
		os.RemoveAll(dir)
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return &bareServer{url: "http://" + ln.Addr().String(), stop: func() {
		srv.Close()
		closeStore()
		os.RemoveAll(dir)
	}}, nil
}

// ServeBareHTTP runs the bare server spec (a JSON BareHTTPSpec) describes,
// writes "ready <URL>" to w, and serves until r reaches its end (the parent
// closed the pipe, or died) or ctx ends.
func ServeBareHTTP(ctx context.Context, spec string, r io.Reader, w io.Writer) error {
	var s BareHTTPSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		return fmt.Errorf("bare server spec: %w", err)
	}
	srv, err := startBareServer(s)
	if err != nil {
		return err
	}
	defer srv.stop()
	return serveUntilEOF(ctx, srv.url, r, w)
}

// startBare starts the bare server: self, run with BareHTTPFlag, or in
// this process when self is empty.
func startBare(ctx context.Context, self string, s BareHTTPSpec) (*child, error) {
	if self == "" {
		srv, err := startBareServer(s)
		if err != nil {
			return nil, err
		}
		return &child{url: srv.url, stop: srv.stop}, nil
	}
	spec, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return startSelf(ctx, self, BareHTTPFlag, string(spec), "bare signed-request server")
}
