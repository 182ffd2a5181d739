//go:build linux

package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hotplug-agent/hotplug-agent/bench"
	"github.com/hotplug-agent/hotplug-agent/bench/onlining"
)

// reportCmd rewrites the generated blocks of BENCHMARKS.md, each between
// "<!-- bench:NAME -->" and "<!-- /bench:NAME -->", from the results in --out. A block whose
// results are missing is left as it was; the text around the blocks is never touched.
func reportCmd(flags *flag.FlagSet, out *string) error {
	doc := flags.String("doc", "BENCHMARKS.md", "the document to rewrite")
	flags.Parse(os.Args[2:])
	b, err := os.ReadFile(*doc)
	if err != nil {
		return err
	}
	r := &report{dir: *out}
	blocks := map[string]func() (string, error){
		"machine":   r.machine,
		"latency":   r.latency,
		"pipeline":  r.pipeline,
		"storm":     r.storm,
		"footprint": r.footprint,
		"qemu":      r.qemu,
		"onlining":  r.onlining,
		"targets":   r.targets,
		"summary":   r.summary,
	}
	for name, render := range blocks {
		text, err := render()
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "report: no results for %s; block left as it was\n", name)
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if b, err = replaceBlock(b, name, text); err != nil {
			return err
		}
	}
	if err := os.WriteFile(*doc, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", *doc)
	return nil
}

// replaceBlock puts text between the markers of block name in doc.
func replaceBlock(doc []byte, name, text string) ([]byte, error) {
	begin, end := []byte("<!-- bench:"+name+" -->\n"), []byte("<!-- /bench:"+name+" -->")
	i := bytes.Index(doc, begin)
	j := bytes.Index(doc, end)
	if i < 0 || j < i {
		return nil, fmt.Errorf("BENCHMARKS.md: no block %q (markers %s ... %s)", name, strings.TrimSpace(string(begin)), end)
	}
	var out []byte
	out = append(out, doc[:i+len(begin)]...)
	out = append(out, text...)
	if !strings.HasSuffix(text, "\n") {
		out = append(out, '\n')
	}
	return append(out, doc[j:]...), nil
}

type report struct {
	dir string
	lat *LatencyResult
	st  *StormResult
	fp  *FootprintResult
	pb  map[string]benchLine
	qm  *QEMUResult
}

func (r *report) load(name string, v any) error { return load(r.dir, name, v) }

func (r *report) machine() (string, error) {
	var rows [][]string
	add := func(what string, m Machine) {
		rows = append(rows, []string{what, orDash(m.Revision), m.Date, m.LoadBefore, m.LoadAfter})
	}
	var ref *Machine
	if r.latencyResult() == nil {
		add("1. kernel to callback", r.lat.Machine)
		ref = &r.lat.Machine
	}
	if r.pipelineResult() == nil {
		var m Machine
		if r.load("pipeline", &m) == nil {
			add("2. pipeline", m)
			ref = &m
		}
	}
	if r.stormResult() == nil {
		add("3. storm", r.st.Machine)
		ref = &r.st.Machine
	}
	if r.footprintResult() == nil {
		add("4. footprint", r.fp.Machine)
		ref = &r.fp.Machine
	}
	if r.qemuResult() == nil {
		add("5. QEMU", r.qm.Machine)
		ref = &r.qm.Machine
	}
	var on onlining.Result
	if r.load("onlining", &on) == nil && len(on.Runs) > 0 {
		first, last := on.Runs[0], on.Runs[len(on.Runs)-1]
		rows = append(rows, []string{"6. onlining speed", orDash(on.Revision), first.Date, first.LoadBefore, last.LoadAfter})
	}
	if ref == nil {
		return "", fs.ErrNotExist
	}
	var s strings.Builder
	fmt.Fprintf(&s, "Machine: %s, %d cores, %d GiB; Linux %s; %s", ref.CPU, ref.CPUs, ref.MemoryGiB, ref.Kernel, ref.Go)
	if r.lat != nil && r.lat.UdevdVersion != "" {
		fmt.Fprintf(&s, "; systemd-udevd %s", r.lat.UdevdVersion)
	}
	s.WriteString(".\n\n")
	s.WriteString(table([]string{"figure", "agent at", "taken (UTC)", "load before (1, 5, 15 min)", "load after"}, rows))
	return s.String(), nil
}

