package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestUnavailable runs a test that lacks what it needs in a child process of this test binary:
// it skips, saying why, and under CI=true it fails with the same reason.
func TestUnavailable(t *testing.T) {
	if os.Getenv("TESTENV_HELPER") == "1" {
		Unavailable(t, "needs a %s", "frobnicator")
		t.Fatal("Unavailable returned")
	}
	for _, tt := range []struct {
		ci      string
		fails   bool
		wantOut string
	}{
		{"", false, "--- SKIP: TestUnavailable"},
		{"true", true, "--- FAIL: TestUnavailable"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestUnavailable$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_HELPER=1", "CI="+tt.ci)
		out, err := cmd.CombinedOutput()
		if (err != nil) != tt.fails || !strings.Contains(string(out), tt.wantOut) || !strings.Contains(string(out), "needs a frobnicator") {
			t.Errorf("CI=%q: %v; want failed=%v and %q with the reason:\n%s", tt.ci, err, tt.fails, tt.wantOut, out)
		}
	}
}
