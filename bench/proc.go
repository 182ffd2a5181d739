//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Mono returns CLOCK_MONOTONIC in nanoseconds: the clock the stamp helper reads, so that times
// taken in this process and in the programs it starts (and udevd starts) compare directly.
func Mono() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("clock_gettime(CLOCK_MONOTONIC): " + err.Error())
	}
	return ts.Nano()
}

// CPUTime returns the CPU time process pid has used, all its threads (living or gone) together,
// to the nanosecond: the process CPU-time clock of clock_getcpuclockid(3), which the kernel keeps
// from the scheduler's own accounting rather than from ticks.
func CPUTime(pid int) (time.Duration, error) {
	var ts unix.Timespec
	// The clock id of a process's CPUCLOCK_SCHED clock, as glibc's clock_getcpuclockid builds it.
	clock := int32((^pid)<<3 | 2)
	if err := unix.ClockGettime(clock, &ts); err != nil {
		return 0, fmt.Errorf("CPU time of process %d: %w", pid, err)
	}
	return time.Duration(ts.Nano()), nil
}

// Memory is what /proc/PID/status says of a process's resident memory.
type Memory struct {
	RSS  int64 `json:"rss_bytes"` // VmRSS: resident now
	Peak int64 `json:"hwm_bytes"` // VmHWM: the most it has been resident
}

// ReadMemory reads pid's VmRSS and VmHWM.
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.Peak
		default:
			continue
		}
		f := strings.Fields(v) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("/proc/%d/status: %s: unexpected %q", pid, k, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("/proc/%d/status: %s: %w", pid, k, err)
		}
		*dst = n << 10
	}
	if m.RSS == 0 || m.Peak == 0 {
		return Memory{}, fmt.Errorf("/proc/%d/status: no VmRSS or VmHWM", pid)
	}
	return m, nil
}

// LoadAvg returns the first three fields of /proc/loadavg ("0.42 0.51 0.88"): how busy the
// machine was around a measurement.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
