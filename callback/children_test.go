//go:build linux

package callback

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// markers numbers the sleeps the children tests start, so that each has an argument no other
// process has.
var markers atomic.Int64

// marker returns a sleep duration of about 300 s that no other process on the machine has in its
// argument list: "300.<this test process's pid><n>".
func marker() string {
	return fmt.Sprintf("300.%d%03d", os.Getpid(), markers.Add(1))
}

// withMarker returns the pids of the live processes (not zombies, whose cmdline is empty) that
// have the argument m: `sleep m`, and `setsid sleep m` before it has become the sleep.
func withMarker(t *testing.T, m string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if args := strings.Split(string(b), "\x00"); len(args) > 1 && slices.Contains(args[1:], m) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// endLeftovers kills, by pid, the sleeps with marker m that a test started and expected to
// escape, so that none outlives the test.
func endLeftovers(t *testing.T, m string) {
	t.Cleanup(func() {
		for _, pid := range withMarker(t, m) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// testCgroups returns the exec cgroups of a test, or ends t through testenv.Unavailable where this
// machine cannot give commands a cgroup of their own.
func testCgroups(t *testing.T, logger *slog.Logger) *Cgroups {
	t.Helper()
	testenv.RequireRoot(t)
	cg, err := NewCgroups(fmt.Sprintf("hotplug-agent-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-")), logger)
	if err != nil {
		testenv.Unavailable(t, "no cgroup v2 for exec callbacks here: %v", err)
	}
	t.Cleanup(func() {
		if err := cg.Close(); err != nil {
			t.Errorf("Cgroups.Close: %v", err)
		}
	})
	return cg
}

// waitReady ends a script line: it waits until the file %[2]s exists.
const waitReady = "\nwhile [ ! -e %[2]s ]; do sleep 0.01; done"

// TestExecChildrenEnded runs commands that exit 0 and leave a process behind, as a RUN+= program
// of udev must not: the callback succeeds, returns promptly, and by then what it left is gone. In
// a cgroup of its own a daemon that called setsid is ended too; with only its process group it
// escapes (the documented limit), and the callback still succeeds.
func TestExecChildrenEnded(t *testing.T) {
	tests := []struct {
		name   string
		script string // %[1]s: the marker, %[2]s: a file to create once started
		escape bool   // with only a process group, the child outlives the callback
	}{
		{"background child keeping stdout", "sleep %[1]s &", false},
		{"background child with its output elsewhere", "sleep %[1]s >/dev/null 2>&1 &", false},
		{"grandchild", "sh -c 'sleep %[1]s &' &", false},
		// The command exits only once the daemon has its own session, out of the group's reach.
		{"setsid daemon keeping stdout", `setsid sh -c 'touch %[2]s; exec sleep %[1]s' &` + waitReady, true},
		{"setsid daemon with its output elsewhere", `setsid sh -c 'touch %[2]s; exec sleep %[1]s' >/dev/null 2>&1 </dev/null &` + waitReady, true},
	}
	for _, mode := range []string{"process group", "cgroup"} {
		t.Run(mode, func(t *testing.T) {
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			var cg *Cgroups
			if mode == "cgroup" {
				cg = testCgroups(t, logger)
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					m := marker()
					endLeftovers(t, m)
					ready := filepath.Join(t.TempDir(), "ready")
					cb := Exec{
						Command: []string{"/bin/sh", "-c", fmt.Sprintf(tt.script, m, ready) + "\necho done; exit 0"},
						Timeout: time.Minute,
						Logger:  logger,
						Cgroups: cg,
					}.Callback()
					// A callback that waited for what it left (a sleep of 300 s) would run into its
					// one-minute timeout and fail; Exec's WaitDelay lets it return once the command
					// has exited, whoever still holds its output.
					err := cb(context.Background(), cpuNote(), nil)
					if err != nil {
						t.Errorf("callback that exited 0: %v; want success", err)
					}
					left := withMarker(t, m)
					if tt.escape && cg == nil {
						if len(left) == 0 {
							t.Errorf("the setsid daemon did not outlive the callback: the test no longer shows the limit of a process group")
						}
						return
					}
					if len(left) > 0 {
						t.Errorf("processes %v (sleep %s) outlived the callback; want them ended when it exits", left, m)
					}
				})
			}
			if t.Failed() {
				t.Logf("log:\n%s", logs.String())
			}
		})
	}
}

// TestExecExitBeforeTimeout: a command that exits before its timeout is judged by its exit, even
// when a daemon it started holds its output open past the timeout (with only a process group,
// the callback then waits out WaitDelay): an exit 0 is a success, an add_start's consent, and
// a failure gives its own reason, not "killed after the timeout".
func TestExecExitBeforeTimeout(t *testing.T) {
	for _, tt := range []struct {
		name string
		exit string
		want string // "" for success
	}{
		{"exit 0", "exit 0", ""},
		{"exit 1", "echo 'refused: pool is pinned' >&2; exit 1", "exit status 1: refused: pool is pinned"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := marker()
			endLeftovers(t, m)
			ready := filepath.Join(t.TempDir(), "ready")
			script := fmt.Sprintf(`setsid sh -c 'touch %[2]s; exec sleep %[1]s' &`+waitReady, m, ready) + "\n" + tt.exit
			// The command must exit before its timeout, and the daemon hold its output past it:
			// the callback returns WaitDelay (1 s) after the exit. So the timeout is just under
			// WaitDelay, the longest a loaded machine gets to start the shell, setsid, touch and
			// the polling sleeps, and to end the shell.
			const timeout = 900 * time.Millisecond
			start := time.Now()
			err := Exec{Command: []string{"/bin/sh", "-c", script}, Timeout: timeout}.
				ChangeCallback()(context.Background(), notify.ChangeNotification{State: notify.AddStart}, nil)
			took := time.Since(start)
			if took < timeout {
				t.Fatalf("the callback returned after %s, before the timeout: the test no longer shows a leftover holding the output past it", took)
			}
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("a command that exited 0 before its timeout: %v (after %s); want success", err, took)
			case tt.want != "" && (err == nil || !strings.HasSuffix(err.Error(), tt.want)):
				t.Errorf("error = %v (after %s); want one ending %q", err, took, tt.want)
			}
		})
	}
}

