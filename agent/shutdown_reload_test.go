//go:build linux

package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/config"
)

// TestReloadDuringShutdownRegistersNothing: a reload in progress when the agent is told to stop
// (waiting for a changed callback's command to finish) registers nothing once the shutdown has
// begun: no callback it would have made starts, or runs a command, during the shutdown.
func TestReloadDuringShutdownRegistersNothing(t *testing.T) {
	root := fixture(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	exec := func(name, script string) string {
		return fmt.Sprintf("  - {name: %s, class: processor, include_existing: true, exec: {command: [/bin/sh, -c, %q]}}\n", name, script)
	}
	hold := exec("hold", "touch "+filepath.Join(dir, "hold.started")+"; sleep 3")
	marker := filepath.Join(dir, "marker")
	write := func(s string) {
		if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("log_notifications: false\ncallbacks:\n" + hold + exec("slow", "touch "+filepath.Join(dir, "slow.started")+"; sleep 1"))
	load := func() (*config.Config, error) { return config.Load(cfgPath) }
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	a, _, cancel, done := runAgent(t, Options{SysfsPath: root, Config: cfg, LoadConfig: load, ShutdownGrace: 5 * time.Second})
	for _, f := range []string{"hold.started", "slow.started"} {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never started", f)
			}
		}
	}
	// slow is changed: the reload waits (its grace) for slow's command to finish.
	write("log_notifications: false\ncallbacks:\n" + hold + exec("slow", "date +%s.%N >> "+marker))
	reloaded := make(chan error, 1)
	go func() { reloaded <- a.Reload(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	stopAt := time.Now()
	cancel() // SIGTERM: registry.Stop waits for hold's command
	<-done
	done <- nil
	t.Logf("reload: %v; Run returned %v after the stop", <-reloaded, time.Since(stopAt))
	if b, err := os.ReadFile(marker); err == nil {
		t.Errorf("a callback registered by the reload ran after SIGTERM, after registry.Stop:\n%s(stop at %d.%09d)", b, stopAt.Unix(), stopAt.Nanosecond())
	}
}
