package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/unibus/subjects"
)

// The data-plane connection: made on first use and logged in with the
// identity's nkey. Its permissions are the same whatever the caller's
// rooms (its own ingress and deliveries), so membership changes need no
// new login. With TLS configured (a tls:// URL or RootCAs), TLS is
// required whatever the server's greeting says.

// conn returns the data-plane connection, connecting on first use.
func (c *Client) conn() (*nats.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isClosed() {
		return nil, ErrClosed
	}
	if c.revoked.Load() {
		return nil, ErrRevoked
	}
	if c.nc != nil && !c.nc.IsClosed() {
		return c.nc, nil
	}
	if c.sender == nil {
		c.sender = &sender{seqs: map[string]uint64{}}
		if _, err := rand.Read(c.sender.stream[:]); err != nil {
			return nil, err
		}
	}
	opts := []nats.Option{
		nats.Name("unibus-sdk"),
		nats.Nkey(c.id.NKey(), c.id.SignNonce),
		nats.CustomInboxPrefix(subjects.InboxPrefix(c.id.SignPub().String())),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			c.invalidateRooms()
			if err != nil {
				c.log.Info("data plane disconnected", "err", err)
			}
			c.loginRefused(err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.invalidateRooms()
			c.log.Info("data plane reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if !c.revoked.Load() {
				c.log.Warn("data plane error", "err", err)
			}
			c.loginRefused(err)
		}),
	}
	if c.cfg.RootCAs != nil || hasTLSURL(c.cfg.NATS) {
		opts = append(opts, nats.Secure(&tls.Config{RootCAs: c.cfg.RootCAs, MinVersion: tls.VersionTLS12}))
	}
	nc, err := nats.Connect(strings.Join(c.cfg.NATS, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect data plane (%s): %w", strings.Join(c.cfg.NATS, ", "), err)
	}
	c.nc = nc
	return nc, nil
}

func hasTLSURL(urls []string) bool {
	for _, u := range urls {
		if strings.HasPrefix(u, "tls://") {
			return true
		}
	}
	return false
}

// loginRefused checks, when the data plane refused a login (err is an
// authorization violation), whether the control plane says this identity
// is revoked; if so the connection is closed for good instead of
// reconnecting forever, and every Listen ends with ErrRevoked. A check
// runs at most every few seconds, in the background: the handlers that
// call it must not block.
func (c *Client) loginRefused(err error) {
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") || c.revoked.Load() {
		return
	}
	now := time.Now().UnixNano()
	if now-c.checked.Load() < int64(revokedCheckEvery) || !c.checking.CompareAndSwap(false, true) {
		return
	}
	c.checked.Store(now)
	go func() {
		defer c.checking.Store(false)
		life := c.life
		if life == nil {
			life = context.Background()
		}
		ctx, cancel := context.WithTimeout(life, 10*time.Second)
		defer cancel()
		_ = c.do(ctx, "GET", "/v1/me", nil, nil) // a revocation marks the client
	}()
}

// markRevoked is called when the control plane answered that this identity
// is revoked or not registered: the data-plane connection is closed and
// not made again, and every Listen ends with ErrRevoked.
func (c *Client) markRevoked(err error) {
	if c.cut == nil || !c.revoked.CompareAndSwap(false, true) {
		return // a client still being dialled, or already marked
	}
	c.log.Error("this identity is revoked or not registered: the data plane is closed", "err", err)
	close(c.cut)
	c.dropConn()
}

// revokedCheckEvery bounds how often a refused login is checked.
const revokedCheckEvery = 2 * time.Second

// dropConn closes the data-plane connection (Close).
func (c *Client) dropConn() {
	c.mu.Lock()
	nc := c.nc
	c.nc = nil
	c.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
}

// invalidateRooms makes the next send refresh room state: a reconnect may
// follow a membership change that rotated a room.
func (c *Client) invalidateRooms() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, st := range c.rooms {
		ns := *st
		ns.fetched = time.Time{}
		c.rooms[id] = &ns
	}
}

// retryable reports whether a data-plane error may pass by itself (a
// timeout, a reconnect, a stream leader being elected), including a 503
// answer of the relay (wire.RelayUnavailable: the control plane or the
// stream cannot answer now; retry with the same message id) or of the
// stream it passes on.
func retryable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 503 {
		return true
	}
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, jetstream.ErrTooManyStalledMsgs)
}

// backoff is the wait before retry attempt+1: from 50 ms, doubling, at
// most a second.
func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 5)
	return min(d, time.Second)
}
