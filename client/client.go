// Package client is the unibus Go SDK: it connects a program to a unibus
// deployment — the signed HTTP control plane and the ACL'd NATS data plane,
// each with several seed URLs for fail-over — and gives it rooms, members,
// end-to-end encrypted messages and files (blobs), and the pinned keys of
// the users it seals room keys to.
//
// Everything secret stays in the process: room keys are opened from sealed
// copies with the identity's KEM key, messages are encrypted and signed
// before they leave, and received messages are verified (signature, sender
// membership, sequence) before they are decrypted. A message that fails is
// reported as an error, never delivered as plaintext.
//
// A program dials with its identity (identity.Load), then works with rooms
// by id:
//
//	c, err := client.Dial(ctx, client.Config{Identity: id, Servers: servers, NATS: seeds})
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer c.Close()
//	room, err := c.CreateRoom(ctx, "demo")
//	if err != nil {
//		log.Fatal(err)
//	}
//	if _, err := c.Send(ctx, room.ID, "", []byte("hello")); err != nil {
//		log.Fatal(err)
//	}
//
// The examples run against a server started in the same process.
//
// Results are the SDK's own types (Room, RoomInfo, User, Role, …), not the
// API's JSON bodies (package wire). The SDK keeps no state on disk but the
// known-keys file (Config.KnownKeysFile).
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/unibus/httpsig"
	"github.com/unibus/unibus/identity"
	"github.com/unibus/unibus/wire"
)

// Defaults point at a local single node.
const (
	DefaultServer = "http://127.0.0.1:8470"
	DefaultNATS   = "nats://127.0.0.1:4250"
)

// Config configures a Client.
type Config struct {
	// Identity is the user's identity (required).
	Identity *identity.Identity
	// Servers are control-plane base URLs. A request goes to the one that
	// last answered (the first at the start) and, if it cannot be reached,
	// to the next ones in turn.
	Servers []string
	// NATS are data-plane seed URLs.
	NATS []string
	// RootCAs verifies the servers' TLS certificates on both planes; nil
	// means the system pool.
	RootCAs *x509.CertPool
	// Logger receives warnings (reconnects, reported bad messages).
	Logger *slog.Logger
	// RoomCacheTTL bounds how long room state (epoch, members) is reused
	// before a send refreshes it; 0 means 2 s.
	RoomCacheTTL time.Duration
	// Timeout bounds each control-plane request; 0 means 15 s.
	Timeout time.Duration
	// KnownKeysFile is where the client pins the sign-pub of every handle
	// and the KEM key of every sign-pub it seals to, the first time it sees
	// them, and refuses later changes (KeyChangedError; format in pin.go).
	// Empty keeps the pins in memory for the Client's life only; the CLI
	// uses DefaultKnownKeysFile of its identity file.
	KnownKeysFile string
	// InsecurePlaintext lets the client use a plaintext URL (http://,
	// nats://) to a host that is not loopback. Without it Dial refuses
	// one: on the data plane a man in the middle can strip TLS from the
	// greeting a NATS server sends in clear, and on the control plane
	// answer for the server.
	InsecurePlaintext bool
}

// LoadCA reads a PEM CA bundle into a pool.
func LoadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// Client is a connection to a unibus deployment. It is safe for concurrent use.
type Client struct {
	cfg  Config
	id   *identity.Identity
	http *http.Client
	// blobHTTP has no overall timeout: blob transfers take as long as
	// their size needs; the context bounds them.
	blobHTTP *http.Client
	signer   *httpsig.Signer
	log      *slog.Logger
	pins     *knownKeys

	// server is the index in cfg.Servers of the one that last answered:
	// after a node is lost, requests stop paying its connect timeout.
	server atomic.Int32

	mu     sync.Mutex
	rooms  map[string]*roomState // by room id
	nc     *nats.Conn            // the data-plane connection, made on first use
	sender *sender               // numbers this client's messages; made with the first connection

	// closed is closed by Close: no new data-plane connection is made
	// after it, and every Listen returns.
	closed    chan struct{}
	closeOnce sync.Once

	// revoked is set once the control plane has answered that this
	// identity is revoked: the data plane is closed and not dialled again.
	revoked atomic.Bool
	cut     chan struct{} // closed when revoked is set: every Listen ends; made once Dial succeeds
	// life ends when Close is called: background work of the client's
	// (the revocation check) watches it.
	life    context.Context
	endLife context.CancelFunc
	// checking is set while a refused data-plane login is being checked
	// against the control plane; checked is when the last check began.
	checking atomic.Bool
	checked  atomic.Int64
}