// orDash is s, or "-" for an empty s.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// loadOnce loads the result of the benchmark name into *p, unless it is there already.
func loadOnce[T any](r *report, name string, p **T) error {
	if *p != nil {
		return nil
	}
	var v T
	if err := r.load(name, &v); err != nil {
		return err
	}
	*p = &v
	return nil
}

func (r *report) latencyResult() error { return loadOnce(r, "latency", &r.lat) }

var variantNames = map[string]string{
	vFloor:  "(a) bare recvmsg loop (the floor)",
	vInproc: "(b) agent, in-process Go callback",
	vExec:   "(c) agent, exec callback",
	vUdevd:  "(d) systemd-udevd, `RUN+=`",
}

func (r *report) latency() (string, error) {
	if err := r.latencyResult(); err != nil {
		return "", err
	}
	l := r.lat
	var s strings.Builder
	fmt.Fprintf(&s, "%d synthetic `online` uevents per path, on cpu%d, interleaved in random order in each round (after %d untimed rounds); `%s`.\n\n",
		l.Events, l.CPU, l.Warmup, l.Command)
	floor, udevd := l.FromWrite[vFloor], l.FromWrite[vUdevd]
	var rows [][]string
	for _, v := range variants {
		w := l.FromWrite[v]
		row := []string{variantNames[v], msf(w.P50), msf(w.P99), msf(w.Max),
			ratio(w.P50, udevd.P50), ratio(w.P99, udevd.P99), ratio(w.P50, floor.P50), ratio(w.P99, floor.P99)}
		if v == vFloor {
			row = append(row, "")
		} else {
			f := l.FromFloor[v]
			row = append(row, msf(f.P50)+" / "+msf(f.P99))
		}
		row = append(row, strconv.Itoa(l.Lost[v]))
		rows = append(rows, row)
	}
	s.WriteString(table([]string{"write(2) to ...", "p50", "p99", "max", "p50 / udevd", "p99 / udevd",
		"p50 / floor", "p99 / floor", "after the floor's read (p50 / p99)", "lost"}, rows))
	fmt.Fprintf(&s, "\nTimes in ms. The floor over all %d uevents of the run: p50 %s, p99 %s, max %s. The in-process path split at the agent's own read (`Notification.ReadAt`): the floor's read to the agent's %s / %s (p50 / p99), the agent's read to the callback %s / %s.\n",
		l.FloorAll.N, msf(l.FloorAll.P50), msf(l.FloorAll.P99), msf(l.FloorAll.Max),
		msf(l.InprocFloorToRead.P50), msf(l.InprocFloorToRead.P99), msf(l.InprocReadToCall.P50), msf(l.InprocReadToCall.P99))
	if rc := l.Real; rc != nil {
		s.WriteString(realTable(rc, l.CPU))
	}
	return s.String(), nil
}

// realTable is the latency block's table of real CPU cycles.
func realTable(rc *RealCycles, cpu int) string {
	var s strings.Builder
	if rc.AfterFloor == nil { // a result from before every path was timed on real cycles
		rc.AfterFloor = map[string]bench.Summary{vInproc: rc.FromFloor}
	}
	fmt.Fprintf(&s, "\nReal transitions: %d cycles of cpu%d taken offline and back online (a write of 0, then of 1, to `cpu%d/online`), every path listening at once; the agents unmodified (each opens its own socket on the real `/sys`; no tagged source), udevd with the rule `ACTION==\"online\", SUBSYSTEM==\"cpu\", KERNEL==\"cpu%d\", RUN+=\"<stamp> <socket>\"`:\n\n",
		rc.Cycles, cpu, cpu, cpu)
	var rows [][]string
	for _, v := range variants {
		w, ok := rc.FromWrite[v]
		if !ok {
			continue
		}
		row := []string{variantNames[v], msf(w.P50), msf(w.P99), msf(w.Max), "", ""}
		if f, ok := rc.AfterFloor[v]; ok && v != vFloor {
			row[4], row[5] = msf(f.P50), msf(f.P99)
		}
		if v != vFloor {
			row = append(row, strconv.Itoa(rc.Lost[v]))
		} else {
			row = append(row, "")
		}
		rows = append(rows, row)
	}
	s.WriteString(table([]string{"write of 1 to `online` to ...", "p50", "p99", "max", "after the floor's read: p50", "p99", "lost"}, rows))
	return s.String()
}

