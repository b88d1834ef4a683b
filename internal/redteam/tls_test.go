package redteam

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/testpki"
	"github.com/unibus/unibus/subjects"
	"github.com/unibus/unibus/wire"
)

var verifyError = regexp.MustCompile(`verify error:num=(\d+:[^\n]+)`)

// tlsAttacks checks the TLS posture from the outside: what a client that
// trusts the right CA sees, and that clients refuse another CA, an expired
// certificate, an old protocol, and that plaintext gets nothing.
func (e *env) tlsAttacks(rep *Report) {
	add := func(id, attack, tool, expect string, ok bool, failV Verdict, observed string) {
		v := Pass
		if !ok {
			v = failV
		}
		rep.Add(Row{ID: id, Plane: "TLS", Attack: attack, Tool: tool, Expected: expect, Observed: observed, Verdict: v})
	}
	httpHost := strings.TrimPrefix(e.bus.HTTPURL, "https://")
	sclient := func(host, ca string, extra ...string) result {
		args := append([]string{"s_client", "-connect", host, "-CAfile", ca, "-verify_return_error"}, extra...)
		return e.run(20*time.Second, strings.NewReader(""), e.tl.openssl, args...)
	}

	r := sclient(httpHost, e.caCrt)
	proto := regexp.MustCompile(`Protocol\s*:\s*(TLSv[0-9.]+)`).FindStringSubmatch(r.stdout)
	ok := r.code == 0 && strings.Contains(r.stdout, "Verify return code: 0 (ok)") && proto != nil
	add("T01", "control: TLS handshake on the control plane with the deployment's CA", "openssl s_client", "verified, TLS ≥ 1.2",
		ok, FailControl, fmt.Sprintf("exit %d, verified=%v, %s", r.code, strings.Contains(r.stdout, "Verify return code: 0 (ok)"), firstGroup(proto)))

	c := e.curl("GET", e.bus.HTTPURL+"/healthz", nil, nil)
	var h wire.Health
	json.Unmarshal([]byte(c.body), &h)
	ok = c.status == 200 && h.Posture.TLS && h.Posture.BusAuth == "enforce" && h.Posture.ACL && h.Protocol == wire.Protocol && h.Deployment == e.deployment
	add("T02", "control: /healthz over TLS reports the posture, the protocol and the deployment id", "curl --cacert",
		"200, tls=true, bus_auth=enforce, acl=true, protocol 2, the deployment id every signature is tagged with",
		ok, FailControl, fmt.Sprintf("%d, tls=%v, bus_auth=%s, acl=%v, protocol %s, deployment %s", c.status, h.Posture.TLS, h.Posture.BusAuth, h.Posture.ACL,
			h.Protocol, h.Deployment))

	r = sclient(httpHost, e.caCrt, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
	ok = r.code != 0 && strings.Contains(r.all(), "alert protocol version")
	add("T10", "protocol downgrade to TLS 1.1", "openssl s_client -tls1_1", "handshake refused by the server (minimum TLS 1.2)",
		ok, map[bool]Verdict{true: FailOpen, false: FailDenial}[r.code == 0], firstMatch(r.all(), "alert protocol version", "no protocols available", "Verify return code: 0"))

	other := e.curl("GET", e.bus.HTTPURL+"/healthz", nil, nil, "--cacert", e.other)
	add("T11", "client trusting another CA (control plane)", "curl --cacert other", "curl refuses the certificate (exit 60)",
		other.code == 60, failOpenIf(other.status != 0), fmt.Sprintf("curl exit %d", other.code))

	r = sclient(httpHost, e.other)
	m := verifyError.FindStringSubmatch(r.all())
	add("T12", "client trusting another CA (control plane)", "openssl s_client", "verify error 20: unable to get local issuer certificate",
		r.code != 0 && m != nil && strings.HasPrefix(m[1], "20:"), failOpenIf(r.code == 0), "verify error "+orNone(firstGroup(m)))

	r = e.run(20*time.Second, nil, e.tl.nats, "--no-context", "-s", e.bus.NATSURL, "--tlsca", e.other, "--nkey", e.alice.idFile,
		"--timeout", "2s", "pub", subjects.Ingress(e.alice.hex, e.roomA, "x"), "x")
	add("T13", "client trusting another CA (data plane)", "nats --tlsca other", "x509: certificate signed by unknown authority",
		r.code != 0 && strings.Contains(r.all(), "certificate signed by unknown authority"), failOpenIf(r.code == 0),
		firstMatch(r.all(), "certificate signed by unknown authority", "Published"))

	u := harness.Run(e.t, e.dir, append(e.cliEnv(e.alice), "UNIBUS_CA="+e.other), "", "unibus", "whoami")
	add("T14", "client trusting another CA (the unibus CLI)", "unibus --ca other", "refused: certificate signed by unknown authority",
		u.Code != 0 && strings.Contains(u.Stderr, "certificate signed by unknown authority"), failOpenIf(u.Code == 0),
		fmt.Sprintf("exit %d: %s", u.Code, firstMatch(u.Stderr, "certificate signed by unknown authority")))

	e.expiredCert(add)
	e.plaintextNATS(add)
	e.plaintextURLs(add)
}

// expiredCert starts a second membershipd whose certificate, from the
// same CA, expired an hour ago: every client must refuse it. In front of
// an external NATS the data plane's certificate is the nats-server's, not
// membershipd's: the data-plane rows then aim at a nats-server with the
// expired certificate.
func (e *env) expiredCert(add func(id, attack, tool, expect string, ok bool, failV Verdict, observed string)) {
	dir := e.t.TempDir()
	cert, key := testpki.WriteFiles(e.t, e.pki, "expired", e.ca.Expired(e.t, "membershipd", []net.IP{net.ParseIP("127.0.0.1")}))
	bus, _ := e.startBus(dir, cert, key)
	defer bus.Stop(e.t)
	natsURL := bus.NATSURL
	if e.engine == externalEngine {
		_, natsURL, _ = e.startNATSServer(e.t.TempDir(), cert, key)
	}
	httpHost := strings.TrimPrefix(bus.HTTPURL, "https://")
	norm := strings.NewReplacer(httpHost, "<http>", strings.TrimPrefix(natsURL, "tls://"), "<nats>")

	c := e.curl("GET", bus.HTTPURL+"/healthz", nil, nil)
	add("T20", "server certificate expired an hour ago (control plane)", "curl --cacert", "curl refuses (exit 60: certificate has expired)",
		c.code == 60 && strings.Contains(c.stderr, "expired"), failOpenIf(c.status != 0), fmt.Sprintf("curl exit %d: %s", c.code, firstMatch(c.stderr, "certificate has expired")))

	r := e.run(20*time.Second, strings.NewReader(""), e.tl.openssl, "s_client", "-connect", httpHost, "-CAfile", e.caCrt, "-verify_return_error")
	m := verifyError.FindStringSubmatch(r.all())
	add("T21", "server certificate expired an hour ago (control plane)", "openssl s_client", "verify error 10: certificate has expired",
		r.code != 0 && m != nil && strings.HasPrefix(m[1], "10:"), failOpenIf(r.code == 0), "verify error "+orNone(firstGroup(m)))

	admin := filepath.Join(dir, "local_files", "admin.id")
	r = e.run(20*time.Second, nil, e.tl.nats, "--no-context", "-s", natsURL, "--tlsca", e.caCrt, "--nkey", admin,
		"--timeout", "2s", "pub", "unibus.x", "x")
	add("T22", "server certificate expired an hour ago (data plane)", "nats --tlsca", "x509: certificate has expired",
		r.code != 0 && strings.Contains(r.all(), "certificate has expired"), failOpenIf(r.code == 0),
		norm.Replace(firstMatch(r.all(), "certificate has expired or is not yet valid", "Published")))

	u := harness.Run(e.t, dir, []string{"UNIBUS_SERVER=" + bus.HTTPURL, "UNIBUS_NATS=" + natsURL, "UNIBUS_CA=" + e.caCrt, "UNIBUS_IDENTITY=" + admin},
		"", "unibus", "whoami")
	add("T23", "server certificate expired an hour ago (the unibus CLI)", "unibus --ca", "refused: certificate has expired",
		u.Code != 0 && strings.Contains(u.Stderr, "certificate has expired"), failOpenIf(u.Code == 0),
		fmt.Sprintf("exit %d: %s", u.Code, firstMatch(u.Stderr, "certificate has expired or is not yet valid")))
}

// plaintextNATS speaks the NATS protocol in clear to the TLS data port.
func (e *env) plaintextNATS(add func(id, attack, tool, expect string, ok bool, failV Verdict, observed string)) {
	host := strings.TrimPrefix(e.bus.NATSURL, "tls://")
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		add("T30", "plaintext NATS client on the TLS data port", "raw TCP (Go net.Dial)", "", false, FailControl, err.Error())
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	rd := bufio.NewReader(conn)
	greeting, _ := rd.ReadString('\n')
	var info struct {
		TLSRequired  bool `json:"tls_required"`
		AuthRequired bool `json:"auth_required"`
	}
	json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(greeting), "INFO ")), &info)
	fmt.Fprintf(conn, "CONNECT {\"verbose\":true,\"pedantic\":false,\"tls_required\":false}\r\nPUB %s 5\r\nclear\r\nPING\r\n", subjects.Ingress(e.alice.hex, e.roomA, "clear"))
	var answers []string
	for {
		line, err := rd.ReadString('\n')
		if line = strings.TrimSpace(line); line != "" {
			answers = append(answers, line)
		}
		if err != nil {
			break
		}
	}
	accepted := false
	for _, a := range answers {
		accepted = accepted || a == "+OK" || a == "PONG"
	}
	stored := e.storedOn(e.roomA, "clear")
	ok := strings.HasPrefix(greeting, "INFO ") && info.TLSRequired && info.AuthRequired && !accepted && !stored
	obs := fmt.Sprintf("INFO greeting in clear (tls_required=%v, auth_required=%v); after CONNECT/PUB/PING in clear: %s; stored=%v",
		info.TLSRequired, info.AuthRequired, orNone(strings.Join(answers, " ")), stored)
	add("T30", "plaintext NATS client on the TLS data port: CONNECT, PUB, PING in clear", "raw TCP (Go net.Dial)",
		"only the standard INFO greeting (no secrets) in clear; no +OK/PONG; nothing stored",
		ok, failOpenIf(accepted || stored), obs)
}

func failOpenIf(b bool) Verdict {
	if b {
		return FailOpen
	}
	return FailDenial
}

// firstMatch returns the first of subs that s contains, or s's last line.
func firstMatch(s string, subs ...string) string {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return sub
		}
	}
	return lastLine(s)
}

func firstGroup(m []string) string {
	if len(m) < 2 {
		return ""
	}
	return strings.TrimSpace(m[1])
}
