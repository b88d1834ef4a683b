package daemon

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/unibus/unibus/internal/natsnode"
)

// routeUser is the route username; the secret is the password.
const routeUser = "unibus-route"

func (c *Config) validateCluster() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !c.clustered() {
		if len(c.Routes) > 0 || c.ClusterPassFile != "" || c.RouteTLSCert != "" {
			add("cluster flags (--routes, --cluster-pass-file, --route-tls-*) need --cluster-name")
		}
		return errs
	}
	if c.BusAuth != BusAuthEnforce {
		add("cluster mode refuses to start without --bus-auth enforce: every node of a cluster must enforce the same posture")
	}
	if c.Store != StoreKV {
		add("cluster mode needs --store kv: a SQLite file is one node's, and the control plane must survive a node")
	}
	if c.NodeName == "" {
		add("cluster mode needs a unique --node-name")
	}
	if c.ClusterPass == "" && c.ClusterPassFile == "" {
		add("cluster mode needs a route secret: --cluster-pass-file FILE (0600) or UNIBUS_CLUSTER_PASS")
	}
	if (c.RouteTLSCert == "") != (c.RouteTLSKey == "") || (c.RouteTLSCert != "") != (c.RouteTLSCA != "") {
		add("--route-tls-cert, --route-tls-key and --route-tls-ca go together")
	}
	if c.RouteTLSCert == "" && !natsnode.IsLoopback(c.Bind) {
		add("--bind %s is not loopback: mutual route TLS is required (--route-tls-cert, --route-tls-key, --route-tls-ca)", c.Bind)
	}
	if c.ClusterPort < 0 || c.ClusterPort > 65535 {
		add("--cluster-port %d is out of range", c.ClusterPort)
	}
	if len(c.Routes) == 0 {
		add("cluster mode needs --routes: the other nodes' route URLs (nats://host:6250)")
	}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil || (u.Scheme != "nats" && u.Scheme != "nats-route" && u.Scheme != "tls") || u.Hostname() == "" || u.Port() == "" {
			add("--routes: %q is not a route URL such as nats://10.0.0.2:6250", redactURL(r))
		}
	}
	return errs
}

// redactURL hides a URL's password for messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		if i := strings.LastIndex(s, "@"); i >= 0 {
			return "…@" + s[i+1:]
		}
		return s
	}
	return u.Redacted()
}

// clusterOptions builds the node's cluster options: the secret from the
// file or the environment, injected into bare routes; credentials found on
// the command line still work, with a warning naming the exposure.
func (d *Daemon) clusterOptions() (*natsnode.Cluster, error) {
	c := d.cfg
	pass := c.ClusterPass
	if c.ClusterPassFile != "" {
		b, err := readSecretFile(c.ClusterPassFile)
		if err != nil {
			return nil, fmt.Errorf("--cluster-pass-file: %w", err)
		}
		pass = b
	} else if c.ClusterPassOnArgv {
		d.log.Warn("the route secret was given with --cluster-pass: it is visible in ps and the journal; use --cluster-pass-file or UNIBUS_CLUSTER_PASS")
	}
	cl := &natsnode.Cluster{Name: c.ClusterName, Host: c.Bind, Port: c.ClusterPort, User: routeUser, Pass: pass}
	if c.ClusterPort == 0 {
		cl.Port = -1
	}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil {
			return nil, fmt.Errorf("--routes: %q", redactURL(r))
		}
		if u.User != nil {
			d.log.Warn("a route URL in --routes carries credentials: they are visible in ps and the journal; list bare routes and use --cluster-pass-file or UNIBUS_CLUSTER_PASS",
				"route", u.Redacted())
			if p, ok := u.User.Password(); ok && pass == "" {
				cl.Pass = p
			}
			u.User = nil
		}
		cl.Routes = append(cl.Routes, u)
	}
	if cl.Pass == "" {
		return nil, errors.New("cluster mode needs a route secret")
	}
	if c.RouteTLSCert != "" {
		cfg, err := routeTLS(c)
		if err != nil {
			return nil, err
		}
		cl.TLS = cfg
	}
	return cl, nil
}

// routeTLS loads mutual route TLS and refuses a route CA that also signed
// the data-plane certificate: a client certificate must never be
// presentable on the route port.
func routeTLS(c Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.RouteTLSCert, c.RouteTLSKey)
	if err != nil {
		return nil, fmt.Errorf("load route TLS certificate: %w", err)
	}
	caPEM, err := os.ReadFile(c.RouteTLSCA)
	if err != nil {
		return nil, fmt.Errorf("--route-tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--route-tls-ca %s holds no PEM certificate", c.RouteTLSCA)
	}
	if c.TLSCert != "" {
		dp, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("load TLS certificate: %w", err)
		}
		if sameCA(dp, pool, caPEM) {
			return nil, errors.New("the route CA (--route-tls-ca) also signed the data-plane certificate (--tls-cert): use a separate route CA, so that no client certificate can be presented on the route port")
		}
	}
	return natsnode.RouteTLSConfig(cert, pool), nil
}

// sameCA reports whether the data-plane certificate chains to the route CA
// or is byte-identical to one of its certificates.
func sameCA(dp tls.Certificate, routePool *x509.CertPool, routePEM []byte) bool {
	if len(dp.Certificate) == 0 {
		return false
	}
	leaf, err := x509.ParseCertificate(dp.Certificate[0])
	if err != nil {
		return false
	}
	inter := x509.NewCertPool()
	for _, der := range dp.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
			if bytes.Contains(routePEM, der) {
				return true
			}
		}
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: routePool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// readSecretFile reads a secret from a file that only its owner can read.
func readSecretFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s is mode %o: a secret file must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}