// ErrClosed is returned by calls that need the data plane after Close,
// and by a Listen that was running when Close was called.
var ErrClosed = errors.New("client closed")

// Dial checks the identity against the control plane (GET /v1/me) and
// publishes the identity's KEM key if the server does not have it yet. The
// data plane is connected on first use.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Identity == nil {
		return nil, errors.New("client: an identity is required")
	}
	if len(cfg.Servers) == 0 {
		cfg.Servers = []string{DefaultServer}
	}
	if len(cfg.NATS) == 0 {
		cfg.NATS = []string{DefaultNATS}
	}
	if cfg.RoomCacheTTL == 0 {
		cfg.RoomCacheTTL = 2 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := checkPlaintext(cfg); err != nil {
		return nil, err
	}
	pins, err := newKnownKeys(cfg.KnownKeysFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	c := &Client{
		cfg: cfg, id: cfg.Identity, log: cfg.Logger,
		http:     &http.Client{Transport: tr, Timeout: cfg.Timeout},
		blobHTTP: &http.Client{Transport: tr},
		signer:   &httpsig.Signer{KeyID: cfg.Identity.SignPub().String(), Key: cfg.Identity.SigningKey()},
		rooms:    map[string]*roomState{},
		pins:     pins,
		closed:   make(chan struct{}),
	}
	c.life, c.endLife = context.WithCancel(context.Background())
	// Every request signature is bound to the deployment the servers
	// announce, so a request signed here is refused by any other.
	if c.signer.Tag, err = c.deploymentTag(ctx); err != nil {
		return nil, err
	}
	me, err := c.Me(ctx)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(me.KEMPub, c.id.KEMPub().Bytes()) {
		if _, err := c.Register(ctx); err != nil {
			return nil, fmt.Errorf("publish KEM key: %w", err)
		}
	}
	// From here on, an answer that the identity is revoked closes the data
	// plane for good (markRevoked).
	c.cut = make(chan struct{})
	return c, nil
}

// deploymentTag asks the control plane (/healthz, unsigned) for its
// deployment id and protocol.
func (c *Client) deploymentTag(ctx context.Context) (string, error) {
	resp, err := c.roundTrip(ctx, c.http, func(base string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, "GET", base+"/healthz", nil)
	})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var h wire.Health
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&h); err != nil {
		return "", fmt.Errorf("read the server's health: %w", err)
	}
	if h.Protocol != wire.Protocol {
		return "", fmt.Errorf("the server speaks protocol %q, this client %q: upgrade the older one", h.Protocol, wire.Protocol)
	}
	if h.Deployment == "" {
		return "", fmt.Errorf("the server is not ready (%s): try again", h.Error)
	}
	return wire.DeploymentTag(h.Deployment), nil
}

// checkPlaintext refuses plaintext URLs to hosts that are not loopback,
// unless the configuration opts out.
func checkPlaintext(cfg Config) error {
	if cfg.InsecurePlaintext {
		return nil
	}
	for _, u := range cfg.Servers {
		if p, err := url.Parse(u); err == nil && p.Scheme == "http" && !loopback(p.Hostname()) {
			return fmt.Errorf("control plane %s: plaintext http to a host that is not loopback; use https (and --ca), or opt out explicitly", u)
		}
	}
	for _, u := range cfg.NATS {
		p, err := url.Parse(u)
		if err != nil {
			continue // nats.Connect reports it
		}
		if p.Scheme != "tls" && cfg.RootCAs == nil && !loopback(p.Hostname()) {
			return fmt.Errorf("data plane %s: plaintext nats:// to a host that is not loopback (a man in the middle can strip TLS); use tls:// or --ca, or opt out explicitly", u)
		}
	}
	return nil
}

