//go:build linux

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hotplug-agent/hotplug-agent/bench"
)

// FootprintResult is the figure of the agent at rest and at start.
type FootprintResult struct {
	Machine Machine `json:"machine"`
	Command string  `json:"command"`
	// Starts is the number of starts timed for each ReadySys and ReadyFixture.
	Starts int `json:"starts"`
	// ReadySys is the time from just before the fork to the "agent ready" log line, on /sys.
	ReadySys bench.Summary `json:"ready_sys"`
	// ReadyFixture is the same on a generated tree of FixtureCPUs CPUs and FixtureBlocks
	// memory blocks (--path.sysfs), on tmpfs.
	ReadyFixture  bench.Summary `json:"ready_fixture"`
	FixtureCPUs   int           `json:"fixture_cpus"`
	FixtureBlocks int           `json:"fixture_blocks"`
	// LsmemFixture is the peer on the same fixture: `lsmem --sysroot`, which reads every memory
	// block as the agent does, from just before the fork to its exit, as many runs (after one
	// untimed). Its N is 0 when lsmem is not installed.
	LsmemFixture bench.Summary `json:"lsmem_fixture"`
	// SysCPUs and SysBlocks are what this machine's /sys holds.
	SysCPUs   int `json:"sys_cpus"`
	SysBlocks int `json:"sys_blocks"`
	// IdleRSS is VmRSS Settle after ready; IdleRSSEnd at the end of the idle window; IdleCPU
	// the CPU time the agent used during the window of Idle.
	Settle     time.Duration `json:"settle_ns"`
	Idle       time.Duration `json:"idle_ns"`
	IdleRSS    int64         `json:"idle_rss_bytes"`
	IdleRSSEnd int64         `json:"idle_rss_end_bytes"`
	IdlePeak   int64         `json:"idle_peak_rss_bytes"`
	IdleCPU    time.Duration `json:"idle_cpu_ns"`
	// StartCPU is the CPU time the agent used from its start to Settle after ready.
	StartCPU time.Duration `json:"start_cpu_ns"`
}

func footprintCmd(ctx context.Context, fs *flag.FlagSet, out *string) error {
	bin := fs.String("agent", "bin/hotplug-agent", "the agent binary (make build)")
	starts := fs.Int("starts", 20, "starts timed on /sys and on the fixture each")
	cpus := fs.Int("fixture-cpus", 1024, "CPUs of the fixture")
	blocks := fs.Int("fixture-blocks", 8192, "memory blocks of the fixture")
	idle := fs.Duration("idle", 60*time.Second, "the idle window")
	settle := fs.Duration("settle", 2*time.Second, "wait after ready before the idle window")
	fixtureDir := fs.String("fixture-dir", "/dev/shm", "where the fixture is generated (tmpfs, as sysfs is in memory)")
	lsmem := fs.String("lsmem", "lsmem", "the lsmem timed on the fixture beside the agent (util-linux); \"\" for none")
	fs.Parse(os.Args[2:])
	// No uevents are written, but the tests' storms would wake the agent during the idle window.
	unlock, err := lockCPUs(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	res := FootprintResult{
		Machine: machine(), Command: "hotplug-bench " + strings.Join(os.Args[1:], " "),
		Starts: *starts, FixtureCPUs: *cpus, FixtureBlocks: *blocks, Settle: *settle, Idle: *idle,
	}
	dir, err := os.MkdirTemp("", "hotplug-bench-footprint-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logPath := filepath.Join(dir, "agent.log")

	if mb, err := memoryBlocks(); err == nil {
		res.SysBlocks = len(mb)
	}
	if m, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*"); m != nil {
		res.SysCPUs = len(m)
	}

	// Start-up, on /sys. The first start warms the page cache for the binary; it is not counted.
	timeStarts := func(args ...string) (bench.Summary, error) {
		var d []time.Duration
		for i := range *starts + 1 {
			a, err := startAgentProc(ctx, *bin, logPath, args...)
			if err != nil {
				return bench.Summary{}, err
			}
			if i > 0 {
				d = append(d, a.ready)
			}
			if err := a.stop(); err != nil {
				return bench.Summary{}, fmt.Errorf("agent exit: %w", err)
			}
		}
		return bench.Summarize(d), nil
	}
	if res.ReadySys, err = timeStarts(); err != nil {
		return err
	}

	// Start-up on a large machine's tree, at sys/ of a root for lsmem --sysroot.
	root, err := os.MkdirTemp(*fixtureDir, "hotplug-bench-fixture-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	fixture := filepath.Join(root, "sys")
	if err := os.Mkdir(fixture, 0o755); err != nil {
		return err
	}
	if err := bench.WriteFixture(fixture, *cpus, *blocks); err != nil {
		return err
	}
	if res.ReadyFixture, err = timeStarts("--path.sysfs=" + fixture); err != nil {
		return err
	}
	if *lsmem != "" {
		if path, err := exec.LookPath(*lsmem); err == nil {
			if res.LsmemFixture, err = timeRuns(*starts, path, "--sysroot", root); err != nil {
				return err
			}
		}
	}

	// At rest.
	a, err := startAgentProc(ctx, *bin, logPath)
	if err != nil {
		return err
	}
	defer a.stop()
	select {
	case <-time.After(*settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	mem, err := bench.ReadMemory(a.pid)
	if err != nil {
		return err
	}
	res.IdleRSS = mem.RSS
	cpu0, err := bench.CPUTime(a.pid)
	if err != nil {
		return err
	}
	res.StartCPU = cpu0
	fmt.Fprintf(os.Stderr, "footprint: idle for %s\n", *idle)
	select {
	case <-time.After(*idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	cpu1, err := bench.CPUTime(a.pid)
	if err != nil {
		return err
	}
	res.IdleCPU = cpu1 - cpu0
	if mem, err = bench.ReadMemory(a.pid); err != nil {
		return err
	}
	res.IdleRSSEnd, res.IdlePeak = mem.RSS, mem.Peak
	if err := a.stop(); err != nil {
		return fmt.Errorf("agent exit: %w", err)
	}
	res.Machine.done()
	fmt.Printf("footprint: ready on /sys p50 %s max %s; on the %d-CPU %d-block fixture p50 %s max %s (lsmem p50 %s); idle RSS %.1f MiB; CPU over %s idle %s (load %s -> %s)\n",
		ms(res.ReadySys.P50), ms(res.ReadySys.Max), *cpus, *blocks, ms(res.ReadyFixture.P50), ms(res.ReadyFixture.Max),
		ms(res.LsmemFixture.P50), mib(res.IdleRSS), *idle, ms(res.IdleCPU), res.Machine.LoadBefore, res.Machine.LoadAfter)
	return save(*out, "footprint", &res)
}

// timeRuns runs bin with args runs+1 times, its output discarded, and returns the distribution of
// the last runs' times from just before the fork to its exit (the first warms the page cache).
func timeRuns(runs int, bin string, args ...string) (bench.Summary, error) {
	var d []time.Duration
	for i := range runs + 1 {
		cmd := exec.Command(bin, args...)
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(t0)
		if err != nil {
			return bench.Summary{}, fmt.Errorf("%s: %w\n%s", cmd, err, out)
		}
		if i > 0 {
			d = append(d, took)
		}
	}
	return bench.Summarize(d), nil
}
