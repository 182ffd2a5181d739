//go:build linux

package deploy

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// stagedFiles returns the files and links under dest, and the directories named for the agent.
func stagedFiles(t *testing.T, dest string) []string {
	t.Helper()
	var got []string
	err := filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dest, p)
		if !d.IsDir() || strings.Contains(rel, "hotplug-agent") {
			got = append(got, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestMakeUninstall stages `make install` under DESTDIR, then `make uninstall` with the same
// variables: nothing of the agent's is left but what it says it kept, a configuration the
// operator changed and the agent's state, and it says to stop the service first.
func TestMakeUninstall(t *testing.T) {
	testenv.Tool(t, "make", "Debian package make")
	vars := []string{"PREFIX=/usr", "UNITDIR=/usr/lib/systemd/system"}
	makeIn := func(dest, target string) string {
		t.Helper()
		out, err := exec.Command("make", append([]string{"-C", "..", target, "DESTDIR=" + dest}, vars...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
		return string(out)
	}

	t.Run("unchanged", func(t *testing.T) {
		dest := t.TempDir()
		makeIn(dest, "install")
		if len(stagedFiles(t, dest)) == 0 {
			t.Fatal("make install installed nothing")
		}
		out := makeIn(dest, "uninstall")
		if left := stagedFiles(t, dest); len(left) > 0 {
			t.Errorf("make uninstall left %q\n%s", left, out)
		}
		for _, want := range []string{
			"systemctl disable --now hotplug-agent",
			"removed /etc/hotplug-agent/config.yaml, the example configuration",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("make uninstall does not say %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "kept") {
			t.Errorf("make uninstall says it kept something:\n%s", out)
		}
	})

	t.Run("edited configuration and state", func(t *testing.T) {
		dest := t.TempDir()
		makeIn(dest, "install")
		cfg := filepath.Join(dest, "etc/hotplug-agent/config.yaml")
		if err := os.WriteFile(cfg, []byte("log_notifications: false\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		state := filepath.Join(dest, "var/lib/hotplug-agent/state.json")
		os.MkdirAll(filepath.Dir(state), 0o755)
		os.WriteFile(state, []byte("{}\n"), 0o600)
		wants := filepath.Join(dest, "etc/systemd/system/multi-user.target.wants/hotplug-agent.service")
		os.MkdirAll(filepath.Dir(wants), 0o755)
		os.Symlink("/usr/lib/systemd/system/hotplug-agent.service", wants)

		out := makeIn(dest, "uninstall")
		want := []string{
			"etc/hotplug-agent",
			"etc/hotplug-agent/config.yaml",
			"etc/systemd/system/multi-user.target.wants/hotplug-agent.service",
			"var/lib/hotplug-agent",
			"var/lib/hotplug-agent/state.json",
		}
		if diff := cmp.Diff(want, stagedFiles(t, dest)); diff != "" {
			t.Errorf("left after make uninstall (-want +got):\n%s\n%s", diff, out)
		}
		if b, _ := os.ReadFile(cfg); string(b) != "log_notifications: false\n" {
			t.Errorf("the edited configuration changed: %q", b)
		}
		for _, said := range []string{
			"kept /etc/hotplug-agent/config.yaml",
			"kept /var/lib/hotplug-agent",
			"still enabled: systemctl disable hotplug-agent",
		} {
			if !strings.Contains(out, said) {
				t.Errorf("make uninstall does not say %q:\n%s", said, out)
			}
		}
	})
}