// benchLine is one benchmark's figures: the median over the -count runs, per unit.
type benchLine map[string]float64

var benchRE = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$`)

func (r *report) pipelineResult() error {
	if r.pb != nil {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(r.dir, "pipeline.txt"))
	if err != nil {
		return err
	}
	runs := map[string]map[string][]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		m := benchRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		f := strings.Fields(m[3])
		if runs[m[1]] == nil {
			runs[m[1]] = map[string][]float64{}
		}
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err == nil {
				runs[m[1]][f[i+1]] = append(runs[m[1]][f[i+1]], v)
			}
		}
	}
	r.pb = map[string]benchLine{}
	for name, units := range runs {
		l := benchLine{}
		for u, vs := range units {
			slices.Sort(vs)
			l[u] = vs[len(vs)/2]
		}
		r.pb[name] = l
	}
	return nil
}

func (r *report) pipeline() (string, error) {
	if err := r.pipelineResult(); err != nil {
		return "", err
	}
	var m Machine
	_ = r.load("pipeline", &m)
	var s strings.Builder
	fmt.Fprintf(&s, "`go test -run '^$' -bench . -benchmem -count 5 ./bench/` (median of 5), GOMAXPROCS %d; one op is one event.\n\n", m.CPUs)
	var rows [][]string
	for _, name := range []string{"BenchmarkParse", "BenchmarkParseCompact", "BenchmarkPipeline/registrations=1", "BenchmarkPipeline/registrations=8",
		"BenchmarkPipeline/registrations=64", "BenchmarkStormPath", "BenchmarkUnsynthesize"} {
		l, ok := r.pb[name]
		if !ok {
			continue
		}
		wall, cpu := rate(l["events/s"]), rate(l["events/cpu-s"])
		if _, ok := l["events/s"]; !ok && l["ns/op"] > 0 {
			// One goroutine, never waiting: wall time is CPU time.
			wall = rate(1e9 / l["ns/op"])
			cpu = wall
		}
		alone := "-"
		if v, ok := l["agent-events/cpu-s"]; ok {
			alone = rate(v)
		}
		rows = append(rows, []string{"`" + strings.TrimPrefix(name, "Benchmark") + "`", fmt.Sprintf("%.0f", l["ns/op"]),
			wall, cpu, alone, fmt.Sprintf("%.0f", l["B/op"]), fmt.Sprintf("%.0f", l["allocs/op"])})
	}
	s.WriteString(table([]string{"benchmark", "ns/event (wall)", "events/s", "events/s per core (CPU time)",
		"events/s per core, the agent alone", "B/event", "allocs/event"}, rows))
	s.WriteString("\nThe agent alone: the process's CPU time less the replay's own sysfs writes (the kernel's part of each uevent: a CPU's `online` file and `cpu/online`), which the benchmark times apart over the same number of writes.\n")
	if top, err := os.ReadFile(filepath.Join(r.dir, "pipeline-profile.txt")); err == nil {
		s.WriteString("\nWhere the CPU goes, `Pipeline/registrations=1` (`go tool pprof -top -cum` of `pipeline.prof`, which `hotplug-bench pipeline` writes into its output directory; the share of all samples, and per event):\n\n")
		s.WriteString(string(top))
	}
	return s.String(), nil
}

// agentRate is a pipeline benchmark's events per second of one core for the agent alone (the
// replay's sysfs writes left out), or for the whole process where the line has no such figure.
func agentRate(l map[string]float64) float64 {
	if v, ok := l["agent-events/cpu-s"]; ok {
		return v
	}
	return l["events/cpu-s"]
}

func (r *report) stormResult() error { return loadOnce(r, "storm", &r.st) }

func (r *report) storm() (string, error) {
	if err := r.stormResult(); err != nil {
		return "", err
	}
	st := r.st
	var s strings.Builder
	fmt.Fprintf(&s, "%d synthetic uevents (`add` and `online` in turn on each of the %d memory blocks, repeated) written as fast as one thread can, into the agent binary at its defaults (`%s`); agent socket buffer %d bytes.\n\n",
		st.Written, st.Blocks, st.Command, st.ReceiveBufferBytes)
	s.WriteString(table([]string{"", ""}, [][]string{
		{"written in", msu(st.WriteTime) + fmt.Sprintf(" (%s uevents/s)", rate(float64(st.Written)/st.WriteTime.Seconds()))},
		{"received (`uevents_total{subsystem=\"memory\"}` delta)", strconv.FormatInt(st.Received, 10)},
		{"lost", strconv.FormatInt(int64(st.Written)-st.Received, 10)},
		{"`netlink_overflows_total` delta / socket drops", fmt.Sprintf("%d / %d", st.Overflows, st.Drops)},
		{"socket queue empty after the last write", msu(st.QueueEmpty)},
		{"every uevent counted in /metrics after the last write (5 ms polls)", msu(st.Counted)},
		{"agent CPU time, first write to queue empty", msu(st.CPU) + fmt.Sprintf(" (%.2f µs per uevent)", float64(st.CPU)/1e3/float64(st.Written))},
		{"RSS before / peak (VmHWM) / after", fmt.Sprintf("%.1f / %.1f / %.1f MiB", mib(st.RSSBefore), mib(st.Peak), mib(st.RSSAfter))},
	}))
	if k := st.KernelDefault; k != nil {
		fmt.Fprintf(&s, "\nThe same storm into an agent run with `--netlink.receive-buffer-bytes=0` (the kernel's default, %d bytes granted): %d of %d uevents received, %d overflows reported (%d rescans of sysfs), %d datagrams dropped by the kernel.\n",
			k.ReceiveBufferBytes, k.Received, k.Written, k.Overflows, k.Resyncs, k.Drops)
	}
	return s.String(), nil
}

