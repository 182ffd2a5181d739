package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether a test that cannot run here must fail instead of skipping: in CI
// (CI=true, which .ci/run sets itself) every tool is installed and the machine is root with a
// hot-pluggable CPU, so a missing one is a broken run, not a reason to pass without testing.
func Strict() bool { return os.Getenv("CI") == "true" }

// Unavailable ends t because this machine lacks what it needs (root, a tool, a hot-pluggable CPU,
// a file): it skips saying why, or, under Strict, fails saying the same. It does not return.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("cannot run here, and CI=true forbids skipping: %s", why)
	}
	t.Skip(why)
}

// Tool returns the path of the command name, or ends t through Unavailable with install, the
// way to get it (for example "Debian package valgrind; make deps installs it").
func Tool(t testing.TB, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "%s is not installed (%s)", name, install)
	}
	return p
}
