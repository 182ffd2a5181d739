//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/bench"
	"github.com/hotplug-agent/hotplug-agent/bench/onlining"
)

func TestReplaceBlock(t *testing.T) {
	doc := "# T\n<!-- bench:a -->\nold\n<!-- /bench:a -->\ntext\n"
	out, err := replaceBlock([]byte(doc), "a", "new")
	if err != nil {
		t.Fatal(err)
	}
	if want := "# T\n<!-- bench:a -->\nnew\n<!-- /bench:a -->\ntext\n"; string(out) != want {
		t.Errorf("got %q; want %q", out, want)
	}
	if _, err := replaceBlock([]byte(doc), "b", "x"); err == nil {
		t.Error("a missing block is not an error")
	}
}

func TestRate(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567"} {
		if got := rate(in); got != want {
			t.Errorf("rate(%v) = %q; want %q", in, got, want)
		}
	}
}

// The report reads go test -bench output, taking the median of the runs of each benchmark.
func TestPipelineMedian(t *testing.T) {
	dir := t.TempDir()
	out := `goos: linux
BenchmarkParse-2   	 1000000	      500.0 ns/op	 896 B/op	       1 allocs/op
BenchmarkParse-2   	 1000000	      700.0 ns/op	 896 B/op	       1 allocs/op
BenchmarkParse-2   	 1000000	      600.0 ns/op	 896 B/op	       1 allocs/op
BenchmarkPipeline/registrations=1-2   	  400000	      3000 ns/op	    450000 agent-events/cpu-s	    300000 events/cpu-s	    330000 events/s	    1600 B/op	       5 allocs/op
PASS
`
	if err := os.WriteFile(filepath.Join(dir, "pipeline.txt"), []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &report{dir: dir}
	if err := r.pipelineResult(); err != nil {
		t.Fatal(err)
	}
	if got := r.pb["BenchmarkParse"]["ns/op"]; got != 600 {
		t.Errorf("median ns/op of Parse = %v; want 600", got)
	}
	if got := r.pb["BenchmarkPipeline/registrations=1"]["events/cpu-s"]; got != 300000 {
		t.Errorf("events/cpu-s = %v", got)
	}
	text, err := r.pipeline()
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range []string{"| `Parse` | 600 | 1,666,667 | 1,666,667 | - | 896 | 1 |",
		"| `Pipeline/registrations=1` | 3000 | 330,000 | 300,000 | 450,000 | 1600 | 5 |"} {
		if !strings.Contains(text, row) {
			t.Errorf("pipeline table without %q:\n%s", row, text)
		}
	}
	// The targets are judged by the agent alone.
	if got := agentRate(r.pb["BenchmarkPipeline/registrations=1"]); got != 450000 {
		t.Errorf("the agent alone: %v events/s per core; want 450000", got)
	}
	if got := agentRate(r.pb["BenchmarkParse"]); got != 0 {
		t.Errorf("a line without events/cpu-s: %v; want 0", got)
	}
}

func TestProfileTable(t *testing.T) {
	// 3.00s of samples, 0.50s of them the benchmark's timing of the replay's writes, which are
	// not the events' CPU time: the shares are of 2.50s.
	top := `Type: cpu
Duration: 3s, Total samples = 3.00s (100%)
      flat  flat%   sum%        cum   cum%
     0.10s  4.00%  4.00%      0.50s 20.00%  github.com/hotplug-agent/hotplug-agent/udev.parse
     0.05s  2.00%  6.00%     250ms 10.00%  time.Now (inline)
     0.01s  0.33%  6.33%      0.50s 16.67%  github.com/hotplug-agent/hotplug-agent/bench.(*replay).kernelCPU
`
	got, err := profileTable(top, 400000)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2500 ns of CPU per event (400,000 events per CPU-second), 2.5 s of samples", "| ... parse (`udev.ParseCompact`) | 20.0% | 500 |", "| the time (`time.Now`) | 10.0% | 250 |"} {
		if !strings.Contains(got, want) {
			t.Errorf("profile table lacks %q:\n%s", want, got)
		}
	}
}

