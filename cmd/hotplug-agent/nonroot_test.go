//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// TestIntegrationRunAsNonRoot runs `hotplug-agent run` with no flags but a loopback address,
// as a user who is not root (nobody) with a home of its own, as `make run` does on a fresh
// machine: it must become ready, keep its state file in its home, say in one line what it
// cannot do without root (and warn of nothing else), and announce a real CPU going offline and
// online. It used to fail at start-up, unable to write /var/lib/hotplug-agent.
func TestIntegrationRunAsNonRoot(t *testing.T) {
	testenv.RequireRoot(t) // to run the agent as another user, and to cycle a CPU
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	const nobody = 65534

	// The binary must be reachable by nobody; the home is nobody's, in the sticky /tmp.
	if err := os.Chmod(filepath.Dir(binary), 0o755); err != nil {
		t.Fatal(err)
	}
	home, err := os.MkdirTemp("", "hotplug-agent-home")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	if err := os.Chown(home, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "run", "--web.listen-address=127.0.0.1:0")
	cmd.Dir = "/"
	cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	a := launchAgent(t, cmd)
	if code := a.status(t, "/healthz"); code != 200 {
		t.Fatalf("/healthz: %d, want 200", code)
	}

	// One line says what is missing without root; nothing else warns.
	var said []string
	for _, line := range strings.Split(a.logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			said = append(said, line)
		}
	}
	if len(said) != 1 || !strings.Contains(said[0], `msg="not running as root`) {
		t.Errorf("want one warning, that the agent does not run as root; got %d:\n%s", len(said), strings.Join(said, "\n"))
	} else {
		for _, want := range []string{"uid=65534", "no control socket", "SO_RCVBUFFORCE", "state_file=" + home} {
			if !strings.Contains(said[0], want) {
				t.Errorf("the warning does not say %q:\n%s", want, said[0])
			}
		}
	}
	state := filepath.Join(home, ".local/state/hotplug-agent/state.json")
	if fi, err := os.Stat(state); err != nil {
		t.Errorf("no state file in the user's home: %v", err)
	} else if st := fi.Sys().(*syscall.Stat_t); st.Uid != nobody || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: uid %d, mode %04o; want nobody's, 0600", state, st.Uid, fi.Mode().Perm())
	}

	events := a.subscribe(t, "class=processor")
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	testenv.SetCPUOnline(t, cpu, false)
	testenv.SetCPUOnline(t, cpu, true)
	for _, want := range []string{"removal", "arrival"} {
		if e := next(t, events, link+" "+want); e.Event != want || e.SymbolicLink != link {
			t.Errorf("got %s of %s, want %s of %s", e.Event, e.SymbolicLink, want, link)
		}
	}
	a.stop(t)
}
