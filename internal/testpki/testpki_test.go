package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"testing"
)

func TestChains(t *testing.T) {
	ca := NewCA(t, "test CA")
	other := NewCA(t, "other CA")
	ip := net.ParseIP("127.0.0.1")

	srv := ca.Server(t, "node1", []net.IP{ip}, []string{"localhost"})
	verify := func(l *Leaf, pool *x509.CertPool, usage x509.ExtKeyUsage) error {
		_, err := l.TLS.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost", KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}
	if err := verify(srv, ca.Pool, x509.ExtKeyUsageServerAuth); err != nil {
		t.Errorf("server cert as server: %v", err)
	}
	if err := verify(srv, ca.Pool, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("server cert as route client: %v", err)
	}
	if err := verify(srv, other.Pool, x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("server cert verified against another CA")
	}
	cl := ca.Client(t, "alice")
	if _, err := cl.TLS.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert: %v", err)
	}
	exp := ca.Expired(t, "old", []net.IP{ip})
	var inv x509.CertificateInvalidError
	if err := verify(exp, ca.Pool, x509.ExtKeyUsageServerAuth); !errors.As(err, &inv) || inv.Reason != x509.Expired {
		t.Errorf("expired cert: got %v, want x509.Expired", err)
	}

	dir := t.TempDir()
	certPath, keyPath := WriteFiles(t, dir, "node1", srv)
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", fi.Mode(), err)
	}
	if _, err := tls.LoadX509KeyPair(certPath, keyPath); err != nil {
		t.Errorf("load written pair: %v", err)
	}
	if b, err := os.ReadFile(ca.WriteCert(t, dir, "ca")); err != nil || !x509.NewCertPool().AppendCertsFromPEM(b) {
		t.Errorf("written CA cert unreadable: %v", err)
	}
}
