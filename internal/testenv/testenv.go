//go:build linux

package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// CPULockPath is the file every test package locks before it changes a CPU's online state,
// floods the kernel with uevents, or counts on receiving particular real uevents: test packages
// run in parallel, and two of them cycling one CPU, or one's storm overflowing the other's
// socket, would confuse both.
const CPULockPath = "/tmp/hotplug-agent-test-cpu.lock"

// RequireRoot ends t through Unavailable unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root: it changes CPU state and writes uevent files under /sys")
	}
}

// LockCPUs takes the cross-package CPU lock for the rest of t. It blocks until the lock is free.
func LockCPUs(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(CPULockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("open CPU lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("lock %s: %v", CPULockPath, err)
	}
	t.Cleanup(func() { f.Close() })
}

// HotpluggableCPU returns the highest-numbered CPU that has an online file, ending t through
// Unavailable when there is none.
func HotpluggableCPU(t testing.TB) int {
	t.Helper()
	paths, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*/online")
	var cpus []int
	for _, p := range paths {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(filepath.Dir(p)), "cpu"))
		if err == nil {
			cpus = append(cpus, n)
		}
	}
	if len(cpus) == 0 {
		Unavailable(t, "no CPU of this machine can be taken offline (no /sys/devices/system/cpu/cpuN/online)")
	}
	sort.Ints(cpus)
	return cpus[len(cpus)-1]
}

// SetCPUOnline writes the online state of CPU n. The first call for a CPU in a test registers a
// cleanup that brings it back online.
func SetCPUOnline(t testing.TB, n int, online bool) {
	t.Helper()
	p := fmt.Sprintf("/sys/devices/system/cpu/cpu%d/online", n)
	v := "0"
	if online {
		v = "1"
	}
	if err := os.WriteFile(p, []byte(v), 0); err != nil {
		t.Fatalf("write %s to %s: %v", v, p, err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(p, []byte("1"), 0); err != nil {
			t.Errorf("restore cpu%d online: %v", n, err)
		}
	})
}

// Synthesize writes action to the uevent file of the device at sysfs path dev (for example
// /sys/devices/system/cpu/cpu1), making the kernel send a synthetic uevent.
func Synthesize(dev, action string) error {
	err := os.WriteFile(filepath.Join(dev, "uevent"), []byte(action), 0)
	if err != nil && errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("synthesize %s on %s: %w", action, dev, err)
	}
	return err
}
