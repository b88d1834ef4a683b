// Package api is membershipd's HTTP control plane: the signed JSON API under
// /v1/, /healthz and /metrics. Every /v1/ request must carry an RFC 9421
// signature by an active user's key, bound to this deployment, with a
// fresh nonce; the package decides who may do what (admin, room owner,
// member) and keeps the data plane in step: it makes and deletes the
// listeners members read rooms with, tells the relay when a room changed,
// and closes the live connections of revoked users.
//
// It holds no key material: room keys arrive sealed and signed by clients,
// and are checked for shape and signature before they are stored.
package api

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/internal/blobstore"
	"github.com/unibus/unibus/internal/metrics"
	"github.com/unibus/unibus/internal/quota"
	"github.com/unibus/unibus/internal/store"
	"github.com/unibus/unibus/wire"
)

// DataPlane is what the control plane needs from the NATS side
// (internal/dataplane, wired by the daemon).
type DataPlane interface {
	// Kick closes a user's live connections on this node (revocation).
	Kick(nkeyPub string) (int, error)
	// CreateRoomStream creates the stream of a room that has one of its
	// own; it never changes an existing stream.
	CreateRoomStream(ctx context.Context, room string, maxAge time.Duration, maxBytes int64) error
	// RoomChanged tells the relay on this node, before the API answers,
	// that a room's members, epoch or pending flag changed (other nodes
	// learn it from the store's change feed).
	RoomChanged(room string)
	// MemberLeft deletes the member's listeners in the room.
	MemberLeft(ctx context.Context, room store.Room, member string) error
	// CreateListener and DeleteListener make and delete a consumer that
	// delivers a room's messages to a member.
	CreateListener(ctx context.Context, room store.Room, member string, req wire.ListenRequest) (wire.Listener, error)
	DeleteListener(ctx context.Context, room store.Room, member, name string) error
}

// Errors a DataPlane returns that the API answers as the client's fault.
var (
	// ErrBadListen is a listen request the data plane refuses (400).
	ErrBadListen = errors.New("bad listen request")
	// ErrTooManyListeners is a member over its listener cap (429).
	ErrTooManyListeners = errors.New("too many listeners")
	// ErrNoListener is a listener that is not the caller's (404).
	ErrNoListener = errors.New("no such listener of yours")
	// ErrStreamExists is a new room whose stream exists with other
	// limits: another room's id (409).
	ErrStreamExists = errors.New("a stream with this room id exists")
)

// DefaultWindow is the default allowed clock skew of a signature's created.
const DefaultWindow = 60 * time.Second

// Options configures a Server.
type Options struct {
	Store     store.Store
	DataPlane DataPlane
	Metrics   *metrics.Metrics
	Logger    *slog.Logger
	// Window is the ±window for 'created'; nonces are kept for twice it.
	Window time.Duration
	// Now is the clock; nil means time.Now. Tests pass a fake.
	Now func() time.Time
	// Health reports the node's health and posture for /healthz.
	Health func(ctx context.Context) wire.Health
	// RoomMaxAge and RoomMaxBytes are the server's retention caps and
	// defaults for room streams (0 = unlimited).
	RoomMaxAge   time.Duration
	RoomMaxBytes int64
	// Blobs stores encrypted blobs; nil disables the blob endpoints.
	Blobs blobstore.Store
	// BlobMaxSize bounds one blob's ciphertext; 0 means DefaultBlobMaxSize.
	BlobMaxSize int64
	// UserRates bounds each non-admin user's signed requests (zero values:
	// no limit; see DefaultUserRates).
	UserRates UserRates
	// DiskLow, if set, reports whether storing need more bytes would take
	// the server's free disk space below its reserve: such an upload is
	// refused with 507 before its body is read.
	DiskLow func(need int64) bool
	// RoomQuota and BlobQuota bound the rooms each user creates and the
	// blob bytes each user uploads (nil: none).
	RoomQuota, BlobQuota *quota.Meter
	// ChangeQuota bounds each non-admin user's signed changes per UTC day
	// (nil: none): every change may append to the audit log, which is
	// never pruned, so a rate alone does not bound what a user adds to it.
	ChangeQuota *quota.Meter
	// OnChange, if set, is told each authenticated change's outcome (nil,
	// or the handler's error) and how long the handler took: /healthz
	// watches for changes the store keeps failing.
	OnChange func(err error, took time.Duration)
}

// DefaultBlobMaxSize is the default per-blob size limit (1 GiB).
const DefaultBlobMaxSize = 1 << 30

// Server is the HTTP control plane.
type Server struct {
	o   Options
	log *slog.Logger
	mux *http.ServeMux
	// keys keeps signers' public keys prepared for verification. It only
	// saves work: every request still resolves its key through the store
	// (unknown and revoked users are refused there), and a key is prepared
	// only after that lookup found an active user.
	keys *httpsig.KeyCache
	// limits holds each user's request-rate buckets.
	limits *userLimits
	// tag is the deployment's signature tag, read from the store once.
	tagMu sync.Mutex
	tag   string
}