// The onlining table takes the median of the runs of each hot-add and onliner, and checks the
// targets against them.
func TestRenderOnlining(t *testing.T) {
	res := &onlining.Result{QEMU: "QEMU 10", GuestKernel: "6.1", BootMemory: "1 GiB", Revision: "abc", Date: "d"}
	add := func(mode string, secs ...float64) {
		for i, s := range secs {
			res.Runs = append(res.Runs, onlining.Run{Scenario: onlining.Scenario{Name: "pc-dimm 8 GiB"}, Blocks: 64, Mode: mode, Run: i + 1,
				LastBlock: time.Duration(s * 1e9), DeviceArrival: time.Duration((s + 0.1) * 1e9), AgentHWM: 20 << 20,
				DeviceNotifications: 1, LoadBefore: "1.00 1.00 1.00", LoadAfter: "2.00 1.00 1.00"})
		}
	}
	add("kernel", 4, 3, 5)
	add("udev", 30, 20, 25)
	add("agent", 4.4, 4.6, 9)
	out := renderOnlining(res)
	for _, want := range []string{
		"| pc-dimm 8 GiB | 64 | 4.00 s / 4.10 s | 25.00 s / 25.10 s | 4.60 s / 4.70 s | 1.15x / 1.15x | 5.43x / 5.34x |",
		"| pc-dimm 8 GiB: agent within 1.2x of the kernel's auto-online | 1.15x | met |",
		"| pc-dimm 8 GiB: agent at least 5x faster than the udev rule | 5.43x | met |",
		"| agent's peak RSS (VmHWM) under 30 MiB | 20.0 MiB | met |",
		"| pc-dimm 8 GiB | agent | 3 | 4.40 s to 9.00 s | 1.00 to 2.00 | 1 | 20.0 MiB |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the onlining report lacks %q:\n%s", want, out)
		}
	}
}

// The real cycles' table has a row per path timed, and reads results from before every path was.
func TestRealTable(t *testing.T) {
	sum := func(p50 time.Duration) bench.Summary { return bench.Summary{N: 3, P50: p50, P99: p50, Max: p50} }
	for _, tc := range []struct {
		name string
		rc   RealCycles
		want []string
	}{
		{"every path", RealCycles{Cycles: 3,
			FromWrite:  map[string]bench.Summary{vFloor: sum(20e6), vInproc: sum(25e6), vExec: sum(27e6), vUdevd: sum(28e6)},
			AfterFloor: map[string]bench.Summary{vInproc: sum(5e6), vExec: sum(7e6), vUdevd: sum(8e6)},
			Lost:       map[string]int{vUdevd: 1}},
			[]string{"| (a) bare recvmsg loop (the floor) | 20.0 | 20.0 | 20.0 |  |  |  |",
				"| (b) agent, in-process Go callback | 25.0 | 25.0 | 25.0 | 5.000 | 5.000 | 0 |",
				"| (c) agent, exec callback | 27.0 | 27.0 | 27.0 | 7.000 | 7.000 | 0 |",
				"| (d) systemd-udevd, `RUN+=` | 28.0 | 28.0 | 28.0 | 8.000 | 8.000 | 1 |"}},
		{"in-process only", RealCycles{Cycles: 3,
			FromWrite: map[string]bench.Summary{vFloor: sum(20e6), vInproc: sum(25e6)},
			FromFloor: sum(5e6)},
			[]string{"| (b) agent, in-process Go callback | 25.0 | 25.0 | 25.0 | 5.000 | 5.000 | 0 |"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := realTable(&tc.rc, 1)
			for _, w := range tc.want {
				if !strings.Contains(got, w+"\n") {
					t.Errorf("no row %q in\n%s", w, got)
				}
			}
			if tc.rc.FromWrite[vExec].N == 0 && strings.Contains(got, "exec callback") {
				t.Errorf("a row for a path not timed:\n%s", got)
			}
		})
	}
}

// The machine table says which revision of the agent each figure is of: a partial run rewrites
// only its own figures, so they may differ.
func TestMachineTable(t *testing.T) {
	dir := t.TempDir()
	m := Machine{Date: "2026-01-01T00:00:00Z", CPU: "AMD EPYC", CPUs: 2, MemoryGiB: 24, Kernel: "6.18", Go: "go1.26",
		Revision: "abc1234", LoadBefore: "1.00 1.00 1.00", LoadAfter: "2.00 1.00 1.00"}
	if err := save(dir, "pipeline", &m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pipeline.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m.Revision = ""
	if err := save(dir, "qemu", &QEMUResult{Machine: m}); err != nil {
		t.Fatal(err)
	}
	got, err := (&report{dir: dir}).machine()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Machine: AMD EPYC, 2 cores, 24 GiB; Linux 6.18; go1.26.",
		"| 2. pipeline | abc1234 | 2026-01-01T00:00:00Z | 1.00 1.00 1.00 | 2.00 1.00 1.00 |",
		"| 5. QEMU | - | 2026-01-01T00:00:00Z |"} {
		if !strings.Contains(got, want) {
			t.Errorf("machine table lacks %q:\n%s", want, got)
		}
	}
}
