package natsnode

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
)

func validOptions(t *testing.T) Options {
	return Options{
		Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir(),
		InternalNKey: newUser(t).pub, Authorizer: newAuthz(),
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "127.1.2.3": true, "::1": true, "[::1]": true, "localhost": true, "LocalHost": true,
		"": false, "0.0.0.0": false, "::": false, "10.0.0.1": false, "example.com": false, "localhost.example.com": false,
	} {
		if got := IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Options)
		want []string // substrings of the error, one per problem; none = valid
	}{
		{"defaults", func(*Options) {}, nil},
		{"explicit enforce", func(o *Options) { o.BusAuth = BusAuthEnforce }, nil},
		{"off on loopback", func(o *Options) { o.BusAuth = BusAuthOff; o.Authorizer = nil }, nil},
		{"non-loopback with TLS", func(o *Options) { o.Host = "0.0.0.0"; o.TLS = &tls.Config{} }, nil},
		{"non-loopback, explicit opt-out", func(o *Options) { o.Host = "10.0.0.1"; o.AllowNonLoopbackWithoutTLS = true }, nil},
		{"bad bus-auth", func(o *Options) { o.BusAuth = "Enforce" }, []string{`bus-auth "Enforce" is not valid`}},
		{"off on all interfaces", func(o *Options) { o.BusAuth = BusAuthOff; o.Host = "0.0.0.0"; o.TLS = &tls.Config{} },
			[]string{"--bus-auth off is only allowed when every listener binds a loopback address"}},
		{"off on empty host", func(o *Options) { o.BusAuth = BusAuthOff; o.Host = ""; o.AllowNonLoopbackWithoutTLS = true },
			[]string{"--bus-auth off is only allowed"}},
		{"non-loopback without TLS", func(o *Options) { o.Host = "0.0.0.0" },
			[]string{`data-plane host "0.0.0.0" is not a loopback address and TLS is not configured`}},
		{"enforce without authorizer", func(o *Options) { o.Authorizer = nil }, []string{"needs an Authorizer"}},
		{"no internal nkey", func(o *Options) { o.InternalNKey = "" }, []string{"internal identity's public nkey is required"}},
		{"seed as internal nkey", func(o *Options) { o.InternalNKey = "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4" },
			[]string{"not a valid public user nkey"}},
		{"misc", func(o *Options) { o.Port = 70000; o.StoreDir = ""; o.SyncInterval = -1; o.MaxPayload = -1 },
			[]string{"port 70000", "store directory is required", "sync interval", "max payload"}},
		{"everything at once", func(o *Options) {
			o.BusAuth, o.Host, o.Authorizer, o.InternalNKey = "maybe", "0.0.0.0", nil, "U123"
		}, []string{"bus-auth \"maybe\"", "not a loopback address", "not a valid public user nkey"}},
		{"off, all interfaces, no TLS", func(o *Options) { o.BusAuth = BusAuthOff; o.Host = "0.0.0.0" },
			[]string{"--bus-auth off is only allowed", "TLS is not configured"}},
	}
	for _, tt := range tests {
		o := validOptions(t)
		tt.edit(&o)
		err := o.Validate()
		if len(tt.want) == 0 {
			if err != nil {
				t.Errorf("%s: unexpected error: %v", tt.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: accepted", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", tt.name, err, w)
			}
		}
		if got := len(strings.Split(err.Error(), "\n")); got != len(tt.want) {
			t.Errorf("%s: %d problems reported, want %d:\n%v", tt.name, got, len(tt.want), err)
		}
	}
}

func TestStartRefusesInvalidOptions(t *testing.T) {
	o := validOptions(t)
	o.BusAuth, o.Host = BusAuthOff, "0.0.0.0"
	if n, err := Start(context.Background(), o); err == nil {
		n.Shutdown()
		t.Fatal("started with bus-auth off on 0.0.0.0")
	} else if !strings.Contains(err.Error(), "--bus-auth off is only allowed") {
		t.Errorf("error: %v", err)
	}
}