// TestExecCgroupTimeout: a command in its own cgroup that overruns its timeout is killed with
// everything it started, a setsid daemon included, and its cgroup is removed.
func TestExecCgroupTimeout(t *testing.T) {
	cg := testCgroups(t, nil)
	m := marker()
	endLeftovers(t, m)
	err := Exec{
		Command: []string{"/bin/sh", "-c", "setsid sleep " + m + " >/dev/null 2>&1 </dev/null & sleep 300"},
		Timeout: 300 * time.Millisecond,
		Cgroups: cg,
	}.Callback()(context.Background(), cpuNote(), nil)
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("error = %v; want a timeout error", err)
	}
	if left := withMarker(t, m); len(left) > 0 {
		t.Errorf("processes %v outlived the timeout", left)
	}
	if runs := runCgroups(t, cg); len(runs) > 0 {
		t.Errorf("run cgroups %v left in %s; want none", runs, cg.dir)
	}
}

// TestNewCgroupsEndsLeftovers: a cgroup directory of the same name, left by a process that was
// killed while a command ran, is emptied at start: its processes are killed before any callback
// of the new process runs.
func TestNewCgroupsEndsLeftovers(t *testing.T) {
	first := testCgroups(t, nil)
	m := marker()
	endLeftovers(t, m)
	run, err := first.newRun()
	if err != nil {
		t.Fatal(err)
	}
	cmd := osexec.Command("/bin/sh", "-c", "setsid sleep "+m+" >/dev/null 2>&1 </dev/null &")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: run.fd}
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(withMarker(t, m)) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the leftover did not start")
		}
	}
	// As if this process were killed here: the run's cgroup is not removed, and the next
	// process with the same name finds it.
	second, err := NewCgroups(filepath.Base(first.dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	if left := withMarker(t, m); len(left) > 0 {
		t.Errorf("processes %v of the last run's cgroup are alive after NewCgroups; want them killed", left)
	}
	if err := second.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Stat(first.dir); err == nil {
		t.Errorf("%s still exists after Close", first.dir)
	}
}

// runCgroups lists the run cgroups in cg's directory.
func runCgroups(t *testing.T, cg *Cgroups) []string {
	t.Helper()
	entries, err := os.ReadDir(cg.dir)
	if err != nil {
		t.Fatal(err)
	}
	var runs []string
	for _, e := range entries {
		if e.IsDir() {
			runs = append(runs, e.Name())
		}
	}
	return runs
}

func TestCgroup2Dir(t *testing.T) {
	const hybrid = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	const unified = `25 22 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
`
	const bound = `25 22 0:22 /system.slice /mnt/my\040cgroups rw - cgroup2 cgroup2 rw
`
	tests := []struct {
		name, mountinfo, path, want string
		ok                          bool
	}{
		{"hybrid: cgroup v1 controllers, cgroup2 at unified", hybrid, "/", "/sys/fs/cgroup/unified", true},
		{"hybrid, a service's cgroup", hybrid, "/system.slice/hotplug-agent.service", "/sys/fs/cgroup/unified/system.slice/hotplug-agent.service", true},
		{"unified", unified, "/system.slice/hotplug-agent.service", "/sys/fs/cgroup/system.slice/hotplug-agent.service", true},
		{"a subtree mounted, with an escaped space", bound, "/system.slice/x.service", "/mnt/my cgroups/x.service", true},
		{"a subtree that does not hold the cgroup", bound, "/user.slice/x.service", "", false},
		{"a sibling whose name begins like the subtree", bound, "/system.slice2/x.service", "", false},
		{"mounted at /", "25 22 0:22 / / rw - cgroup2 cgroup2 rw\n", "/a.service", "/a.service", true},
		{"a path that leaves the mount", bound, "/system.slice/../../etc", "", false},
		{"cgroup v1 only", "34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n", "/", "", false},
		{"garbage", "no separator here\n - \n", "/", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := cgroup2Dir(tt.mountinfo, tt.path)
			if got != tt.want || ok != tt.ok {
				t.Errorf("cgroup2Dir(%q) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// FuzzCgroup2Dir: any mountinfo text and cgroup path give a clean directory inside a cgroup2
// mount point, or none, and never a panic.
func FuzzCgroup2Dir(f *testing.F) {
	f.Add("41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", "/a/b")
	f.Add("25 22 0:22 /s /mnt/x\\040y rw - cgroup2 cgroup2 rw\n", "/s/../../etc")
	f.Fuzz(func(t *testing.T, mountinfo, path string) {
		dir, ok := cgroup2Dir(mountinfo, path)
		if ok && filepath.Clean(dir) != dir {
			t.Fatalf("cgroup2Dir(%q, %q) = %q: not a clean path", mountinfo, path, dir)
		}
	})
}
