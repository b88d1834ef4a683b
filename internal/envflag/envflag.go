// Package envflag lets every command-line flag also come from the
// environment: flag --foo-bar is read from UNIBUS_FOO_BAR when it is not
// given on the command line. This is how the systemd units pass per-node
// settings, and how secrets stay out of argv. An environment value that does
// not parse is an error naming the variable, never silently ignored.
package envflag

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// Prefix is the environment variable prefix.
const Prefix = "UNIBUS_"

// Name returns the environment variable for a flag name.
func Name(flag string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Apply sets every flag of fs that was not set on the command line from its
// environment variable, if present. lookup is os.LookupEnv in production.
func Apply(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" {
			return
		}
		v, ok := lookup(Name(f.Name))
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			// Do not echo the value: it may be a secret.
			errs = append(errs, fmt.Sprintf("%s: invalid value for --%s", Name(f.Name), f.Name))
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}
