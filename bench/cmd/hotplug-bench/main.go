//go:build linux

// Command hotplug-bench runs the agent's benchmarks on the real kernel and writes their figures.
//
//	hotplug-bench latency   [flags]  kernel to callback: bare recvmsg, in-process, exec, udevd RUN+=
//	hotplug-bench pipeline  [flags]  go test -bench of package bench, and a CPU profile
//	hotplug-bench storm     [flags]  16,384 memory block uevents into the real agent binary
//	hotplug-bench footprint [flags]  idle RSS and CPU, start-up time on /sys and on a large fixture
//	hotplug-bench qemu      [flags]  QMP device_add to /events, beside the guest kernel's uevent and a floor
//	hotplug-bench report    [flags]  rewrite the figures in BENCHMARKS.md from the results
//
// Each benchmark writes its result as JSON into --out (default .cache/bench) and prints a summary.
// The kernel benchmarks need root: they write uevent files under /sys, start udevd in a private
// mount and network namespace, and take the cross-package CPU lock of the tests while they run,
// so that no test's uevents mix with theirs. bench/run.sh (make bench) runs them all.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotplug-agent/hotplug-agent/bench"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	out := fs.String("out", ".cache/bench", "directory of the JSON results")
	var err error
	switch os.Args[1] {
	case "latency":
		err = latencyCmd(ctx, fs, out)
	case "pipeline":
		err = pipelineCmd(ctx, fs, out)
	case "storm":
		err = stormCmd(ctx, fs, out)
	case "footprint":
		err = footprintCmd(ctx, fs, out)
	case "qemu":
		err = qemuCmd(ctx, fs, out)
	case "report":
		err = reportCmd(fs, out)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "hotplug-bench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: hotplug-bench latency|pipeline|storm|footprint|qemu|report [flags] (-h for the flags of each)")
	os.Exit(2)
}

// Machine describes where and when a figure was taken.
type Machine struct {
	Date      string `json:"date"` // UTC, RFC 3339
	Kernel    string `json:"kernel"`
	CPU       string `json:"cpu"`
	CPUs      int    `json:"cpus"`
	MemoryGiB int    `json:"memory_gib"`
	Go        string `json:"go"`
	// Revision is the agent's source: bench/run.sh sets BENCH_REVISION from git (with -dirty
	// when the tree has changes).
	Revision string `json:"revision,omitempty"`
	// LoadBefore and LoadAfter are /proc/loadavg's 1, 5 and 15 minute averages.
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after,omitempty"`
}

func machine() Machine {
	m := Machine{
		Date:       time.Now().UTC().Format(time.RFC3339),
		CPUs:       runtime.NumCPU(),
		Go:         runtime.Version(),
		Revision:   os.Getenv("BENCH_REVISION"),
		LoadBefore: bench.LoadAvg(),
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemoryGiB = int((uint64(si.Totalram)*uint64(si.Unit) + 512<<20) >> 30)
	}
	return m
}

// done records the load at the end of a benchmark.
func (m *Machine) done() { m.LoadAfter = bench.LoadAvg() }

// save writes v as dir/name.json.
func save(dir, name string, v any) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(dir, name+".json")
	if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", p)
	return nil
}

// load reads dir/name.json into v; a missing file is reported as fs.ErrNotExist.
func load(dir, name string, v any) error {
	b, err := os.ReadFile(filepath.Join(dir, name+".json"))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// lockCPUs takes the lock that the test packages take before they change CPU state or count on
// particular uevents (testenv.CPULockPath), so that a benchmark's uevents and a test's do not mix.
// It waits for the lock, saying so once; the returned function releases it.
func lockCPUs(ctx context.Context) (func(), error) {
	f, err := os.OpenFile(testenv.CPULockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	said := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", testenv.CPULockPath, err)
		}
		if !said {
			fmt.Fprintf(os.Stderr, "waiting for %s (a test is using the CPUs' uevents)\n", testenv.CPULockPath)
			said = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// requireRoot fails unless the process runs as root.
func requireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: it writes uevent files under /sys (and starts udevd, for latency)")
	}
	return nil
}

// ms formats d in milliseconds with three decimals.
func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }
