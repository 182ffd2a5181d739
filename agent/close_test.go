//go:build linux

package agent

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
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
	cfg := everyKind(t)
	root := fixture(t)
	fds := func() int { return openFDs(t) }
	goroutines, before := settle(runtime.NumGoroutine), settle(fds)
	_, err := New(Options{SysfsPath: root, Config: cfg, ControlSocket: control,
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

// errInjected is the failure TestNewFailsAtEachStage makes each stage of New report.
var errInjected = errors.New("injected failure")

// TestNewFailsAtEachStage: whichever stage of New fails, New releases what the stages before it
// and the failing one made (the failure is injected once the stage has built everything it
// builds, the most it can have to release): no goroutine, no file descriptor, no HTTP listener,
// no control socket and no uevent socket is left when it returns. An agent that New built and
// that never ran (the case "none") is released as completely by close.
func TestNewFailsAtEachStage(t *testing.T) {
	cfg := everyKind(t)
	var names []string
	for _, s := range (&builder{a: &Agent{}}).stages() {
		names = append(names, s.name)
	}
	for _, fail := range append(names, "none") {
		t.Run(fail, func(t *testing.T) {
			dir := t.TempDir()
			control := filepath.Join(dir, "control.sock")
			addr := freeAddress(t)
			root := fixture(t)
			goroutines, fds := settle(runtime.NumGoroutine), settle(func() int { return openFDs(t) })
			var built []string
			a, err := New(Options{SysfsPath: root, Config: cfg, ControlSocket: control, StatePath: filepath.Join(dir, "state.json"),
				ListenAddresses: []string{addr}, ShutdownGrace: 5 * time.Second,
				stageDone: func(stage string) error {
					built = append(built, stage)
					if stage == fail {
						return errInjected
					}
					return nil
				}})
			switch {
			case fail == "none" && err != nil:
				t.Fatalf("New: %v", err)
			case fail == "none":
				if !slices.Equal(built, names) {
					t.Fatalf("stages built: %v; want %v", built, names)
				}
				a.close()
			case !errors.Is(err, errInjected):
				t.Fatalf("New = %v; want the failure injected at stage %s", err, fail)
			case built[len(built)-1] != fail:
				t.Fatalf("stages built: %v; want them to end at %s", built, fail)
			}
			// Once New has returned nothing of it runs: what is left must go without help, at once.
			if got := settle(runtime.NumGoroutine); got > goroutines {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines left behind:\n%s", got-goroutines, buf[:runtime.Stack(buf, true)])
			}
			if got := settle(func() int { return openFDs(t) }); got > fds {
				t.Errorf("%d file descriptors left open", got-fds)
			}
			if l, err := net.Listen("tcp", addr); err != nil {
				t.Errorf("the HTTP address is still taken: %v", err)
			} else {
				l.Close()
			}
			if _, err := os.Lstat(control); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the control socket %s is still there (%v)", control, err)
			}
		})
	}
}

// freeAddress returns a TCP address on 127.0.0.1 that nothing listens on.
func freeAddress(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// everyKind is a configuration with a callback of every kind, one of them an exec callback that
// runs for the interfaces present and takes a while.
func everyKind(t *testing.T) *config.Config {
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
	return cfg
}
