//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The guests of the two-phase scenarios (issue 5). The guest has no shell: the exec callbacks
// are the init's helper, "/init sleep 0s" (prints the phase it was called for, exits 0: consent)
// and "/init sleep veto" (an invalid duration: exits 2, a veto, with its complaint on stderr).
// Their runs are in the agent's log on the console, one line per phase, in order.
var (
	// twoPhaseVeto: every AddStart is vetoed, so hot-added CPUs and blocks stay offline.
	twoPhaseVeto = guestOptions{
		name:   "two-phase-veto",
		append: []string{"memhp_default_state=offline"},
		config: `log_notifications: true
online:
  cpu: online
  memory: online_movable
two_phase:
  timeout: 60s
callbacks:
  - name: refuse-cpu
    kind: two_phase
    class: processor
    exec: {command: ["/init", "sleep", "veto"], timeout: 60s}
  - name: refuse-memory
    kind: two_phase
    class: memory
    exec: {command: ["/init", "sleep", "veto"], timeout: 60s}
`,
	}
	// twoPhaseConsent: every AddStart consents; add-existing replays the boot CPU and blocks.
	twoPhaseConsent = guestOptions{
		name:   "two-phase-consent",
		append: []string{"memhp_default_state=offline"},
		config: `log_notifications: true
online:
  cpu: online
  memory: online_movable
two_phase:
  timeout: 60s
callbacks:
  - name: pool-cpu
    kind: two_phase
    class: processor
    include_existing: true
    exec: {command: ["/init", "sleep", "0s"], timeout: 60s}
  - name: pool-memory
    kind: two_phase
    class: memory
    include_existing: true
    exec: {command: ["/init", "sleep", "0s"], timeout: 60s}
`,
	}
)

// TestIntegrationQEMUPhases runs the scenarios of issue 5 in QEMU guests: a vetoing AddStart
// keeps a hot-added CPU and DIMM offline with AddFailure delivered; consent gives AddStart,
// AddComplete, then the arrival, in that order; add-existing replays the boot CPU and blocks
// (every AddStart, then every AddComplete); `hotplug-agent offline` of a CPU whose target
// registration vetoes, of one whose registration consents, and of a memory block the kernel
// cannot offline.
func TestIntegrationQEMUPhases(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU end-to-end tests boot guests: not in -short mode")
	}
	prepare(t)
	start := time.Now()
	p := &pool{test: t.Name()}
	os.RemoveAll(filepath.Join(artefactRoot(), t.Name()))
	t.Cleanup(func() {
		p.close()
		t.Logf("QEMU two-phase and removal scenarios: %v in all", time.Since(start).Round(time.Millisecond))
	})
	for _, s := range []struct {
		name string
		kind guestOptions
		run  func(testing.TB, *guest)
	}{
		{"veto", twoPhaseVeto, testTwoPhaseVeto},
		{"consent", twoPhaseConsent, testTwoPhaseConsent},
		{"offline_on_request", controlGuest, testOfflineOnRequest},
		{"offline_memory_device", deviceControlGuest, testOfflineMemoryDevice},
	} {
		p.run(t, s.name, s.kind, s.run)
	}
}

// phaseLine matches the agent's log line of an exec callback's run: its callback, the phase
// (HOTPLUG_EVENT) and the interface. A consenting run logs "exec callback output", a vetoing one
// "exec callback failed".
var phaseLine = regexp.MustCompile(`msg="exec callback (?:output|failed)" callback=(\S+) command=\S+ event=(add_start|add_complete|add_failure|query_remove|remove_complete|remove_cancelled) symbolic_link=(\S+)`)

// arrivalLine matches the log callback's line for an arrival or a removal.
var arrivalLine = regexp.MustCompile(`msg="device interface change" event=(arrival|removal) .*symbolic_link=(\S+)`)

// phaseLog returns, in console order, "callback phase link" for every exec callback run and
// "log arrival link" or "log removal link" for every notification the log callback wrote.
func phaseLog(g *guest) []string {
	var out []string
	for _, l := range strings.Split(g.vm.Serial(), "\n") {
		if m := phaseLine.FindStringSubmatch(l); m != nil {
			out = append(out, m[1]+" "+m[2]+" "+m[3])
		} else if m := arrivalLine.FindStringSubmatch(l); m != nil {
			out = append(out, "log "+m[1]+" "+m[2])
		}
	}
	return out
}