func (r *report) footprintResult() error { return loadOnce(r, "footprint", &r.fp) }

func (r *report) footprint() (string, error) {
	if err := r.footprintResult(); err != nil {
		return "", err
	}
	f := r.fp
	var s strings.Builder
	fmt.Fprintf(&s, "The agent binary (`make build`), default flags but `--path.state=` and a port on 127.0.0.1; `%s`.\n\n", f.Command)
	s.WriteString(table([]string{"", "figure"}, [][]string{
		{fmt.Sprintf("RSS %s after ready", f.Settle), fmt.Sprintf("%.1f MiB", mib(f.IdleRSS))},
		{fmt.Sprintf("RSS after %s idle (peak)", f.Idle), fmt.Sprintf("%.1f MiB (%.1f MiB)", mib(f.IdleRSSEnd), mib(f.IdlePeak))},
		{fmt.Sprintf("CPU time over %s idle", f.Idle), msu(f.IdleCPU) + fmt.Sprintf(" (%.3f ms per minute)", float64(f.IdleCPU)/1e6/f.Idle.Minutes())},
		{"CPU time of start-up (to ready + settle)", msu(f.StartCPU)},
	}))
	s.WriteString("\nStart-up: from just before the fork to the `agent ready` log line, " + strconv.Itoa(f.Starts) + " starts each (after one untimed); times in ms:\n\n")
	rows := [][]string{
		{fmt.Sprintf("this machine's /sys (%d CPUs, %d memory blocks)", f.SysCPUs, f.SysBlocks), msf(f.ReadySys.P50), msf(f.ReadySys.P90), msf(f.ReadySys.Max)},
		{fmt.Sprintf("fixture on tmpfs: %d CPUs, %d memory blocks", f.FixtureCPUs, f.FixtureBlocks), msf(f.ReadyFixture.P50), msf(f.ReadyFixture.P90), msf(f.ReadyFixture.Max)},
	}
	if l := f.LsmemFixture; l.N > 0 {
		rows = append(rows, []string{"peer: `lsmem --sysroot` over the same fixture, to its exit", msf(l.P50), msf(l.P90), msf(l.Max)})
	}
	s.WriteString(table([]string{"sysfs", "p50", "p90", "max"}, rows))
	return s.String(), nil
}

