package natsnode

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// operatorConn logs in with an operator token, as the nats CLI does with
// the context membershipd operator-creds writes.
func operatorConn(t *testing.T, url, token string) (*member, error) {
	t.Helper()
	m := &member{errs: make(chan error, 64)}
	nc, err := nats.Connect(url, nats.Token(token), nats.Timeout(3*time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case m.errs <- err:
			default:
			}
		}))
	if err != nil {
		return nil, err
	}
	m.nc = nc
	t.Cleanup(nc.Close)
	return m, nil
}

// An operator vouched for by the node's internal identity reads the server
// and JetStream reports from the system account, and nothing else: not
// the connections, not the control-plane buckets, no stream change, no
// system events.
func TestOperatorReadsReportsOnly(t *testing.T) {
	tn := startNode(t, nil)
	url := tn.ClientURL()
	kv, err := tn.cjs.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "UNIBUS_users"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	token := must(OperatorToken(tn.internal.sign, "op1a2b3c4d", time.Now().Add(time.Hour)))
	m, err := operatorConn(t, url, token)
	if err != nil {
		t.Fatalf("operator login: %v", err)
	}
	for _, subj := range []string{"$SYS.REQ.SERVER.PING", "$SYS.REQ.SERVER.PING.JSZ", "$SYS.REQ.SERVER.PING.VARZ"} {
		msg, err := m.nc.Request(subj, nil, 3*time.Second)
		if err != nil || !strings.Contains(string(msg.Data), `"server"`) {
			t.Errorf("%s: %v %s", subj, err, msgData(msg))
		}
	}
	for _, subj := range []string{"$SYS.REQ.SERVER.PING.CONNZ", "$SYS.REQ.SERVER.PING.SUBSZ", "$SYS.REQ.ACCOUNT.UNIBUS_CONTROL.CONNZ",
		"$JS.API.STREAM.UPDATE.KV_UNIBUS_users", "$KV.UNIBUS_users.k", "$JS.API.DIRECT.GET.KV_UNIBUS_users.$KV.UNIBUS_users.k"} {
		if err := m.nc.Publish(subj, nil); err != nil {
			t.Fatal(err)
		}
		m.expectViolation(t, subj)
	}
	if _, err := m.nc.SubscribeSync("$SYS.ACCOUNT.>"); err != nil {
		t.Fatal(err)
	}
	m.expectViolation(t, "$SYS.ACCOUNT.>")
	if e, err := kv.Get(t.Context(), "k"); err != nil || string(e.Value()) != "v" {
		t.Errorf("the bucket changed: %v", err)
	}
}

// Refused: an expired token, one another key signed, one whose id or
// expiry was changed, a malformed one.
func TestOperatorTokenRefused(t *testing.T) {
	tn := startNode(t, nil)
	other := newUser(t)
	good := must(OperatorToken(tn.internal.sign, "op1a2b3c4d", time.Now().Add(time.Hour)))
	parts := strings.Split(good, ".")
	for name, token := range map[string]string{
		"expired":          must(OperatorToken(tn.internal.sign, "op1a2b3c4d", time.Now().Add(-time.Second))),
		"not the internal": must(OperatorToken(other.sign, "op1a2b3c4d", time.Now().Add(time.Hour))),
		"another id":       strings.Join([]string{parts[0], "op1a2b3c4e", parts[2], parts[3]}, "."),
		"later expiry":     strings.Join([]string{parts[0], parts[1], parts[2] + "9", parts[3]}, "."),
		"malformed":        "unibus-operator-v1.op1a2b3c4d.x.y",
		"not a token":      "s3cret",
	} {
		_, err := operatorConn(t, tn.ClientURL(), token)
		if !errors.Is(err, nats.ErrAuthorization) && (err == nil || !strings.Contains(err.Error(), "Authorization Violation")) {
			t.Errorf("%s: login %v, want an authorization violation", name, err)
		}
	}
	if _, err := operatorConn(t, tn.ClientURL(), good); err != nil {
		t.Errorf("the untampered token: %v", err)
	}
	if _, err := OperatorToken(tn.internal.sign, "Not.An-Id", time.Now()); err == nil {
		t.Error("a token for a malformed id")
	}
}

func msgData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}
