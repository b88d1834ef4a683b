package redteam

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/unibus/unibus/client"
	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/subjects"
)

// TLS stripping on the data plane. A NATS server greets every client in
// clear (INFO), and a client that does not insist on TLS follows what the
// greeting says: a man in the middle that deletes tls_required gets the
// client's login and traffic in clear while it speaks TLS to the server.
// The SDK refuses a plaintext nats:// URL to a host that is not loopback,
// and insists on TLS whenever it has a CA (--ca).

// noTLS is how nats.go refuses a server that offers no TLS when TLS is
// required (nats.ErrSecureConnWanted).
const noTLS = "secure connection not available"

// plaintextURLs runs the TLS-stripping rows.
func (e *env) plaintextURLs(add func(id, attack, tool, expect string, ok bool, failV Verdict, observed string)) {
	// T40, T41: a nats:// URL to a host that is not loopback, without a
	// CA. A listener on that host counts what reaches it.
	target, accepted := e.nonLoopbackListener()
	refusal := "plaintext nats:// to a host that is not loopback"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, client.Config{Identity: e.alice.id, Servers: []string{e.bus.HTTPURL}, NATS: []string{target}})
	add("T40", "the SDK given a plaintext `nats://` data-plane URL to a host that is not loopback, no CA", "the SDK (client.Dial)",
		"refused before connecting: "+refusal, err != nil && strings.Contains(err.Error(), refusal) && accepted() == 0,
		failOpenIf(err == nil || accepted() > 0),
		fmt.Sprintf("Dial: %s; connections reaching the host: %d", firstMatch(errText(err), refusal, "connect"), accepted()))

	u := harness.Run(e.t, e.dir, []string{"UNIBUS_SERVER=" + e.bus.HTTPURL, "UNIBUS_NATS=" + target, "UNIBUS_IDENTITY=" + e.alice.idFile},
		"", "unibus", "send", "room-a", "--topic", "plain", "over plaintext")
	add("T41", "the unibus CLI given a plaintext `nats://` data-plane URL to a host that is not loopback, no --ca", "unibus send",
		"refused before connecting: "+refusal, u.Code != 0 && strings.Contains(u.Stderr, refusal) && accepted() == 0,
		failOpenIf(u.Code == 0 || accepted() > 0),
		fmt.Sprintf("exit %d: %s; connections reaching the host: %d", u.Code, firstMatch(u.Stderr, refusal), accepted()))

	// T42-T44: a man in the middle on loopback that strips TLS.
	m := e.startMITM()
	mitmURL := "nats://" + m.ln.Addr().String()
	e.norm.add(m.ln.Addr().String(), "{mitm}")

	// T42 (control): a client that does not insist on TLS is fooled.
	r := e.run(30*time.Second, nil, e.tl.nats, "--no-context", "-s", mitmURL, "--nkey", e.alice.idFile,
		"--inbox-prefix", subjects.InboxPrefix(e.alice.hex), "--timeout", controlTimeout, "request", "--raw", subjects.Ingress(e.alice.hex, e.roomA, "mitm"), "x")
	answered := strings.Contains(r.stdout, `"err_code":60002`)
	sawLogin := m.sawClear("CONNECT ")
	add("T42", "control: a client that does not insist on TLS (nats CLI, `nats://` URL, no --tlsca) through a man in the middle that deletes `tls_required` from INFO",
		"nats request via a MITM (Go)", "fooled: logs in and talks in clear through the MITM (this is what the SDK must refuse)",
		r.code == 0 && answered && sawLogin, FailControl,
		fmt.Sprintf("exit %d; the relay's answer came back=%v; CONNECT seen in clear=%v", r.code, answered, sawLogin))

	// T43: the SDK with the deployment's CA.
	m.reset()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	c, err := client.Dial(ctx2, client.Config{Identity: e.alice.id, Servers: []string{e.bus.HTTPURL}, NATS: []string{mitmURL}, RootCAs: e.ca.Pool})
	if err == nil {
		defer c.Close()
		_, err = c.Send(ctx2, e.roomA, "mitm", []byte("through the MITM"))
	}
	leaked := m.sawClear("CONNECT ") || m.sawClear("PUB ")
	stored := e.storedOn(e.roomA, "mitm")
	add("T43", "the SDK with --ca and a `nats://` URL through the same man in the middle", "the SDK (client.Send) via a MITM (Go)",
		"no session: nats: "+noTLS+"; nothing sent in clear, nothing stored",
		err != nil && strings.Contains(err.Error(), noTLS) && !leaked && !stored, failOpenIf(err == nil || leaked || stored),
		fmt.Sprintf("%s; CONNECT or PUB in clear=%v; stored=%v", firstMatch(errText(err), noTLS), leaked, stored))

	// T44: the unibus CLI with --ca.
	m.reset()
	u = harness.Run(e.t, e.dir, e.cliEnv(e.alice, "UNIBUS_NATS="+mitmURL), "", "unibus", "send", "room-a", "--topic", "mitm", "through the MITM")
	leaked = m.sawClear("CONNECT ") || m.sawClear("PUB ")
	stored = e.storedOn(e.roomA, "mitm")
	add("T44", "the unibus CLI with --ca and a `nats://` URL through the same man in the middle", "unibus send via a MITM (Go)",
		"refused: "+noTLS+"; nothing sent in clear, nothing stored",
		u.Code != 0 && strings.Contains(u.Stderr, noTLS) && !leaked && !stored, failOpenIf(u.Code == 0 || leaked || stored),
		fmt.Sprintf("exit %d: %s; CONNECT or PUB in clear=%v; stored=%v", u.Code, firstMatch(u.Stderr, noTLS), leaked, stored))
}

