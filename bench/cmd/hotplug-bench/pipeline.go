//go:build linux

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// pipelineCmd runs the Go benchmarks of package bench (go test -bench), which drive the agent's
// own event loop, and a CPU profile of the one-registration pipeline, and keeps their output for
// the report: pipeline.txt (the benchmark lines), pipeline.prof with bench.test (the CPU profile
// and the binary it is of, for go tool pprof), pipeline-top.txt and pipeline-profile.txt (a table
// of where the CPU goes) and pipeline.json (the machine). It says where the profile is.
func pipelineCmd(ctx context.Context, fs *flag.FlagSet, out *string) error {
	count := fs.Int("count", 5, "runs of each benchmark (the report takes the median)")
	benchtime := fs.String("benchtime", "1s", "go test -benchtime")
	fs.Parse(os.Args[2:])
	m := machine()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	args := []string{"test", "-run", "^$", "-bench", ".", "-benchmem", "-count", strconv.Itoa(*count), "-benchtime", *benchtime, "./bench/"}
	fmt.Fprintf(os.Stderr, "go %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	os.Stdout.Write(b)
	if err != nil {
		return fmt.Errorf("go test -bench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(*out, "pipeline.txt"), b, 0o644); err != nil {
		return err
	}

	// The profile: one registration, long enough for a few thousand samples.
	prof, bin := filepath.Join(*out, "pipeline.prof"), filepath.Join(*out, "bench.test")
	args = []string{"test", "-run", "^$", "-bench", "^BenchmarkPipeline$/^registrations=1$", "-benchtime", "3s",
		"-cpuprofile", prof, "-o", bin, "./bench/"}
	fmt.Fprintf(os.Stderr, "go %s\n", strings.Join(args, " "))
	cmd = exec.CommandContext(ctx, "go", args...)
	cmd.Stderr = os.Stderr
	b, err = cmd.Output()
	if err != nil {
		return fmt.Errorf("go test -cpuprofile: %w", err)
	}
	// The profile covers the benchmark's calibration runs too: it gives the shares, and the
	// benchmark's own figure the CPU time per event.
	var perCPUSecond float64
	if m := regexp.MustCompile(`(?m)^BenchmarkPipeline/registrations=1\S*\s.*\s([0-9.]+) events/cpu-s`).FindSubmatch(b); m != nil {
		perCPUSecond, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-cum", "-nodecount", "400", bin, prof).Output()
	if err != nil {
		return fmt.Errorf("go tool pprof: %w", err)
	}
	if err := os.WriteFile(filepath.Join(*out, "pipeline-top.txt"), top, 0o644); err != nil {
		return err
	}
	table, err := profileTable(string(top), perCPUSecond)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "pipeline-profile.txt"), []byte(table), 0o644); err != nil {
		return err
	}
	fmt.Print(table)
	fmt.Fprintf(os.Stderr, "CPU profile of BenchmarkPipeline/registrations=1: %s (go tool pprof %s %s)\n", prof, bin, prof)
	m.done()
	return save(*out, "pipeline", &m)
}

// profiled are the parts of the agent's loop the profile table shows, by the function that holds
// them; cumulative time, so a part includes what it calls (a runtime line includes every caller).
var profiled = []struct{ label, fn string }{
	{"the event loop's goroutine (`agent.(*Agent).loop`: all that follows but the registration's goroutine, the saver and the GC)", "github.com/hotplug-agent/hotplug-agent/agent.(*Agent).loop"},
	{"... the kernel's part, done by the benchmark's source: the writes of the CPU's `online` file and of `cpu/online` before the uevent", "github.com/hotplug-agent/hotplug-agent/bench.(*replay).kernel"},
	{"... parse (`udev.ParseCompact`)", "github.com/hotplug-agent/hotplug-agent/udev.parse"},
	{"... count it (`metrics.Uevent`)", "github.com/hotplug-agent/hotplug-agent/metrics.(*Metrics).Uevent"},
	{"... translate (`state.(*Tracker).Handle`)", "github.com/hotplug-agent/hotplug-agent/state.(*Tracker).Handle"},
	{"... ... of which the sysfs read that confirms a batch's CPU transitions (`sysfs.(*OnlineCPUs).Read`: one pread of `cpu/online`, held open, for up to 256 uevents)", "github.com/hotplug-agent/hotplug-agent/sysfs.(*OnlineCPUs).Read"},
	{"... publish through the online gate (`online.(*Gate).Publish`: registry, memory devices, metrics, save signal)", "github.com/hotplug-agent/hotplug-agent/online.(*Gate).Publish"},
	{"... ... of which `notify.(*Registry).Publish` (lock, queue, wake)", "github.com/hotplug-agent/hotplug-agent/notify.(*Registry).Publish"},
	{"... ... of which `metrics.Notified`", "github.com/hotplug-agent/hotplug-agent/metrics.(*Metrics).Notified"},
	{"the registration's goroutine (`Registry.run`: wait, dispatch, callback, two histograms)", "github.com/hotplug-agent/hotplug-agent/notify.(*Registry).run"},
	{"the state-file saver (`agent.(*Agent).saver`)", "github.com/hotplug-agent/hotplug-agent/agent.(*Agent).saver"},
	{"system calls (`syscall.Syscall6`, every caller)", "internal/runtime/syscall/linux.Syscall6"},
	{"the time (`time.Now`)", "time.Now"},
	{"allocation (`runtime.mallocgc`)", "runtime.mallocgc"},
	{"garbage collection (`runtime.gcBgMarkWorker`)", "runtime.gcBgMarkWorker"},
	{"goroutine scheduling (`runtime.schedule`)", "runtime.schedule"},
}

// profileTable turns go tool pprof -top -cum output into the report's table: for each part, its
// share of all samples, and that share of the CPU time per event (1/perCPUSecond).
func profileTable(top string, perCPUSecond float64) (string, error) {
	var total float64
	if m := regexp.MustCompile(`Total samples = ([0-9.]+)(m?s)`).FindStringSubmatch(top); m != nil {
		total, _ = strconv.ParseFloat(m[1], 64)
		if m[2] == "ms" {
			total /= 1000
		}
	}
	if total == 0 || perCPUSecond == 0 {
		return "", fmt.Errorf("pprof output without a total, or no events/cpu-s (%v)", perCPUSecond)
	}
	cum := map[string]float64{}
	for _, l := range strings.Split(top, "\n") {
		f := strings.Fields(l)
		if len(f) < 6 {
			continue
		}
		v, err := parseSeconds(f[3])
		if err != nil {
			continue
		}
		cum[strings.TrimSuffix(strings.Join(f[5:], " "), " (inline)")] = v
	}
	// The benchmark times the replay's sysfs writes apart, after its clock stops (for
	// agent-events/cpu-s): those samples are not of the events' CPU time.
	total -= cum["github.com/hotplug-agent/hotplug-agent/bench.(*replay).kernelCPU"]
	perEvent := 1e9 / perCPUSecond
	var s strings.Builder
	fmt.Fprintf(&s, "In the profiled run (the profiler's own cost included): %.0f ns of CPU per event (%s events per CPU-second), %.1f s of samples.\n\n", perEvent, rate(perCPUSecond), total)
	s.WriteString("| part | share of CPU | ns per event |\n|---|---|---|\n")
	for _, p := range profiled {
		share := cum[p.fn] / total
		fmt.Fprintf(&s, "| %s | %.1f%% | %.0f |\n", p.label, 100*share, share*perEvent)
	}
	return s.String(), nil
}

// parseSeconds parses pprof's "1.23s" or "450ms".
func parseSeconds(s string) (float64, error) {
	switch {
	case strings.HasSuffix(s, "ms"):
		v, err := strconv.ParseFloat(strings.TrimSuffix(s, "ms"), 64)
		return v / 1000, err
	case strings.HasSuffix(s, "s"):
		return strconv.ParseFloat(strings.TrimSuffix(s, "s"), 64)
	}
	return 0, fmt.Errorf("not a duration: %q", s)
}
