package sysfs

import (
	"fmt"
	"os"
)

// MemoryOnlineTypes are the values that bring a memory block online when written to its state
// file: the kernel picks the zone for "online", and "online_kernel" and "online_movable" ask for
// ZONE_NORMAL and ZONE_MOVABLE.
var MemoryOnlineTypes = []string{"online", "online_kernel", "online_movable"}

// SetCPUOnline writes 1 (or 0) to cpuN/online. The path is built from n here, never taken from
// outside. It blocks until the kernel has brought the CPU up or down (hundreds of milliseconds
// under emulation); it is safe for concurrent use, though the kernel serialises hotplug.
func (fsys FS) SetCPUOnline(n int, online bool) error {
	if n < 0 {
		return fmt.Errorf("sysfs: invalid CPU number %d", n)
	}
	v := "0"
	if online {
		v = "1"
	}
	return writeAttr(fsys.CPUPath(n)+"/online", v)
}

// SetMemoryState writes state ("online", "online_kernel", "online_movable" or "offline") to
// memoryN/state. The path is built from n here. It blocks until the kernel has changed the
// block's state; it is safe for concurrent use.
func (fsys FS) SetMemoryState(n int, state string) error {
	if n < 0 {
		return fmt.Errorf("sysfs: invalid memory block %d", n)
	}
	switch state {
	case "online", "online_kernel", "online_movable", "offline":
	default:
		return fmt.Errorf("sysfs: invalid memory block state %q", state)
	}
	return writeAttr(fsys.MemoryBlockPath(n)+"/state", state)
}

// writeAttr writes v to an existing sysfs attribute in one write. The kernel's own error (EBUSY,
// EINVAL, ...) is wrapped, so errors.Is works on it.
func writeAttr(p, v string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("sysfs: write %s: %w", p, unwrapPath(err))
	}
	_, err = f.Write([]byte(v))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sysfs: write %q to %s: %w", v, p, unwrapPath(err))
	}
	return nil
}
