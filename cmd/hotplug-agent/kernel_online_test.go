//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// kernelSettingFiles are the kernel's settings for onlining hot-added memory, under /sys.
var kernelSettingFiles = []string{
	"/sys/devices/system/memory/auto_online_blocks",
	"/sys/module/memory_hotplug/parameters/online_policy",
	"/sys/module/memory_hotplug/parameters/auto_movable_ratio",
}

func readSettings(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, f := range kernelSettingFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.TrimSpace(string(b)))
	}
	return out
}

func writeSettings(t *testing.T, v []string) {
	t.Helper()
	for i, f := range kernelSettingFiles {
		if err := os.WriteFile(f, []byte(v[i]), 0); err != nil {
			t.Errorf("put back %s: %v", f, err)
		}
	}
}

// TestIntegrationKernelOnliningRestores runs the agent on this machine's real kernel with the
// online policy kernel: while it runs, the kernel's auto_online_blocks is online with the
// auto-movable online policy at the configured ratio; SIGTERM puts back what was there. An agent
// killed with SIGKILL leaves the kernel configured and the settings it found beside its state
// file, and the next start with another policy puts them back.
func TestIntegrationKernelOnliningRestores(t *testing.T) {
	testenv.RequireRoot(t)
	for _, f := range kernelSettingFiles {
		if _, err := os.Stat(f); err != nil {
			testenv.Unavailable(t, "this kernel has no %s (memory hotplug, Linux 5.15 or newer): %v", f, err)
		}
	}
	orig := readSettings(t)
	t.Cleanup(func() { writeSettings(t, orig) }) // whatever happens to the agents
	// A known start that differs from what the agent writes.
	start := []string{"offline", "contig-zones", "301"}
	writeSettings(t, start)

	dir := t.TempDir()
	statePath := filepath.Join(dir, "state.json")
	cfg := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kernelCfg := cfg("kernel.yaml", "online:\n  memory: kernel\n  movable_ratio: 250\n")
	noneCfg := cfg("none.yaml", "online:\n  memory: none\n")
	args := func(config string) []string {
		return []string{"--config.file=" + config, "--path.state=" + statePath, "--control.socket="}
	}
	configured := []string{"online", "auto-movable", "250"}
	check := func(when string, want []string) {
		t.Helper()
		if got := readSettings(t); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: auto_online_blocks, online_policy, auto_movable_ratio = %q; want %q", when, got, want)
		}
	}

	a := startAgent(t, args(kernelCfg)...)
	check("while the agent runs with memory: kernel", configured)
	a.stop(t)
	check("after SIGTERM", start)
	if _, err := os.Stat(statePath + ".kernel"); !os.IsNotExist(err) {
		t.Errorf("the settings' file is left after they were put back: %v", err)
	}

	a = startAgent(t, args(kernelCfg)...)
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	check("after SIGKILL", configured)
	if _, err := os.Stat(statePath + ".kernel"); err != nil {
		t.Errorf("no settings' file beside the state file after SIGKILL: %v", err)
	}
	a = startAgent(t, args(noneCfg)...)
	check("after the next start, with memory: none", start)
	if !strings.Contains(a.logs.String(), "the last run left the kernel configured") {
		t.Errorf("the agent did not say that the last run left the kernel configured")
	}
	a.stop(t)
	check("after the second SIGTERM", start)
}