// preparedKeys bounds Server.keys: a prepared key is 216 bytes (plus
// the map entry), so the cache holds at most about 1 MiB.
const preparedKeys = 4096

// New builds a Server.
func New(o Options) (*Server, error) {
	if o.Store == nil || o.DataPlane == nil || o.Metrics == nil || o.Health == nil {
		return nil, errors.New("api: Store, DataPlane, Metrics and Health are required")
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.BlobMaxSize <= 0 {
		o.BlobMaxSize = DefaultBlobMaxSize
	}
	s := &Server{o: o, log: o.Logger, mux: http.NewServeMux(), keys: httpsig.NewKeyCache(preparedKeys),
		limits: newUserLimits(o.UserRates, o.Now)}
	s.routes()
	return s, nil
}

// Handler returns the root handler.
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.Handle("GET /metrics", s.o.Metrics.Handler())
	s.handle("GET /v1/me", s.getMe)
	s.handle("PUT /v1/me/kem-key", s.putKEMKey)
	s.handle("POST /v1/users", s.addUser)
	s.handle("GET /v1/users", s.listUsers)
	s.handle("GET /v1/users/{user}", s.getUser)
	s.handle("POST /v1/users/{user}/revoke", s.revokeUser)
	s.handle("POST /v1/rooms", s.createRoom)
	s.handle("GET /v1/rooms", s.listRooms)
	s.handle("GET /v1/rooms/{room}", s.getRoom)
	s.handle("POST /v1/rooms/{room}/members", s.addMember)
	s.handle("DELETE /v1/rooms/{room}/members/{user}", s.removeMember)
	s.handle("POST /v1/rooms/{room}/rotate", s.rotate)
	s.handle("GET /v1/rooms/{room}/keys", s.getKeys)
	s.handle("POST /v1/rooms/{room}/listeners", s.createListener)
	s.handle("DELETE /v1/rooms/{room}/listeners/{name}", s.deleteListener)
	if s.o.Blobs != nil {
		s.handleStream("PUT /v1/rooms/{room}/blobs/{id}", s.putBlob)
		s.handle("GET /v1/rooms/{room}/blobs/{id}", s.getBlob)
		s.handle("GET /v1/rooms/{room}/blobs/{id}/info", s.statBlob)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.o.Metrics.Requests.WithLabelValues("unknown", "404").Inc()
		writeError(w, &apiError{http.StatusNotFound, wire.CodeNotFound, "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
}

// caller is the authenticated user of a request.
type caller struct {
	user   store.User
	key    identity.SignPub
	body   []byte // the body, except on streaming endpoints
	digest []byte // on streaming endpoints: the signed sha-256 of the body
	// request is the hex sha-256 of the signature base (for the audit log).
	request string
}

func (c *caller) isAdmin() bool { return c.user.Role == store.RoleAdmin }

type handlerFunc func(w http.ResponseWriter, r *http.Request, c *caller) error

// Request deadlines: a small body must arrive within bodyTimeout (no
// slow-body attacks); a blob transfer gets blobTimeout.
const (
	bodyTimeout = 30 * time.Second
	blobTimeout = 2 * time.Hour
)

// handle registers a signed /v1 endpoint: read the bounded body, verify the
// signature, record the nonce (fail closed), then run h. Every failure goes
// through classify, so the status codes are decided in one place.
func (s *Server) handle(pattern string, h handlerFunc) { s.register(pattern, false, h) }

// handleStream registers a signed endpoint whose body the handler streams
// (blob upload): the signature covers the body's Content-Digest, and the
// handler must check the streamed bytes against c.digest.
func (s *Server) handleStream(pattern string, h handlerFunc) { s.register(pattern, true, h) }

func (s *Server) register(pattern string, streaming bool, h handlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		rc := http.NewResponseController(w)
		if streaming {
			rc.SetReadDeadline(time.Now().Add(blobTimeout))
			rc.SetWriteDeadline(time.Now().Add(blobTimeout))
		} else {
			rc.SetReadDeadline(time.Now().Add(bodyTimeout))
			rc.SetWriteDeadline(time.Now().Add(bodyTimeout))
		}
		err := s.serveSigned(rec, r, streaming, h)
		if err != nil {
			ae := classify(err)
			if ae.status == http.StatusInternalServerError {
				s.log.Error("request failed", "route", pattern, "err", err)
			} else if ae.code == wire.CodeOutcomeUnknown {
				s.o.Metrics.Denials.WithLabelValues(ae.code).Inc()
				s.log.Warn("change not confirmed by the store: its outcome is unknown", "route", pattern, "remote", r.RemoteAddr, "err", err)
			} else if ae.status == http.StatusServiceUnavailable {
				s.o.Metrics.Denials.WithLabelValues(ae.code).Inc()
				s.log.Warn("request denied: unavailable", "route", pattern, "remote", r.RemoteAddr, "err", err)
			} else if ae.status == http.StatusUnauthorized || ae.status == http.StatusForbidden || ae.code == wire.CodeReplay {
				s.o.Metrics.Denials.WithLabelValues(ae.code).Inc()
				s.log.Info("request denied", "route", pattern, "code", ae.code, "remote", r.RemoteAddr)
			}
			writeError(rec, ae)
		}
		s.o.Metrics.Requests.WithLabelValues(pattern, itoa(rec.status)).Inc()
	})
}

func (s *Server) serveSigned(w http.ResponseWriter, r *http.Request, streaming bool, h handlerFunc) error {
	var body []byte
	if !streaming {
		var err error
		if body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes)); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return err
			}
			return badRequest("could not read the request body")
		}
	}
	c := &caller{body: body}
	tag, err := s.deploymentTag(r.Context())
	if err != nil {
		return err
	}
	var lookupErr error
	v := httpsig.Verifier{
		Window: s.o.Window,
		Now:    s.o.Now,
		Keys:   s.keys,
		Tag:    tag,
		Resolve: func(ctx context.Context, keyID string) (ed25519.PublicKey, error) {
			pub, err := identity.ParseSignPub(keyID)
			if err != nil {
				return nil, err
			}
			u, err := observe(s, "get_user", func() (store.User, error) { return s.o.Store.GetUser(ctx, keyID) })
			if err != nil {
				lookupErr = err
				return nil, err
			}
			if u.Status != store.StatusActive {
				return nil, store.ErrRevoked
			}
			c.user, c.key = u, pub
			return ed25519.PublicKey(pub[:]), nil
		},
	}
	var vr httpsig.Verified
	if streaming {
		vr, c.digest, err = v.VerifyStreaming(r)
	} else {
		vr, err = v.Verify(r, body)
	}
	if err != nil {
		// A store failure while resolving the key is unavailability, not
		// an unknown key: deny with 503 (fail closed) so operators see it.
		if lookupErr != nil && !errors.Is(lookupErr, store.ErrNotFound) {
			return errors.Join(store.ErrUnavailable, lookupErr)
		}
		return err
	}
	c.request = requestDigest(vr.BaseDigest)
	// The rate is checked once the signature verified (so nobody can use
	// up another user's allowance) and before the nonce is written (so a
	// flood costs no store write).
	change := r.Method != http.MethodGet && r.Method != http.MethodHead
	if !c.isAdmin() && !s.limits.allow(vr.KeyID, change) {
		w.Header().Set("Retry-After", "1")
		s.o.Metrics.Denials.WithLabelValues(wire.CodeRateLimited).Inc()
		return errRateLimited(change, s.o.UserRates)
	}
	now := s.o.Now()
	if change && !c.isAdmin() {
		if err := s.dailyChange(r.Context(), w, c, vr.KeyID, now); err != nil {
			return err
		}
	}
	if _, err := observe(s, "use_nonce", func() (struct{}, error) {
		return struct{}{}, s.o.Store.UseNonce(r.Context(), vr.KeyID, vr.Nonce, now, now.Add(2*s.o.Window))
	}); err != nil {
		if errors.Is(err, store.ErrReplay) {
			s.o.Metrics.Replays.Inc()
			return err
		}
		return errors.Join(store.ErrUnavailable, err)
	}
	began := time.Now()
	err = h(w, r, c)
	if change && s.o.OnChange != nil {
		s.o.OnChange(err, time.Since(began))
	}
	if err != nil {
		if change {
			return &changeErr{err}
		}
		return err
	}
	return nil
}

