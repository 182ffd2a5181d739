//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// recordingConfig writes a config whose exec callback records each notification's environment
// in dir as <n>-<event>-<cause>.env, n counting calls.
func recordingConfig(t *testing.T, dir string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	script := fmt.Sprintf(`n=$(ls %[1]s | wc -l); env | grep '^HOTPLUG_' | sort > %[1]s/$n-$HOTPLUG_EVENT-$HOTPLUG_CAUSE.env`, dir)
	os.WriteFile(cfg, []byte(fmt.Sprintf(`callbacks:
  - name: record
    class: processor
    exec:
      command: ["/bin/sh", "-c", %q]
`, script)), 0o600)
	return cfg
}

// records waits until dir holds n records and returns their names in order.
func records(t *testing.T, dir string, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		entries, _ := os.ReadDir(dir)
		if len(entries) >= n {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			slices.SortFunc(names, func(a, b string) int {
				var x, y int
				fmt.Sscanf(a, "%d-", &x)
				fmt.Sscanf(b, "%d-", &y)
				return x - y
			})
			return names
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callback records within 20 s; want %d", len(entries), n)
		}
	}
}

// TestIntegrationRestart stops the agent, takes a CPU offline while it is down, and starts it
// again with the same state file: the removal is announced at start, before live events, and the
// next live change follows. A corrupt state file is reported and the agent starts all the same.
func TestIntegrationRestart(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	state := filepath.Join(t.TempDir(), "state.json")
	out := t.TempDir()
	cfg := recordingConfig(t, out)

	a := startAgent(t, "--config.file="+cfg, "--path.state="+state)
	a.stop(t) // SIGTERM: saves the state file
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("no state file after a clean stop: %v", err)
	}

	testenv.SetCPUOnline(t, cpu, false) // while the agent is down
	a = startAgent(t, "--config.file="+cfg, "--path.state="+state)
	testenv.SetCPUOnline(t, cpu, true) // live
	got := records(t, out, 2)
	want := []string{"0-removal-startup.env", "1-arrival-uevent.env"}
	if !slices.Equal(got, want) {
		t.Fatalf("callback records %v; want %v (the removal made while down, then the live arrival)", got, want)
	}
	env, _ := os.ReadFile(filepath.Join(out, got[0]))
	if !strings.Contains(string(env), "HOTPLUG_SYMBOLIC_LINK="+link+"\n") {
		t.Errorf("the startup removal is not of %s:\n%s", link, env)
	}
	a.stop(t)

	// A corrupt state file: reported, and the agent starts with the machine as it is.
	os.WriteFile(state, []byte(`{"version":1,"interfaces":[{"class_guid":"trunc`), 0o600)
	a = startAgent(t, "--config.file="+cfg, "--path.state="+state)
	if !strings.Contains(a.logs.String(), "state file unusable") {
		t.Errorf("a corrupt state file was not reported; log:\n%s", a.logs.String())
	}
	a.stop(t)
	if b, err := os.ReadFile(state); err != nil || !strings.Contains(string(b), link) {
		t.Errorf("the state file was not rewritten after a corrupt one: %v", err)
	}
}
