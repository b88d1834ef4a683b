package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// commands are the commands Build compiles for tests.
var commands = []string{"membershipd", "unibus", "clientcheck"}

// BuildCommands compiles ./cmd/<name> of the module rooted at root for
// every name into dir (CGO_ENABLED=0, as shipped); the binaries are named
// after the commands.
func BuildCommands(ctx context.Context, root, dir string, names ...string) error {
	pkgs := make([]string, len(names))
	for i, n := range names {
		pkgs[i] = "./cmd/" + n
	}
	// A trailing separator makes -o a directory even for one package.
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

var built struct {
	once sync.Once
	dir  string
	err  error
}

// Build compiles membershipd, unibus and clientcheck of this module once
// per test process into a temporary directory, and returns it.
func Build(t TB) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "unibus-bin-")
		if built.err == nil {
			built.err = BuildCommands(context.Background(), moduleRoot(), built.dir, commands...)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

// moduleRoot is the root of the module this file was compiled from.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