// deploymentTag is the tag every request signature must carry; the store
// makes the deployment id the first time, and it never changes. An error
// denies the request (fail closed).
func (s *Server) deploymentTag(ctx context.Context) (string, error) {
	s.tagMu.Lock()
	defer s.tagMu.Unlock()
	if s.tag != "" {
		return s.tag, nil
	}
	id, err := s.o.Store.DeploymentID(ctx)
	if err != nil {
		return "", errors.Join(store.ErrUnavailable, err)
	}
	s.tag = wire.DeploymentTag(id)
	return s.tag, nil
}

// observe runs a store call and records its latency.
func observe[T any](s *Server, op string, f func() (T, error)) (T, error) {
	start := time.Now()
	v, err := f()
	s.o.Metrics.StoreLatency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	return v, err
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func itoa(n int) string {
	return string([]byte{byte('0' + n/100), byte('0' + n/10%10), byte('0' + n%10)})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	h := s.o.Health(r.Context())
	status := http.StatusOK
	if h.Status != "ok" {
		status = http.StatusServiceUnavailable
	}
	s.o.Metrics.Requests.WithLabelValues("GET /healthz", itoa(status)).Inc()
	writeJSON(w, status, h)
}

// kick closes the user's live data-plane connections so that they log in
// again with the ACL that matches the store. Failure is logged: the store
// already denies, and the connection's next login will too.
func (s *Server) kick(signPub string) {
	p, err := identity.ParseSignPub(signPub)
	if err != nil {
		return
	}
	n, err := s.o.DataPlane.Kick(p.NKey())
	if err != nil {
		s.log.Warn("closing user's connections failed", "user", p.Short(), "err", err)
	}
	if n > 0 {
		s.o.Metrics.Kicked.Add(float64(n))
		s.log.Info("closed user's data-plane connections", "user", p.Short(), "count", n)
	}
}