// waitPhaseLog waits until the console has every line of want (as phaseLog gives them), and
// returns the lines that mention any of links, in order.
func waitPhaseLog(t testing.TB, g *guest, d time.Duration, want []string, links ...string) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var got []string
		for _, l := range phaseLog(g) {
			for _, link := range links {
				if strings.HasSuffix(l, " "+link) {
					got = append(got, l)
				}
			}
		}
		if len(got) >= len(want) || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func cpuLink(n int) string   { return fmt.Sprintf("/sys/devices/system/cpu/cpu%d", n) }
func blockLink(n int) string { return fmt.Sprintf("/sys/devices/system/memory/memory%d", n) }

// Vetoed: a hot-added CPU and a hot-added 256 MiB DIMM stay offline (present in sysfs, absent
// from /interfaces), nothing arrives, AddFailure follows each AddStart, and the vetoes are counted.
func testTwoPhaseVeto(t testing.TB, g *guest) {
	ctx := ctxFor(t, 120*time.Second)
	s := g.subscribe(t, "")
	slots, err := g.vm.FreeCPUSlots(ctx)
	if err != nil || len(slots) == 0 {
		t.Fatalf("no free CPU slot: %v", err)
	}
	cpus, blocks := g.interfaceCounts(t)
	g.seq++
	cpuID := fmt.Sprintf("cpu-%d", g.seq)
	ost := g.vm.QMP.Subscribe()
	if err := g.vm.AddCPU(ctx, cpuID, slots[0]); err != nil {
		t.Fatal(err)
	}
	waitInsertOST(t, ctx, ost, cpuID)
	newCPU := cpuLink(cpus) // the kernel numbers it next
	g.waitMetrics(t, 60*time.Second, "the veto of "+newCPU, func(m metricSet) bool {
		return m.get("hotplug_agent_vetoes_total", "callback", "refuse-cpu", "interface_class", "processor", "phase", "add_start", "reason", "error") == 1
	})
	want := []string{"refuse-cpu add_start " + newCPU, "refuse-cpu add_failure " + newCPU}
	if got := waitPhaseLog(t, g, 30*time.Second, want, newCPU); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("phases of the vetoed CPU on the console:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	g.seq++
	dimmID := fmt.Sprintf("dimm-%d", g.seq)
	ost = g.vm.QMP.Subscribe()
	if err := g.vm.AddDIMM(ctx, dimmID, 256*mib); err != nil {
		t.Fatal(err)
	}
	waitInsertOST(t, ctx, ost, dimmID)
	m := g.waitMetrics(t, 60*time.Second, "the vetoes of the DIMM's two blocks", func(m metricSet) bool {
		return m.get("hotplug_agent_vetoes_total", "callback", "refuse-memory", "interface_class", "memory", "phase", "add_start", "reason", "error") == 2
	})
	// The DIMM's blocks are where QEMU placed it (above 4 GiB): the first vetoed AddStart says.
	var first int
	for _, l := range phaseLog(g) {
		if strings.HasPrefix(l, "refuse-memory add_start ") {
			fmt.Sscanf(l, "refuse-memory add_start /sys/devices/system/memory/memory%d", &first)
			break
		}
	}
	b0, b1 := blockLink(first), blockLink(first+1)
	want = []string{
		"refuse-memory add_start " + b0, "refuse-memory add_failure " + b0,
		"refuse-memory add_start " + b1, "refuse-memory add_failure " + b1,
	}
	if got := waitPhaseLog(t, g, 30*time.Second, want, b0, b1); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("phases of the vetoed DIMM's blocks on the console:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	s.quiet(t, time.Second, "the vetoed hot-adds")
	if c, b := g.interfaceCounts(t); c != cpus || b != blocks {
		t.Errorf("/interfaces lists %d CPUs and %d blocks after vetoed hot-adds; want %d and %d (still offline)", c, b, cpus, blocks)
	}
	if pc, pb := m.get("hotplug_agent_present", "interface_class", "processor"), m.get("hotplug_agent_present", "interface_class", "memory"); pc != float64(cpus+1) || pb != float64(blocks+2) {
		t.Errorf("hotplug_agent_present: %v CPUs, %v blocks; want %d and %d: the vetoed ones are there, offline", pc, pb, cpus+1, blocks+2)
	}
	for _, class := range []string{"processor", "memory"} {
		if v := m.get("hotplug_agent_online_attempts_total", "interface_class", class, "result", "success"); v != 0 {
			t.Errorf("hotplug_agent_online_attempts_total{%s,success} = %v: a vetoed resource was written", class, v)
		}
	}
}

// Consented: the add-existing replay at boot (every AddStart, then every AddComplete), then a
// hot-added CPU and DIMM each get AddStart, AddComplete, then their arrival, in that order.
func testTwoPhaseConsent(t testing.TB, g *guest) {
	ctx := ctxFor(t, 120*time.Second)
	// The replay at start, for the boot CPU and blocks.
	var want []string
	var links []string
	for _, phase := range []string{"add_start", "add_complete"} {
		for i := 0; i < bootCPUs; i++ {
			want = append(want, "pool-cpu "+phase+" "+cpuLink(i))
		}
	}
	for i := 0; i < bootCPUs; i++ {
		links = append(links, cpuLink(i))
	}
	if got := waitPhaseLog(t, g, 30*time.Second, want, links...); strings.Join(onlyOf(got, "pool-cpu"), "\n") != strings.Join(want, "\n") {
		t.Errorf("add-existing replay for processors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	want, links = nil, nil
	for _, phase := range []string{"add_start", "add_complete"} {
		for i := 0; i < bootBlocks; i++ {
			want = append(want, "pool-memory "+phase+" "+blockLink(i))
		}
	}
	for i := 0; i < bootBlocks; i++ {
		links = append(links, blockLink(i))
	}
	if got := waitPhaseLog(t, g, 30*time.Second, want, links...); strings.Join(onlyOf(got, "pool-memory"), "\n") != strings.Join(want, "\n") {
		t.Errorf("add-existing replay for memory:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A hot-added CPU.
	cpus, blocks := g.interfaceCounts(t)
	s := g.subscribe(t, "")
	slots, err := g.vm.FreeCPUSlots(ctx)
	if err != nil || len(slots) == 0 {
		t.Fatalf("no free CPU slot: %v", err)
	}
	g.seq++
	cpuID := fmt.Sprintf("cpu-%d", g.seq)
	ost := g.vm.QMP.Subscribe()
	if err := g.vm.AddCPU(ctx, cpuID, slots[0]); err != nil {
		t.Fatal(err)
	}
	newCPU := cpuLink(cpus)
	if a := s.next(t, 60*time.Second, "the arrival of "+newCPU); a.Event != "arrival" || a.SymbolicLink != newCPU {
		t.Errorf("after the CPU hot-add got %v; want the arrival of %s", a, newCPU)
	}
	waitInsertOST(t, ctx, ost, cpuID)
	want = []string{"pool-cpu add_start " + newCPU, "pool-cpu add_complete " + newCPU, "log arrival " + newCPU}
	if got := waitPhaseLog(t, g, 30*time.Second, want, newCPU); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the hot-added CPU on the console:\n%s\nwant AddStart, AddComplete, then the arrival:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A hot-added 256 MiB DIMM: two blocks, each through both phases before its arrival.
	g.seq++
	dimmID := fmt.Sprintf("dimm-%d", g.seq)
	ost = g.vm.QMP.Subscribe()
	if err := g.vm.AddDIMM(ctx, dimmID, 256*mib); err != nil {
		t.Fatal(err)
	}
	got := s.take(t, 2, 60*time.Second, "the DIMM's two arrivals")
	waitInsertOST(t, ctx, ost, dimmID)
	if got[0].MemoryBlock == nil || got[1].MemoryBlock == nil || *got[1].MemoryBlock != *got[0].MemoryBlock+1 {
		t.Fatalf("DIMM arrivals %v; want two consecutive blocks in ascending order", got)
	}
	first := *got[0].MemoryBlock
	b0, b1 := blockLink(first), blockLink(first+1)
	want = []string{
		"pool-memory add_start " + b0, "pool-memory add_complete " + b0, "log arrival " + b0,
		"pool-memory add_start " + b1, "pool-memory add_complete " + b1, "log arrival " + b1,
	}
	if got := waitPhaseLog(t, g, 30*time.Second, want, b0, b1); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the DIMM's blocks on the console:\n%s\nwant each block's AddStart, AddComplete, then its arrival:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	s.quiet(t, time.Second, "the hot-adds")
	m := g.metrics(t)
	for _, cb := range []string{"pool-cpu", "pool-memory"} {
		if v := m.get("hotplug_agent_callback_errors_total", "callback", cb); v != 0 {
			t.Errorf("hotplug_agent_callback_errors_total{%s} = %v; want 0", cb, v)
		}
	}
	checkBlocks(t, g, []int{first, first + 1}, "Movable")
	if _, b := g.interfaceCounts(t); b != blocks+2 {
		t.Errorf("/interfaces lists %d blocks; want %d", b, blocks+2)
	}
}

// onlyOf keeps the lines of callback cb.
func onlyOf(lines []string, cb string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, cb+" ") {
			out = append(out, l)
		}
	}
	return out
}

// controlGuest runs `hotplug-agent offline cpu 1 cpu 2 memory 0` inside the guest, from an exec
// callback on memory arrivals (the harness has no other way to run a command in the guest): a
// DIMM hot-add sets it off. cpu1's target registration vetoes, cpu2's consents, and memory0 is
// a block the kernel cannot offline.
var controlGuest = guestOptions{
	name:   "offline-on-request",
	append: []string{"memhp_default_state=online_movable"},
	config: `log_notifications: true
online:
  cpu: online
  memory: auto
two_phase:
  timeout: 60s
callbacks:
  - name: guard-cpu1
    kind: target_device
    target: /sys/devices/system/cpu/cpu1
    exec: {command: ["/init", "sleep", "veto"], timeout: 60s}
  - name: guard-cpu2
    kind: target_device
    target: /sys/devices/system/cpu/cpu2
    exec: {command: ["/init", "sleep", "0s"], timeout: 60s}
  - name: guard-memory0
    kind: target_device
    target: /sys/devices/system/memory/memory0
    exec: {command: ["/init", "sleep", "0s"], timeout: 60s}
  - name: request
    class: memory
    exec: {command: ["/bin/hotplug-agent", "offline", "cpu", "1", "cpu", "2", "memory", "0"], timeout: 180s}
`,
}

// requestLine matches the agent's log line of the request callback's run: `hotplug-agent
// offline` exits 1 when an item failed, and its per-item lines are its stdout.
var requestLine = regexp.MustCompile(`msg="exec callback failed" callback=request .* stdout="((?:[^"\\]|\\.)*)"`)

// Offline on request: cpu1 stays online (its registration vetoed: remove-cancelled), cpu2 goes
// offline (query-remove, remove-complete, then its removal), memory0 stays online with the
// kernel's error (remove-cancelled), and each item's result is printed as qemu-guest-agent's.
func testOfflineOnRequest(t testing.TB, g *guest) {
	ctx := ctxFor(t, 180*time.Second)
	procs := g.subscribe(t, "class=processor")
	slots, err := g.vm.FreeCPUSlots(ctx)
	if err != nil || len(slots) < 2 {
		t.Fatalf("want 2 free CPU slots: %d, %v", len(slots), err)
	}
	if bootCPUs != 1 {
		t.Fatalf("the scenario names cpu1 and cpu2: it needs one boot CPU, not %d", bootCPUs)
	}
	for i := range 2 {
		g.seq++
		id := fmt.Sprintf("cpu-%d", g.seq)
		ost := g.vm.QMP.Subscribe()
		if err := g.vm.AddCPU(ctx, id, slots[i]); err != nil {
			t.Fatal(err)
		}
		if a := procs.next(t, 60*time.Second, "the arrival of "+cpuLink(i+1)); a.Event != "arrival" || a.SymbolicLink != cpuLink(i+1) {
			t.Fatalf("after device_add %s got %v; want the arrival of %s", id, a, cpuLink(i+1))
		}
		waitInsertOST(t, ctx, ost, id)
	}

	// The DIMM's arrivals run the request, once per block.
	g.seq++
	dimmID := fmt.Sprintf("dimm-%d", g.seq)
	ost := g.vm.QMP.Subscribe()
	if err := g.vm.AddDIMM(ctx, dimmID, 256*mib); err != nil {
		t.Fatal(err)
	}
	waitInsertOST(t, ctx, ost, dimmID)
	if r := procs.next(t, 120*time.Second, "the removal of cpu2 on request"); r.Event != "removal" || r.SymbolicLink != cpuLink(2) {
		t.Fatalf("after the request got %v; want the removal of %s", r, cpuLink(2))
	}
	var runs []string
	for deadline := time.Now().Add(120 * time.Second); len(runs) < 2 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		runs = nil
		for _, m := range requestLine.FindAllStringSubmatch(g.vm.Serial(), -1) {
			runs = append(runs, strings.ReplaceAll(strings.ReplaceAll(m[1], `\n`, "\n"), `\"`, `"`))
		}
	}
	if len(runs) < 2 {
		t.Fatalf("the request ran %d times; want 2 (one per block of the DIMM)", len(runs))
	}
	// EBUSY comes with the kernel's reason: "...: the kernel could not move every page out (...)".
	kernelErr := regexp.MustCompile(`^memory 0: operation-failed: sysfs: write "offline" to /sys/devices/system/memory/memory0/state: [a-z ]+(: the kernel could not move every page out \(.+\))? \(E[A-Z]+\)$`)
	for i, run := range runs[:2] {
		lines := strings.Split(strings.TrimSpace(run), "\n")
		cpu2 := "cpu 2: success"
		if len(lines) != 3 ||
			lines[0] != `cpu 1: operation-failed: vetoed by guard-cpu1 at query_remove: exec /init: exit status 2: sleep: time: invalid duration "veto"` ||
			lines[1] != cpu2 || !kernelErr.MatchString(lines[2]) {
			t.Errorf("run %d of hotplug-agent offline cpu 1 cpu 2 memory 0 printed:\n%s\nwant cpu 1 vetoed by guard-cpu1, cpu 2: success, memory 0 operation-failed with the kernel's error", i+1, run)
		}
	}
	procs.quiet(t, time.Second, "the removal of cpu2")

	// The registrations: cpu1 queried and cancelled twice; cpu2 queried and completed once (the
	// second run found it offline), before its removal; memory0 queried and cancelled twice.
	for _, c := range []struct {
		link string
		want []string
	}{
		{cpuLink(1), []string{"guard-cpu1 query_remove", "guard-cpu1 remove_cancelled", "guard-cpu1 query_remove", "guard-cpu1 remove_cancelled"}},
		{cpuLink(2), []string{"guard-cpu2 query_remove", "guard-cpu2 remove_complete", "log removal"}},
		{blockLink(0), []string{"guard-memory0 query_remove", "guard-memory0 remove_cancelled", "guard-memory0 query_remove", "guard-memory0 remove_cancelled"}},
	} {
		var want []string
		for _, w := range c.want {
			want = append(want, w+" "+c.link)
		}
		got := waitPhaseLog(t, g, 30*time.Second, want, c.link)
		var gotNoArrival []string
		for _, l := range got {
			if !strings.HasPrefix(l, "log arrival ") {
				gotNoArrival = append(gotNoArrival, l)
			}
		}
		if strings.Join(gotNoArrival, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s on the console:\n%s\nwant:\n%s", c.link, strings.Join(gotNoArrival, "\n"), strings.Join(want, "\n"))
		}
	}
	online := map[string]bool{}
	for _, i := range append(g.interfaces(t, "processor"), g.interfaces(t, "memory")...) {
		online[i.SymbolicLink] = true
	}
	if !online[cpuLink(1)] || online[cpuLink(2)] || !online[blockLink(0)] {
		t.Errorf("/interfaces: cpu1 online %v, cpu2 online %v, memory0 online %v; want true, false, true", online[cpuLink(1)], online[cpuLink(2)], online[blockLink(0)])
	}
	m := g.metrics(t)
	if v := m.get("hotplug_agent_vetoes_total", "callback", "guard-cpu1", "interface_class", "processor", "phase", "query_remove", "reason", "error"); v != 2 {
		t.Errorf("hotplug_agent_vetoes_total{guard-cpu1,query_remove} = %v; want 2", v)
	}
	if v := m.get("hotplug_agent_control_requests_total", "op", "offline", "response", "operation-failed"); v != 4 {
		t.Errorf("hotplug_agent_control_requests_total{offline,operation-failed} = %v; want 4 (cpu 1 and memory 0, twice)", v)
	}
}

// deviceControlGuest runs `hotplug-agent offline memory-device PNP0C80:00 memory-device
// PNP0C80:01` inside the guest, from an exec callback on processor arrivals: a CPU hot-add sets
// it off once. The first DIMM hot-added in a guest of 512 MiB is PNP0C80:00 with blocks 32-33,
// the second PNP0C80:01 with blocks 34-35; memory32's target registration vetoes.
var deviceControlGuest = guestOptions{
	name:   "offline-memory-device",
	append: []string{"memhp_default_state=online_movable"},
	config: `log_notifications: true
online:
  cpu: online
  memory: auto
two_phase:
  timeout: 60s
callbacks:
  - name: modules
    class: memory
    memory_devices: true
    log: true
  - name: guard-memory32
    kind: target_device
    target: /sys/devices/system/memory/memory32
    exec: {command: ["/init", "sleep", "veto"], timeout: 60s}
  - name: request
    class: processor
    exec: {command: ["/bin/hotplug-agent", "offline", "memory-device", "PNP0C80:00", "memory-device", "PNP0C80:01"], timeout: 180s}
`,
}

// Offline of whole memory devices on request: PNP0C80:01 goes (its blocks highest first, its
// module removal with the first), PNP0C80:00 does not: memory33 goes, memory32's registration
// vetoes, and memory33 is brought back online, so the device is whole again; the command prints
// each device's result as qemu-guest-agent would.
func testOfflineMemoryDevice(t testing.TB, g *guest) {
	ctx := ctxFor(t, 180*time.Second)
	mem := g.subscribe(t, "class=memory")
	for k := range 2 {
		g.seq++
		id := fmt.Sprintf("dimm-%d", g.seq)
		ost := g.vm.QMP.Subscribe()
		if err := g.vm.AddDIMM(ctx, id, 256*mib); err != nil {
			t.Fatal(err)
		}
		got := mem.take(t, 2, 60*time.Second, "the two block arrivals of "+id)
		for i, a := range got {
			if want := blockLink(32 + 2*k + i); a.Event != "arrival" || a.SymbolicLink != want {
				t.Fatalf("after device_add %s got %v; want the arrival of %s", id, a, want)
			}
		}
		waitInsertOST(t, ctx, ost, id)
	}
	waitModules(t, g, 2, "the arrivals of the two DIMMs")

	slots, err := g.vm.FreeCPUSlots(ctx)
	if err != nil || len(slots) == 0 {
		t.Fatalf("want a free CPU slot: %d, %v", len(slots), err)
	}
	g.seq++
	if err := g.vm.AddCPU(ctx, fmt.Sprintf("cpu-%d", g.seq), slots[0]); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"removal " + blockLink(33), "arrival " + blockLink(33), // PNP0C80:00: vetoed at memory32, rolled back
		"removal " + blockLink(35), "removal " + blockLink(34), // PNP0C80:01: taken offline, highest first
	}
	var got []string
	for _, n := range mem.take(t, len(want), 120*time.Second, "the block changes of the request") {
		got = append(got, n.Event+" "+n.SymbolicLink)
	}
	mem.quiet(t, time.Second, "the request's block changes")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("memory blocks changed as:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	var run string
	for deadline := time.Now().Add(60 * time.Second); run == "" && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if m := requestLine.FindStringSubmatch(g.vm.Serial()); m != nil {
			run = strings.ReplaceAll(strings.ReplaceAll(m[1], `\n`, "\n"), `\"`, `"`)
		}
	}
	lines := strings.Split(strings.TrimSpace(run), "\n")
	vetoed := regexp.MustCompile(`^memory-device PNP0C80:00: operation-failed: memory-device PNP0C80:00: .*vetoed by guard-memory32 at query_remove.*\(memory blocks 33, taken offline first, are online again\)$`)
	if len(lines) != 2 || !vetoed.MatchString(lines[0]) || lines[1] != "memory-device PNP0C80:01: success: 256 MiB freed (2 memory blocks)" {
		t.Errorf("hotplug-agent offline memory-device PNP0C80:00 memory-device PNP0C80:01 printed:\n%s\nwant PNP0C80:00 vetoed by guard-memory32 with memory33 online again, PNP0C80:01: success, 256 MiB freed", run)
	}

	var mods []string
	for _, m := range waitModules(t, g, 5, "the request's device changes")[2:] {
		mods = append(mods, m.event+" "+m.device+" "+m.blocks)
	}
	wantMods := []string{"removal PNP0C80:00 32-33", "arrival PNP0C80:00 32-33", "removal PNP0C80:01 34-35"}
	if strings.Join(mods, "\n") != strings.Join(wantMods, "\n") {
		t.Errorf("memory devices changed as:\n%s\nwant:\n%s", strings.Join(mods, "\n"), strings.Join(wantMods, "\n"))
	}
	if _, ok := deviceListed(t, g, "PNP0C80:01"); ok {
		t.Errorf("/interfaces?memory_devices=true still lists PNP0C80:01 after it was taken offline")
	}
	if _, ok := deviceListed(t, g, "PNP0C80:00"); !ok {
		t.Errorf("/interfaces?memory_devices=true does not list PNP0C80:00, whose removal was vetoed")
	}
}
