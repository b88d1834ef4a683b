package envflag

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestApply(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	port := fs.Int("http-port", 8470, "")
	bind := fs.String("bind", "127.0.0.1", "")
	name := fs.String("node-name", "", "")
	if err := fs.Parse([]string{"--bind", "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"UNIBUS_HTTP_PORT": "9000", "UNIBUS_BIND": "0.0.0.0", "UNIBUS_NODE_NAME": "n1"}
	if err := Apply(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if *port != 9000 || *name != "n1" {
		t.Fatalf("env not applied: %d %q", *port, *name)
	}
	if *bind != "10.0.0.1" {
		t.Fatalf("command line must win over env, got %q", *bind)
	}
}

func TestApplyRejectsBadValueWithoutEchoingIt(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.Int("http-port", 8470, "")
	err := Apply(fs, func(k string) (string, bool) { return "s3cret-not-a-number", k == "UNIBUS_HTTP_PORT" })
	if err == nil || !strings.Contains(err.Error(), "UNIBUS_HTTP_PORT") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("got %v", err)
	}
}