// loopback reports whether host is "localhost" or a loopback IP.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Identity returns the client's identity.
func (c *Client) Identity() *identity.Identity { return c.id }

// Close closes the data-plane connection and the idle control-plane
// connections, and ends every Listen (with ErrClosed). The client cannot
// be used for the data plane afterwards.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		if c.closed != nil {
			close(c.closed)
		}
		if c.endLife != nil {
			c.endLife()
		}
	})
	c.dropConn()
	c.http.CloseIdleConnections()
}

// isClosed reports whether Close has been called.
func (c *Client) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// APIError is an error answered by the control plane.
type APIError struct {
	// Status is the HTTP status.
	Status int
	// Code is the API's error code (package wire's Code constants), or
	// "http" when the answer was not the API's JSON error.
	Code string
	// Message is the server's explanation.
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code)
}

// Is makes errors.Is(err, ErrRevoked) true for the server's refusal of an
// unknown or revoked signer.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrRevoked:
		return e.Status == http.StatusUnauthorized && e.Code == wire.CodeUnknownKey
	case ErrQuotaExceeded:
		return e.Code == wire.CodeQuotaExceeded
	}
	return false
}

// ErrRevoked is the server's answer to an identity that is revoked or not
// registered: nothing it asks will succeed until an admin adds it again.
// Listen ends with it, and the data-plane connection stops reconnecting.
var ErrRevoked = errors.New("this identity is revoked or not registered")

// ErrRemoved ends a Listen whose identity is no longer a member of the
// room (removed, or the room is gone).
var ErrRemoved = errors.New("no longer a member of the room")

// IsCode reports whether err is an APIError with this wire code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// readRetryFor bounds how long a read the server answered 503
// unavailable is asked again: a cluster electing a new leader for a bucket
// whose leader was lost answers reads 503 for a few seconds (fail-over
// p99 16 s measured).
const readRetryFor = 30 * time.Second

// do sends one signed JSON request and decodes the JSON answer into out.
// A read (GET) answered 503 unavailable is asked again, signed afresh,
// with backoff, for up to readRetryFor: it changes nothing. A change is
// never resent (it may have taken effect; its error says so).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		err := c.doOnce(ctx, method, path, in, out)
		if method != http.MethodGet || !IsCode(err, wire.CodeUnavailable) || time.Since(start) > readRetryFor {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff(attempt)):
		}
	}
}

func (c *Client) doOnce(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	resp, err := c.roundTrip(ctx, c.http, func(base string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return req, c.signer.Sign(req, body)
	})
	if err != nil {
		return err
	}
	err = decodeResponse(resp, out)
	if errors.Is(err, ErrRevoked) {
		c.markRevoked(err)
	}
	return err
}

// roundTrip sends a request built (and signed) by build for each server in
// turn, starting with the one that last answered, moving on only when a
// server cannot be reached; a request that reached a server is never
// resent (it was signed with a one-time nonce and may have taken effect).
func (c *Client) roundTrip(ctx context.Context, hc *http.Client, build func(base string) (*http.Request, error)) (*http.Response, error) {
	var lastErr error
	n, first := len(c.cfg.Servers), int(c.server.Load())
	for k := range n {
		i := (first + k) % n
		req, err := build(strings.TrimRight(c.cfg.Servers[i], "/"))
		if err != nil {
			return nil, fmt.Errorf("build request: %w", err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		c.server.Store(int32(i))
		return resp, nil
	}
	return nil, fmt.Errorf("control plane unreachable (%s): %w", strings.Join(c.cfg.Servers, ", "), lastErr)
}

func decodeResponse(resp *http.Response, out any) error {
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 300 {
		var we wire.Error
		if json.Unmarshal(raw, &we) == nil && we.Error.Code != "" {
			return &APIError{Status: resp.StatusCode, Code: we.Error.Code, Message: we.Error.Message}
		}
		return &APIError{Status: resp.StatusCode, Code: "http", Message: strings.TrimSpace(string(raw))}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}