// nonLoopbackListener listens on the machine's first address that is not
// loopback and returns its nats:// URL and a count of the connections it
// accepted. Without such an address it returns a TEST-NET-1 address
// (RFC 5737) with no listener: the refusal needs no connection.
func (e *env) nonLoopbackListener() (string, func() int) {
	var n atomic.Int32
	count := func() int { return int(n.Load()) }
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(ipn.IP.String(), "0"))
		if err != nil {
			continue
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				n.Add(1)
				c.Close()
			}
		}()
		e.t.Cleanup(func() { ln.Close(); <-done })
		e.norm.add(ln.Addr().String(), "{non-loopback}")
		return "nats://" + ln.Addr().String(), count
	}
	e.norm.add("192.0.2.1:14222", "{non-loopback}")
	return "nats://192.0.2.1:14222", count
}

// mitm is a man in the middle on the data plane: it speaks TLS to the
// server, passes the server's greeting to the client with tls_required
// and tls_available deleted, and relays the client's bytes in clear,
// recording them.
type mitm struct {
	e     *env
	ln    net.Listener
	mu    sync.Mutex
	clear *harness.LockedBuffer // what clients sent in clear since the last reset
	conns []net.Conn
	wg    sync.WaitGroup
}

func (e *env) startMITM() *mitm {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	m := &mitm{e: e, ln: ln, clear: &harness.LockedBuffer{}}
	m.wg.Go(m.serve)
	e.t.Cleanup(m.close)
	return m
}

func (m *mitm) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		m.track(c)
		m.wg.Go(func() { m.relay(c) })
	}
}

func (m *mitm) track(c net.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns = append(m.conns, c)
}

// buffer is where the current connections' clear text goes.
func (m *mitm) buffer() *harness.LockedBuffer {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.clear
}

// relay serves one client.
func (m *mitm) relay(c net.Conn) {
	defer c.Close()
	rec := m.buffer()
	up, err := net.DialTimeout("tcp", strings.TrimPrefix(m.e.bus.NATSURL, "tls://"), 5*time.Second)
	if err != nil {
		return
	}
	m.track(up)
	defer up.Close()
	up.SetReadDeadline(time.Now().Add(5 * time.Second))
	info, err := bufio.NewReader(up).ReadString('\n')
	if err != nil || !strings.HasPrefix(info, "INFO ") {
		return
	}
	up.SetReadDeadline(time.Time{})
	var fields map[string]any
	if json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(info, "INFO "))), &fields) != nil {
		return
	}
	delete(fields, "tls_required")
	delete(fields, "tls_available")
	stripped, _ := json.Marshal(fields)
	// The attacker needs no trust in the server's certificate.
	tup := tls.Client(up, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err := tup.Handshake(); err != nil {
		return
	}
	if _, err := fmt.Fprintf(c, "INFO %s\r\n", stripped); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(tup, io.TeeReader(c, rec))
		tup.CloseWrite()
	}()
	io.Copy(c, tup)
	c.Close()
	<-done
}

// sawClear reports whether a client sent s in clear.
func (m *mitm) sawClear(s string) bool { return strings.Contains(m.buffer().String(), s) }

// reset closes the connections so far and forgets what they sent.
func (m *mitm) reset() {
	m.mu.Lock()
	for _, c := range m.conns {
		c.Close()
	}
	m.conns = nil
	m.clear = &harness.LockedBuffer{}
	m.mu.Unlock()
}

func (m *mitm) close() {
	m.ln.Close()
	m.reset()
	m.wg.Wait()
}
