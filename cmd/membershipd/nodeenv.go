package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// nodeEnvName is the node settings file deploy-cluster.sh installs beside
// the binary (/opt/unibus/cluster.env): the unit's EnvironmentFile.
const nodeEnvName = "cluster.env"

// nodeEnvOff, given as --node-env (or UNIBUS_NODE_ENV), reads no settings.
const nodeEnvOff = "none"

// nodeSettings are a cluster node's own settings, read by the commands run
// on the node so that `sudo /opt/unibus/membershipd user add --store kv …`
// reaches the node as its unit runs it: its NATS port and address, its CA,
// its internal identity, its replicas. Flags given on the command line (or
// as UNIBUS_* variables) win over them.
type nodeSettings struct {
	path string
	env  map[string]string
}

// findNodeSettings reads the node settings: the file explicit names, or
// (explicit empty) cluster.env beside this executable when there is one.
// It returns nil when there is none, or explicit is "none".
func findNodeSettings(explicit string) (*nodeSettings, error) {
	if explicit == nodeEnvOff {
		return nil, nil
	}
	path := explicit
	if path == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, nil
		}
		if resolved, err := filepath.EvalSymlinks(exe); err == nil {
			exe = resolved
		}
		path = filepath.Join(filepath.Dir(exe), nodeEnvName)
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
	}
	return readNodeSettings(path)
}

// readNodeSettings parses a systemd EnvironmentFile as deploy-cluster.sh
// writes it: KEY=VALUE lines, comments and blank lines.
func readNodeSettings(path string) (*nodeSettings, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("node settings: %w", err)
	}
	defer f.Close()
	s := &nodeSettings{path: path, env: map[string]string{}}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("node settings %s line %d: not KEY=VALUE", path, n)
		}
		s.env[k] = strings.Trim(v, `"`)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("node settings %s: %w", path, err)
	}
	return s, nil
}

// get returns a setting ("" when unset).
func (s *nodeSettings) get(key string) string {
	if s == nil {
		return ""
	}
	return s.env[key]
}

// natsURL is how a command on the node reaches its data plane: loopback
// when the node binds every interface, else the address it binds.
func (s *nodeSettings) natsURL() string {
	port := s.get("NATS_PORT")
	if port == "" {
		return ""
	}
	host := s.get("BIND")
	switch host {
	case "", "0.0.0.0", "::", "[::]":
		host = "127.0.0.1"
	}
	return "nats://" + net.JoinHostPort(strings.Trim(host, "[]"), port)
}
