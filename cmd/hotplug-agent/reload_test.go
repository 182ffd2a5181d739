//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// eventsOf is an exec callback for processors that appends its HOTPLUG_EVENT to out.
func eventsOf(name, out string) string {
	return fmt.Sprintf("  - {name: %s, class: processor, exec: {command: [/bin/sh, -c, %q]}}\n", name, `echo "$HOTPLUG_EVENT" >> `+out)
}

// waitRecorded waits until the file at p holds n lines.
func waitRecorded(t *testing.T, p string, n int, what string) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if got := recorded(p); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s holds %q after 20 s; want %d lines", what, p, recorded(p), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIntegrationReload is systemctl reload on the real binary: `hotplug-agent reload` (the
// unit's ExecReload) applies a changed configuration file, a callback added and one removed,
// while the one that stays misses nothing; SIGHUP does the same; a file that does not parse is
// refused, `reload` exits 1 with the reason in one line, the agent says so in one log line and
// keeps running its configuration.
func TestIntegrationReload(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	dir := t.TempDir()
	stays, goes, comes, late := filepath.Join(dir, "stays"), filepath.Join(dir, "goes"), filepath.Join(dir, "comes"), filepath.Join(dir, "late")
	cfg := filepath.Join(dir, "config.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("callbacks:\n" + eventsOf("stays", stays) + eventsOf("goes", goes))
	sock := filepath.Join(dir, "control.sock")
	a := startAgent(t, "--config.file="+cfg, "--control.socket="+sock)
	cycle := func() {
		testenv.SetCPUOnline(t, cpu, false)
		testenv.SetCPUOnline(t, cpu, true)
	}
	cycle()
	waitRecorded(t, goes, 2, "goes, before the reload")

	write("callbacks:\n" + eventsOf("stays", stays) + eventsOf("comes", comes))
	out, errOut, code := ctl(t, "reload", "--control.socket="+sock)
	if code != 0 || out != "reloaded" {
		t.Fatalf("hotplug-agent reload: exit %d, %q, %q; want 0 and reloaded", code, out, errOut)
	}
	cycle()
	waitRecorded(t, comes, 2, "comes, added by the reload")
	if got := waitRecorded(t, stays, 4, "stays"); strings.Join(got, " ") != "removal arrival removal arrival" {
		t.Errorf("stays got %q; want every notification, once, in order", got)
	}
	if got := recorded(goes); len(got) != 2 {
		t.Errorf("goes, removed by the reload, got %q; want its two notifications from before", got)
	}

	// SIGHUP, as a reload without an answer.
	write("callbacks:\n" + eventsOf("stays", stays) + eventsOf("comes", comes) + eventsOf("late", late))
	a.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(a.logs.String(), `msg="configuration reloaded"`) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no second \"configuration reloaded\" in the log 20 s after SIGHUP")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cycle()
	waitRecorded(t, late, 2, "late, added by SIGHUP")

	// A file that does not parse: refused, in one line each; the running configuration stays.
	write("callbacks:\n  - {name: broken\n")
	out, errOut, code = ctl(t, "reload", "--control.socket="+sock)
	if code != 1 || strings.Count(errOut, "\n") != 0 || !strings.Contains(errOut, "kept its configuration") || !strings.Contains(errOut, "line") {
		t.Errorf("reload of a broken file: exit %d, stdout %q, stderr %q; want exit 1 and one line with the reason", code, out, errOut)
	}
	if n := strings.Count(a.logs.String(), `msg="configuration refused; the running one stays"`); n != 1 {
		t.Errorf("the agent logged the refusal %d times; want once", n)
	}
	cycle()
	waitRecorded(t, late, 4, "late, after a refused reload")
	if got := waitRecorded(t, stays, 8, "stays"); len(got) != 8 {
		t.Errorf("stays got %d notifications for 4 cycles; want 8", len(got))
	}
	a.stop(t)
}
