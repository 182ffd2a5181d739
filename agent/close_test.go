//go:build linux

package agent

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/config"
)

// TestNewFailsLeavesNothingRunning: when New fails late, after the configured callbacks are
// registered (and exec callbacks run for the interfaces present), it closes every registry it
// made: no goroutine and no file descriptor of it is left when it returns.
func TestNewFailsLeavesNothingRunning(t *testing.T) {
	dir := t.TempDir()
	// A control socket path that is a regular file: New fails after registering the callbacks.
	control := filepath.Join(dir, "control.sock")
	if err := os.WriteFile(control, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(`
callbacks:
  - name: exec-existing
    class: processor
    include_existing: true
    exec: {command: [/bin/sh, -c, "sleep 0.2"]}
  - name: hook
    class: memory
    webhook: {url: "http://127.0.0.1:1/hook"}
  - name: devices
    class: memory
    memory_devices: true
    log: true
  - name: pool
    kind: two_phase
    class: processor
    exec: {command: [/bin/true]}
  - name: guard
    kind: target_device
    target: /sys/devices/system/cpu/cpu1
    log: true
`))
	if err != nil {
		t.Fatal(err)
	}
	root := fixture(t)
	fds := func() int { return openFDs(t) }
	goroutines, before := settle(runtime.NumGoroutine), settle(fds)
	_, err = New(Options{SysfsPath: root, Config: cfg, ControlSocket: control,
		ListenAddresses: []string{"127.0.0.1:0"}, Source: newFakeSource()})
	if err == nil {
		t.Fatal("New with a control socket path that is a regular file succeeded")
	}
	// Once New has returned nothing of it runs: what is left must go without help, at once.
	if got := settle(runtime.NumGoroutine); got > goroutines {
		buf := make([]byte, 1<<20)
		t.Errorf("New failed (%v) and left %d goroutines behind:\n%s", err, got-goroutines, buf[:runtime.Stack(buf, true)])
	}
	if got := settle(fds); got > before {
		t.Errorf("New failed (%v) and left %d file descriptors open", err, got-before)
	}
}

// settle returns count's value once it has stopped falling: a goroutine whose work is done may
// take a moment to exit.
func settle(count func() int) int {
	n := count()
	for range 50 {
		time.Sleep(20 * time.Millisecond)
		m := count()
		if m >= n {
			return min(m, n)
		}
		n = m
	}
	return n
}