func (r *report) qemuResult() error { return loadOnce(r, "qemu", &r.qm) }

func (r *report) qemu() (string, error) {
	if err := r.qemuResult(); err != nil {
		return "", err
	}
	return renderQEMU(r.qm), nil
}

// summary is the paragraph at the top, and the README's line.
func (r *report) summary() (string, error) {
	var parts []string
	if r.latencyResult() == nil {
		l := r.lat
		fl, in, ex, ud := l.FromWrite[vFloor], l.FromWrite[vInproc], l.FromWrite[vExec], l.FromWrite[vUdevd]
		parts = append(parts, fmt.Sprintf("a synthetic CPU uevent (written to a CPU's `uevent` file, timed from the write) reaches an in-process callback in %s ms (p50; the kernel's own floor, a bare recvmsg loop, is %s ms) and starts an exec callback in %s ms, against %s ms for systemd-udevd's `RUN+=` (%.1fx faster)",
			msf(in.P50), msf(fl.P50), msf(ex.P50), msf(ud.P50), float64(ud.P50)/float64(ex.P50)))
		if rc := l.Real; rc != nil && rc.AfterFloor != nil {
			parts = append(parts, fmt.Sprintf("on real offline/online cycles of a CPU the kernel sends `online` %s ms after the write of 1, and the in-process callback starts %s ms after that (exec %s ms, udevd's `RUN+=` %s ms; p50)",
				msf(rc.FromWrite[vFloor].P50), msf(rc.AfterFloor[vInproc].P50), msf(rc.AfterFloor[vExec].P50), msf(rc.AfterFloor[vUdevd].P50)))
		}
	}
	if r.pipelineResult() == nil {
		if l, ok := r.pb["BenchmarkPipeline/registrations=1"]; ok {
			parts = append(parts, fmt.Sprintf("the agent's event loop takes %s CPU uevents per second of one core from datagram to callback (the kernel's socket and sysfs writes left out)", rate(agentRate(l))))
		}
	}
	if r.stormResult() == nil {
		st := r.st
		parts = append(parts, fmt.Sprintf("a storm of %s memory uevents loses %d and is drained %s ms after the last one, at %.0f MiB peak RSS",
			rate(float64(st.Written)), int64(st.Written)-st.Received, msf(st.QueueEmpty), mib(st.Peak)))
	}
	if r.footprintResult() == nil {
		f := r.fp
		parts = append(parts, fmt.Sprintf("idle, the agent holds %.1f MiB and uses %.1f ms of CPU a minute, and is ready %s ms after its start (%s ms with 8,192 memory blocks)",
			mib(f.IdleRSSEnd), float64(f.IdleCPU)/1e6/f.Idle.Minutes(), msf(f.ReadySys.P50), msf(f.ReadyFixture.P50)))
	}
	if len(parts) == 0 {
		return "", fs.ErrNotExist
	}
	return "On this machine's real kernel: " + strings.Join(parts, "; ") + ".\n", nil
}

