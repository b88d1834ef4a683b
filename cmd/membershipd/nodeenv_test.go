package main

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/unibus/unibus/internal/harness"
	"github.com/unibus/unibus/internal/testpki"
)

func writeSettings(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), nodeEnvName)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A node's cluster.env gives the admin commands the node's NATS address
// (loopback when it binds every interface), CA, internal identity and
// replicas; a flag given on the command line wins; "none" reads nothing;
// a line that is not KEY=VALUE is refused.
func TestNodeSettingsFillKVFlags(t *testing.T) {
	settings := writeSettings(t, "# node n1\nNODE_NAME=n1\nBIND=0.0.0.0\nNATS_PORT=4999\nKV_REPLICAS=3\n"+
		"INTERNAL_ID_FILE=/opt/unibus/secrets/internal.id\nCA_CERT=/opt/unibus/tls/ca.crt\nDATA_DIR=/opt/unibus/local_files\nCLUSTER_NAME=unibus\n")
	for _, tc := range []struct {
		name                  string
		args                  []string
		url, id, ca           string
		replicas              int
		caIfOffered, fromNode bool
	}{
		{"settings", []string{"--node-env", settings},
			"nats://127.0.0.1:4999", "/opt/unibus/secrets/internal.id", "/opt/unibus/tls/ca.crt", 3, true, true},
		{"flags win", []string{"--node-env", settings, "--ca", "my.crt", "--kv-replicas", "1", "--nats-url", "nats://127.0.0.9:1"},
			"nats://127.0.0.9:1", "/opt/unibus/secrets/internal.id", "my.crt", 1, false, true},
		{"none", []string{"--node-env", "none"},
			"nats://127.0.0.1:4250", filepath.Join("local_files", "internal.id"), "", 1, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var k kvFlags
			fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
			k.register(fs, "kv-replicas")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if err := k.checkTarget(); err != nil {
				t.Fatal(err)
			}
			if k.natsURL != tc.url || k.idFile != tc.id || k.ca != tc.ca || k.replicas != tc.replicas || k.caIfOffered != tc.caIfOffered || (k.node != nil) != tc.fromNode {
				t.Errorf("got url %q id %q ca %q replicas %d caIfOffered %v node %v", k.natsURL, k.idFile, k.ca, k.replicas, k.caIfOffered, k.node != nil)
			}
			if tc.fromNode && k.node.seedPath() != "/opt/unibus/local_files/cluster-seed.db" {
				t.Errorf("seed path %q", k.node.seedPath())
			}
		})
	}

	public := writeSettings(t, "BIND=192.0.2.7\nNATS_PORT=4250\n")
	s, err := readNodeSettings(public)
	if err != nil || s.natsURL() != "nats://192.0.2.7:4250" || s.seedPath() != "" {
		t.Errorf("BIND=public: %v %q %q", err, s.natsURL(), s.seedPath())
	}
	if _, err := readNodeSettings(writeSettings(t, "NATS_PORT 4250\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("a line without '=': %v", err)
	}
	if _, err := findNodeSettings(filepath.Join(t.TempDir(), "absent.env")); err == nil {
		t.Error("a --node-env that does not exist is not an error")
	}
	// No cluster.env beside the test binary: no settings.
	if s, err := findNodeSettings(""); s != nil || err != nil {
		t.Errorf("settings found beside the test binary: %v %v", s, err)
	}
}

// Against a live TLS node in kv mode, `user add|list --store kv` with the
// node's settings file alone, from another directory, reach the node over
// TLS pinned to the CA named there, as its internal identity.
func TestUserCommandsReadNodeSettings(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "client CA")
	cert, key := testpki.WriteFiles(t, dir, "server", ca.Server(t, "node", []net.IP{net.ParseIP("127.0.0.1")}, nil))
	caFile := ca.WriteCert(t, dir, "ca.crt")
	b := harness.StartBus(t, dir, "--store", "kv", "--no-bootstrap", "--tls-cert", cert, "--tls-key", key)
	u, err := url.Parse(b.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	settings := writeSettings(t, "BIND=0.0.0.0\nNATS_PORT="+u.Port()+"\nKV_REPLICAS=1\nCA_CERT="+caFile+
		"\nINTERNAL_ID_FILE="+filepath.Join(dir, "local_files", "internal.id")+"\n")
	elsewhere := t.TempDir()
	alice := newID(t, elsewhere, "alice")

	r := harness.Run(t, elsewhere, []string{"UNIBUS_NODE_ENV=" + settings}, "", "membershipd",
		"user", "add", "--store", "kv", "--handle", "alice", "--role", "member", "--sign-pub", alice.SignPub().String())
	if r.Code != 0 || !strings.Contains(r.Stdout, `added user "alice"`) {
		t.Fatalf("user add with the node's settings: %+v", r)
	}
	us := kvList(t, elsewhere, []string{"--node-env", settings})
	if len(us) != 1 || us[0].Handle != "alice" || us[0].Status != "active" {
		t.Errorf("user list with the node's settings: %+v", us)
	}
	// Without them, the same command has no CA and no identity.
	r = harness.Run(t, elsewhere, nil, "", "membershipd", "user", "list", "--store", "kv", "--node-env", "none", "--nats-url", "nats://127.0.0.1:"+u.Port())
	if r.Code == 0 || !strings.Contains(r.Stderr, "internal identity") {
		t.Errorf("without the node's settings: %+v", r)
	}
}

// A store a standalone server wrote (control streams, no meta group) is
// moved aside before a clustered start; one a cluster wrote, or an empty
// one, stays.
func TestMoveStandaloneStore(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	mk := func(t *testing.T, dirs ...string) string {
		store := filepath.Join(t.TempDir(), "jetstream")
		for _, d := range dirs {
			if err := os.MkdirAll(filepath.Join(store, "jetstream", d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		return store
	}
	standalone := mk(t, "UNIBUS_CONTROL/streams/KV_UNIBUS_users")
	aside, err := moveStandaloneStore(standalone, now)
	if err != nil || aside != standalone+".standalone-20260102T030405Z" {
		t.Fatalf("standalone store: %q %v", aside, err)
	}
	if _, err := os.Stat(filepath.Join(aside, "jetstream", "UNIBUS_CONTROL", "streams", "KV_UNIBUS_users")); err != nil {
		t.Errorf("the store was not kept aside: %v", err)
	}
	for name, store := range map[string]string{
		"clustered": mk(t, "UNIBUS_CONTROL/streams/KV_UNIBUS_users", "$SYS/_js_/_meta_"),
		"empty":     mk(t),
		"no store":  filepath.Join(t.TempDir(), "absent"),
	} {
		if aside, err := moveStandaloneStore(store, now); aside != "" || err != nil {
			t.Errorf("%s: moved to %q (%v)", name, aside, err)
		}
	}
}

// The seed migrate-to-kv keeps is a 0600 copy.
func TestKeepClusterSeed(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "seed.db")
	if err := os.WriteFile(db, []byte("sqlite"), 0o644); err != nil {
		t.Fatal(err)
	}
	seed := filepath.Join(dir, "local_files", clusterSeedName)
	if err := keepClusterSeed(db, seed); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(seed)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("seed: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(seed); string(b) != "sqlite" {
		t.Errorf("seed content %q", b)
	}
}