// targets compares the figures with the goals.
func (r *report) targets() (string, error) {
	var rows [][]string
	check := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	if r.latencyResult() == nil {
		l := r.lat
		in, fl := l.FromWrite[vInproc], l.FromWrite[vFloor]
		x := float64(in.P99) / float64(fl.P99)
		rows = append(rows, []string{"in-process callback p99 within 1.5x of the floor's p99",
			fmt.Sprintf("%s / %s ms = %.2fx", msf(in.P99), msf(fl.P99), x), check(x <= 1.5)})
		ex, ud := l.FromWrite[vExec], l.FromWrite[vUdevd]
		y := float64(ex.P50) / float64(ud.P50)
		rows = append(rows, []string{"exec callback p50 at most 0.75x of udevd's p50",
			fmt.Sprintf("%s / %s ms = %.2fx", msf(ex.P50), msf(ud.P50), y), check(y <= 0.75)})
	}
	if r.pipelineResult() == nil {
		if l, ok := r.pb["BenchmarkPipeline/registrations=1"]; ok {
			rows = append(rows, []string{">= 500,000 events/s per core, the agent's loop from datagram to callback, 1 registration",
				rate(agentRate(l)) + " events/s per core", check(agentRate(l) >= 500000)})
		}
		if l, ok := r.pb["BenchmarkPipeline/registrations=64"]; ok {
			rows = append(rows, []string{">= 100,000 events/s per core, the agent's loop, 64 registrations",
				rate(agentRate(l)) + " events/s per core", check(agentRate(l) >= 100000)})
		}
		if l, ok := r.pb["BenchmarkParse"]; ok {
			rows = append(rows, []string{"<= 2 allocations per event in the parser",
				fmt.Sprintf("%.0f", l["allocs/op"]), check(l["allocs/op"] <= 2)})
		}
		for _, regs := range []string{"1", "64"} {
			if l, ok := r.pb["BenchmarkPipeline/registrations="+regs]; ok {
				rows = append(rows, []string{"<= 2 allocations per event, the agent's loop, " + regs + " registration(s)",
					fmt.Sprintf("%.0f", l["allocs/op"]), check(l["allocs/op"] <= 2)})
			}
		}
	}
	if r.stormResult() == nil {
		st := r.st
		lost := int64(st.Written) - st.Received + st.Overflows
		rows = append(rows,
			[]string{"storm: 0 lost", fmt.Sprintf("%d lost, %d overflows", int64(st.Written)-st.Received, st.Overflows), check(lost == 0 && st.Drops == 0)},
			[]string{"storm: drained within 1 s of the last uevent", msu(st.QueueEmpty) + " (queue empty), " + msu(st.Counted) + " (counted)", check(st.Counted <= time.Second)},
			[]string{"storm: peak RSS under 30 MiB", fmt.Sprintf("%.1f MiB", mib(st.Peak)), check(st.Peak < 30<<20)})
	}
	if r.footprintResult() == nil {
		f := r.fp
		perMin := float64(f.IdleCPU) / f.Idle.Minutes()
		rows = append(rows,
			[]string{"idle RSS under 15 MiB", fmt.Sprintf("%.1f MiB", mib(f.IdleRSSEnd)), check(f.IdleRSSEnd < 15<<20)},
			[]string{"under 10 ms CPU per idle minute", fmt.Sprintf("%.3f ms", perMin/1e6), check(perMin < 10e6)},
			[]string{"ready under 50 ms on this machine (p50)", msu(f.ReadySys.P50), check(f.ReadySys.P50 < 50*time.Millisecond)},
			[]string{"ready under 150 ms on the 8,192-block fixture (p50)", msu(f.ReadyFixture.P50), check(f.ReadyFixture.P50 < 150*time.Millisecond)})
	}
	if len(rows) == 0 {
		return "", fs.ErrNotExist
	}
	return table([]string{"target", "figure", ""}, rows), nil
}

// table renders a Markdown table.
func table(head []string, rows [][]string) string {
	var s strings.Builder
	s.WriteString("| " + strings.Join(head, " | ") + " |\n|")
	for range head {
		s.WriteString("---|")
	}
	s.WriteString("\n")
	for _, r := range rows {
		s.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	return s.String()
}

// msf formats d in milliseconds: three decimals below 10 ms, one above.
func msf(d time.Duration) string {
	v := float64(d) / 1e6
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// msu is msf with its unit.
func msu(d time.Duration) string { return msf(d) + " ms" }

func ratio(a, b time.Duration) string {
	if b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}

// rate formats events per second with thousands separators.
func rate(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
