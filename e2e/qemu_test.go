//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/qemu"
)

const (
	mib       = 1 << 20
	blockSize = 128 * mib // x86 guests of this size
	// bootCPUs and bootBlocks follow from -smp 1 and -m 512M.
	bootCPUs   = 1
	bootBlocks = 512 * mib / blockSize
	// slowSleep is how long the slow callback of scenario 6 blocks per notification: long enough
	// that the other registrations' deliveries of one hot-add all happen while it still runs.
	slowSleep = 6 * time.Second
)

// The kinds of guest. Each is booted at most once per run (scenarios of a kind share it).
var (
	// kernelOnlines: the kernel onlines hot-added memory itself (movable); the agent's policy
	// follows it for memory ("auto": it must not online again) and onlines hot-added CPUs. A
	// slow and a fast exec callback are registered for memory (scenario 6).
	kernelOnlines = guestOptions{
		name:   "kernel-onlines",
		append: []string{"memhp_default_state=online_movable"},
		config: `log_notifications: true
online:
  cpu: online
  memory: auto
  retries: 3
callbacks:
  - name: slow
    class: memory
    exec:
      command: ["/init", "sleep", "` + slowSleep.String() + `"]
      timeout: 60s
  - name: fast
    class: memory
    exec:
      command: ["/init", "sleep", "0s"]
      timeout: 60s
  - name: modules
    class: memory
    memory_devices: true
    log: true
`,
	}
	// agentOnlines: the kernel leaves hot-added memory offline; the agent onlines it as movable.
	agentOnlines = guestOptions{
		name:   "agent-onlines",
		append: []string{"memhp_default_state=offline"},
		config: `log_notifications: true
online:
  cpu: online
  memory: online_movable
  retries: 3
`,
	}
)

// TestIntegrationQEMU runs the scenarios of issue 3 in as few guest boots as their kinds allow.
// Scenarios that share a guest run in this order and leave it as the next one expects; each also
// runs alone (-run 'TestIntegrationQEMU/<name>'), doing its own setup.
func TestIntegrationQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU end-to-end tests boot guests: not in -short mode")
	}
	prepare(t)
	start := time.Now()
	p := &pool{test: t.Name()}
	os.RemoveAll(filepath.Join(artefactRoot(), t.Name()))
	t.Cleanup(func() {
		p.close()
		t.Logf("QEMU end-to-end: %v in all", time.Since(start).Round(time.Millisecond))
	})
	scenarios := []struct {
		name string
		kind guestOptions
		run  func(testing.TB, *guest)
	}{
		{"coldplug", kernelOnlines, testColdplug},
		{"slow_callback", kernelOnlines, testSlowCallback},
		{"cpu_hot_add", kernelOnlines, testCPUHotAdd},
		{"dimm_kernel_online", kernelOnlines, testDIMMKernelOnline},
		{"dimm_module", kernelOnlines, testDIMMModule},
		{"virtio_mem", kernelOnlines, testVirtioMem},
		{"hot_remove", kernelOnlines, testHotRemove},
		{"dimm_agent_online", agentOnlines, testDIMMAgentOnline},
	}
	for _, s := range scenarios {
		p.run(t, s.name, s.kind, s.run)
	}
}

// ctx returns a context that ends after d, cancelled when t ends.
func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Scenario 1: a subscription with include_existing sees one arrival per boot CPU and per boot
// memory block, and nothing twice.
func testColdplug(t testing.TB, g *guest) {
	all := g.subscribe(t, "include_existing=true")
	mem := g.subscribe(t, "class=memory&include_existing=true")
	want := bootCPUs + bootBlocks
	got := all.take(t, want, 20*time.Second, fmt.Sprintf("the %d existing interfaces (%d CPUs, %d memory blocks)", want, bootCPUs, bootBlocks))
	all.quiet(t, time.Second, "the existing interfaces")
	seen := map[string]bool{}
	var cpus, blocks []string
	for _, n := range got {
		if n.Event != "arrival" || n.Cause != "existing" || n.State != "online" {
			t.Errorf("want an online arrival of cause existing, got %v", n)
		}
		if seen[n.SymbolicLink] {
			t.Errorf("%s announced twice", n.SymbolicLink)
		}
		seen[n.SymbolicLink] = true
		switch n.InterfaceClass {
		case "processor":
			cpus = append(cpus, n.SymbolicLink)
		case "memory":
			blocks = append(blocks, n.SymbolicLink)
		}
	}
	var wantCPUs, wantBlocks []string
	for i := 0; i < bootCPUs; i++ {
		wantCPUs = append(wantCPUs, fmt.Sprintf("/sys/devices/system/cpu/cpu%d", i))
	}
	for i := 0; i < bootBlocks; i++ {
		wantBlocks = append(wantBlocks, fmt.Sprintf("/sys/devices/system/memory/memory%d", i))
	}
	sort.Strings(cpus)
	sort.Strings(blocks)
	if !slices.Equal(cpus, wantCPUs) || !slices.Equal(blocks, wantBlocks) {
		t.Errorf("existing arrivals: CPUs %v, blocks %v; want CPUs %v, blocks %v", cpus, blocks, wantCPUs, wantBlocks)
	}
	memGot := mem.take(t, bootBlocks, 20*time.Second, "the existing memory blocks on a class=memory subscription")
	mem.quiet(t, 500*time.Millisecond, "the existing memory blocks")
	for _, n := range memGot {
		if n.InterfaceClass != "memory" {
			t.Errorf("class=memory subscription delivered %v", n)
		}
	}
	m := g.metrics(t)
	if c, b := m.get("hotplug_agent_interfaces", "interface_class", "processor"), m.get("hotplug_agent_interfaces", "interface_class", "memory"); c != bootCPUs || b != bootBlocks {
		t.Errorf("hotplug_agent_interfaces: processor %v, memory %v; want %d, %d", c, b, bootCPUs, bootBlocks)
	}
}

// hotAddCPUs plugs n CPUs into the lowest free slots and waits for one arrival each, in order,
// on a processor subscription opened before. It returns the new CPU numbers and records the
// devices on g for hot_remove.
func hotAddCPUs(t testing.TB, g *guest, n int) []int {
	t.Helper()
	ctx := ctxFor(t, 60*time.Second)
	s := g.subscribe(t, "class=processor")
	before := g.metrics(t)
	slots, err := g.vm.FreeCPUSlots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(slots) < n {
		t.Fatalf("want %d free CPU slots, query-hotpluggable-cpus has %d", n, len(slots))
	}
	present := len(g.interfaces(t, "processor"))
	var ids []string
	var osts []*qemu.Subscription
	start := time.Now()
	for i := 0; i < n; i++ {
		g.seq++
		id := fmt.Sprintf("cpu-%d", g.seq)
		osts = append(osts, g.vm.QMP.Subscribe())
		if err := g.vm.AddCPU(ctx, id, slots[i]); err != nil {
			t.Fatal(err)
		}
		t.Logf("device_add %s at %s", id, slots[i].Props)
		ids = append(ids, id)
	}
	got := s.take(t, n, 60*time.Second, fmt.Sprintf("%d processor arrivals after device_add of %v", n, ids))
	t.Logf("%d processor arrivals %v after the first device_add", n, time.Since(start).Round(time.Millisecond))
	s.quiet(t, 500*time.Millisecond, "the processor arrivals")
	for i, id := range ids {
		waitInsertOST(t, ctx, osts[i], id)
	}
	var nums []int
	for i, a := range got {
		// CPU numbers are given in plug order: the kernel takes the lowest free one.
		wantNum := present + i
		wantLink := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", wantNum)
		if a.Event != "arrival" || a.CPU == nil || *a.CPU != wantNum || a.SymbolicLink != wantLink || a.State != "online" || a.Cause != "uevent" {
			t.Errorf("processor notification %d: got %v (cpu %v); want an online arrival of %s from a uevent", i, a, a.CPU, wantLink)
			continue
		}
		nums = append(nums, *a.CPU)
		g.cpus = append(g.cpus, plugged{id: ids[i], cpu: *a.CPU})
	}
	after := g.metrics(t)
	if d := after.get("hotplug_agent_online_attempts_total", "interface_class", "processor", "result", "success") -
		before.get("hotplug_agent_online_attempts_total", "interface_class", "processor", "result", "success"); d != float64(n) {
		t.Errorf("hotplug_agent_online_attempts_total{processor,success} grew by %v; want %d", d, n)
	}
	return nums
}

// waitInsertOST waits for the guest's _OST answer to the insertion of device id: ACPI source 1
// (device check), status 0 (success).
func waitInsertOST(t testing.TB, ctx context.Context, sub *qemu.Subscription, id string) {
	t.Helper()
	e, err := sub.Wait(ctx, "ACPI_DEVICE_OST", qemu.OSTFor(id))
	if err != nil {
		t.Fatalf("the guest's _OST for the insertion of %s: %v", id, err)
	}
	var o qemu.OST
	if err := json.Unmarshal(e.Data, &o); err != nil || o.Info.Source != 1 || o.Info.Status != 0 {
		t.Errorf("ACPI_DEVICE_OST for %s: %s; want source 1 (insertion), status 0 (success)", id, e.Data)
	}
}

// plugged is a device a scenario hot-added and has not removed: a CPU (cpu) or a pc-dimm (blocks).
type plugged struct {
	id     string
	cpu    int
	blocks []int
}

// Scenario 2: two CPUs hot-added; the agent onlines them; one processor arrival each, in order.
func testCPUHotAdd(t testing.TB, g *guest) {
	nums := hotAddCPUs(t, g, 2)
	for _, i := range g.interfaces(t, "processor") {
		if i.State != "online" {
			t.Errorf("/interfaces: %s is %q", i.SymbolicLink, i.State)
		}
	}
	if c, want := len(g.interfaces(t, "processor")), g.bootCPUs+len(g.cpus); c != want {
		t.Errorf("/interfaces lists %d processors; want %d", c, want)
	}
	t.Logf("CPUs %v hot-added and online", nums)
}

// hotAddDIMM hot-adds a 256 MiB pc-dimm and waits for its two memory arrivals (ascending block
// order). It records the DIMM on g for hot_remove and returns the arrivals.
func hotAddDIMM(t testing.TB, g *guest, s *stream) []notification {
	t.Helper()
	ctx := ctxFor(t, 60*time.Second)
	g.seq++
	id := fmt.Sprintf("dimm-%d", g.seq)
	start := time.Now()
	ost := g.vm.QMP.Subscribe()
	if err := g.vm.AddDIMM(ctx, id, 256*mib); err != nil {
		t.Fatal(err)
	}
	got := s.take(t, 2, 60*time.Second, "two memory arrivals after device_add pc-dimm "+id+" (256 MiB)")
	waitInsertOST(t, ctx, ost, id)
	t.Logf("pc-dimm %s: two memory arrivals %v after device_add", id, time.Since(start).Round(time.Millisecond))
	d := plugged{id: id}
	for i, a := range got {
		if a.Event != "arrival" || a.MemoryBlock == nil || a.State != "online" || a.Cause != "uevent" {
			t.Fatalf("memory notification %d: got %v; want an online arrival from a uevent", i, a)
		}
		b := *a.MemoryBlock
		if a.SymbolicLink != fmt.Sprintf("/sys/devices/system/memory/memory%d", b) || a.PhysStart != uint64(b)*blockSize || a.Size != blockSize {
			t.Errorf("arrival %v: block %d, phys_start %#x, size %d: inconsistent", a, b, a.PhysStart, a.Size)
		}
		d.blocks = append(d.blocks, b)
	}
	if len(d.blocks) == 2 && d.blocks[1] != d.blocks[0]+1 {
		t.Errorf("the DIMM's blocks arrived as %v; want two consecutive blocks in ascending order", d.blocks)
	}
	g.dimms = append(g.dimms, d)
	return got
}

// checkBlocks asserts through /interfaces that the blocks are online in zone.
func checkBlocks(t testing.TB, g *guest, blocks []int, zone string) {
	t.Helper()
	listed := map[int]iface{}
	for _, i := range g.interfaces(t, "memory") {
		if i.MemoryBlock != nil {
			listed[*i.MemoryBlock] = i
		}
	}
	for _, b := range blocks {
		i, ok := listed[b]
		switch {
		case !ok:
			t.Errorf("/interfaces does not list memory%d", b)
		case i.State != "online" || i.Zones != zone:
			t.Errorf("/interfaces: memory%d state %q, valid_zones %q; want online in %s", b, i.State, i.Zones, zone)
		}
	}
}

// Scenario 3b: the kernel onlines the DIMM's blocks (memhp_default_state=online_movable); the
// agent ("auto") announces each once and never tries to online them itself.
func testDIMMKernelOnline(t testing.TB, g *guest) {
	s := g.subscribe(t, "class=memory")
	before := g.metrics(t)
	got := hotAddDIMM(t, g, s)
	s.quiet(t, time.Second, "the DIMM's two arrivals")
	blocks := []int{*got[0].MemoryBlock, *got[1].MemoryBlock}
	checkBlocks(t, g, blocks, "Movable")
	after := g.metrics(t)
	for _, result := range []string{"success", "failure"} {
		if d := after.get("hotplug_agent_online_attempts_total", "interface_class", "memory", "result", result) -
			before.get("hotplug_agent_online_attempts_total", "interface_class", "memory", "result", result); d != 0 {
			t.Errorf("hotplug_agent_online_attempts_total{memory,%s} grew by %v: the agent tried to online blocks the kernel had onlined", result, d)
		}
	}
	if d := after.get("hotplug_agent_notifications_total", "event", "arrival", "interface_class", "memory") -
		before.get("hotplug_agent_notifications_total", "event", "arrival", "interface_class", "memory"); d != 2 {
		t.Errorf("hotplug_agent_notifications_total{arrival,memory} grew by %v; want 2", d)
	}
}

// Scenario 3a: the kernel leaves the DIMM's blocks offline (memhp_default_state=offline); the
// agent onlines both as movable, then announces each once.
func testDIMMAgentOnline(t testing.TB, g *guest) {
	s := g.subscribe(t, "class=memory")
	before := g.metrics(t)
	got := hotAddDIMM(t, g, s)
	s.quiet(t, time.Second, "the DIMM's two arrivals")
	blocks := []int{*got[0].MemoryBlock, *got[1].MemoryBlock}
	checkBlocks(t, g, blocks, "Movable")
	after := g.metrics(t)
	delta := func(result string) float64 {
		return after.get("hotplug_agent_online_attempts_total", "interface_class", "memory", "result", result) -
			before.get("hotplug_agent_online_attempts_total", "interface_class", "memory", "result", result)
	}
	if ok, failed := delta("success"), delta("failure"); ok != 2 || failed != 0 {
		t.Errorf("hotplug_agent_online_attempts_total{memory}: success grew by %v, failure by %v; want 2 and 0", ok, failed)
	}
	if c := after.get("hotplug_agent_online_duration_seconds_count", "interface_class", "memory") -
		before.get("hotplug_agent_online_duration_seconds_count", "interface_class", "memory"); c != 2 {
		t.Errorf("hotplug_agent_online_duration_seconds_count{memory} grew by %v; want 2", c)
	}
}

// moduleLine matches the log line of the "modules" callback (memory_devices: true).
var moduleLine = regexp.MustCompile(`msg="device interface change" callback=modules event=(arrival|removal) .*symbolic_link=(\S+) .*memory_device=(\S+) memory_blocks=(\S+) phys_start=0x([0-9a-f]+) size=(\d+)`)

// module is one notification of the "modules" callback, as it logged it.
type module struct {
	event, link, device, blocks string
	physStart, size             uint64
}

// moduleLog returns the notifications the "modules" callback logged on the console, in order.
func moduleLog(g *guest) []module {
	var out []module
	for _, m := range moduleLine.FindAllStringSubmatch(g.vm.Serial(), -1) {
		start, _ := strconv.ParseUint(m[5], 16, 64)
		size, _ := strconv.ParseUint(m[6], 10, 64)
		out = append(out, module{event: m[1], link: m[2], device: m[3], blocks: m[4], physStart: start, size: size})
	}
	return out
}

// waitModules waits until the "modules" callback has logged n notifications, then a second
// more in which nothing else comes, and returns them.
func waitModules(t testing.TB, g *guest, n int, what string) []module {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); len(moduleLog(g)) < n; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the memory-device registration logged %d notifications in a minute; want %d (%s): %+v", len(moduleLog(g)), n, what, moduleLog(g))
		}
	}
	time.Sleep(time.Second)
	got := moduleLog(g)
	if len(got) != n {
		t.Fatalf("the memory-device registration logged %d notifications; want %d (%s): %+v", len(got), n, what, got)
	}
	return got
}

// deviceListed returns the entry of /interfaces?memory_devices=true for device, if any.
func deviceListed(t testing.TB, g *guest, device string) (iface, bool) {
	t.Helper()
	var devs []iface
	if err := json.Unmarshal(g.get(t, "/interfaces?memory_devices=true"), &devs); err != nil {
		t.Fatalf("/interfaces?memory_devices=true: %v", err)
	}
	for _, d := range devs {
		if d.MemoryDevice == device {
			return d, true
		}
	}
	return iface{}, false
}

// acpiMemoryDevice is the sysfs name of an ACPI memory device.
var acpiMemoryDevice = regexp.MustCompile(`^PNP0C80:[0-9a-f]{2}$`)

// Scenario 3c: a 512 MiB pc-dimm gives four block arrivals and, to the registration with
// memory_devices, one arrival of the whole module with the address and size QEMU gave it;
// /interfaces names the device of each block and lists the device with memory_devices=true.
func testDIMMModule(t testing.TB, g *guest) {
	ctx := ctxFor(t, 90*time.Second)
	s := g.subscribe(t, "class=memory")
	before := len(moduleLog(g))
	g.seq++
	id := fmt.Sprintf("dimm-%d", g.seq)
	ost := g.vm.QMP.Subscribe()
	start := time.Now()
	if err := g.vm.AddDIMM(ctx, id, 512*mib); err != nil {
		t.Fatal(err)
	}
	got := s.take(t, 4, 60*time.Second, "four memory arrivals after device_add pc-dimm "+id+" (512 MiB)")
	waitInsertOST(t, ctx, ost, id)
	var blocks []int
	for i, a := range got {
		if a.Event != "arrival" || a.MemoryBlock == nil || a.State != "online" {
			t.Fatalf("memory notification %d: got %v; want an online block arrival", i, a)
		}
		blocks = append(blocks, *a.MemoryBlock)
	}
	for i := 1; i < len(blocks); i++ {
		if blocks[i] != blocks[0]+i {
			t.Fatalf("the DIMM's blocks arrived as %v; want four consecutive blocks in ascending order", blocks)
		}
	}
	g.dimms = append(g.dimms, plugged{id: id, blocks: blocks})
	dev, err := g.vm.MemoryDevice(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	mods := waitModules(t, g, before+1, "one arrival for the DIMM")[before:]
	t.Logf("pc-dimm %s (512 MiB at %#x): four block arrivals and one module arrival %v after device_add", id, dev.Data.Addr, time.Since(start).Round(time.Millisecond))
	m := mods[0]
	wantBlocks := fmt.Sprintf("%d-%d", blocks[0], blocks[3])
	if m.event != "arrival" || !acpiMemoryDevice.MatchString(m.device) || m.blocks != wantBlocks ||
		m.physStart != dev.Data.Addr || m.size != dev.Data.Size || m.size != 512*mib || !strings.HasSuffix(m.link, "/"+m.device) {
		t.Errorf("module notification %+v; want the arrival of an ACPI memory device PNP0C80:xx with blocks %s at %#x, %d bytes (QEMU's query-memory-devices)",
			m, wantBlocks, dev.Data.Addr, dev.Data.Size)
	}
	for _, i := range g.interfaces(t, "memory") {
		if i.MemoryBlock != nil && slices.Contains(blocks, *i.MemoryBlock) && i.MemoryDevice != m.device {
			t.Errorf("/interfaces: memory%d belongs to device %q; want %s", *i.MemoryBlock, i.MemoryDevice, m.device)
		}
	}
	if d, ok := deviceListed(t, g, m.device); !ok || d.SymbolicLink != m.link || d.PhysStart != dev.Data.Addr || d.Size != 512*mib || d.MemoryBlocks != wantBlocks {
		t.Errorf("/interfaces?memory_devices=true lists %s as %+v (listed: %v); want %s at %#x, 512 MiB, blocks %s", m.device, d, ok, m.link, dev.Data.Addr, wantBlocks)
	}
}

// Scenario 4: virtio-mem on a pcie-root-port, grown and shrunk with qom-set requested-size: an
// arrival per block as it grows, a removal per block as it shrinks.
func testVirtioMem(t testing.TB, g *guest) {
	ctx := ctxFor(t, 90*time.Second)
	s := g.subscribe(t, "class=memory")
	present := len(g.interfaces(t, "memory"))
	modulesBefore := len(moduleLog(g))
	g.seq++
	id := fmt.Sprintf("vmem-%d", g.seq)
	if err := g.vm.AddVirtioMem(ctx, id, "rp0", 1024*mib); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// The guest's driver must be bound before it can plug: requested-size is set once the device
	// is there; virtio-mem catches up whenever it binds.
	if err := g.vm.ResizeVirtioMem(ctx, id, 256*mib); err != nil {
		t.Fatal(err)
	}
	grown := s.take(t, 2, 60*time.Second, "two memory arrivals as virtio-mem "+id+" grows to 256 MiB")
	if err := g.vm.WaitVirtioMemSize(ctx, id, 256*mib); err != nil {
		t.Fatal(err)
	}
	t.Logf("virtio-mem %s: hot-plugged and grown to 256 MiB in %v", id, time.Since(start).Round(time.Millisecond))
	s.quiet(t, 500*time.Millisecond, "the two arrivals of virtio-mem's growth")
	var blocks []int
	for _, a := range grown {
		if a.Event != "arrival" || a.MemoryBlock == nil || a.State != "online" {
			t.Fatalf("virtio-mem growth: got %v; want online memory arrivals", a)
		}
		blocks = append(blocks, *a.MemoryBlock)
	}
	if blocks[1] != blocks[0]+1 {
		t.Errorf("virtio-mem blocks arrived as %v; want two consecutive blocks in ascending order", blocks)
	}
	checkBlocks(t, g, blocks, "Movable")
	if c := len(g.interfaces(t, "memory")); c != present+2 {
		t.Errorf("/interfaces lists %d memory blocks after growth; want %d", c, present+2)
	}
	// The memory-device registration: one arrival for the plug, with the blocks' range.
	mods := waitModules(t, g, modulesBefore+1, "one arrival for virtio-mem's plug")[modulesBefore:]
	wantBlocks := fmt.Sprintf("%d-%d", blocks[0], blocks[1])
	if m := mods[0]; m.event != "arrival" || !strings.HasPrefix(m.device, "virtio") || m.blocks != wantBlocks ||
		m.physStart != uint64(blocks[0])*blockSize || m.size != 256*mib {
		t.Errorf("module notification %+v; want the arrival of a virtio device with blocks %s, 256 MiB", m, wantBlocks)
	}
	modulesBefore += 1

	start = time.Now()
	if err := g.vm.ResizeVirtioMem(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	shrunk := s.take(t, 2, 60*time.Second, "two memory removals as virtio-mem "+id+" shrinks to 0")
	if err := g.vm.WaitVirtioMemSize(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("virtio-mem %s: shrunk to 0 in %v", id, time.Since(start).Round(time.Millisecond))
	var removed []int
	for _, r := range shrunk {
		if r.Event != "removal" || r.MemoryBlock == nil {
			t.Fatalf("virtio-mem shrink: got %v; want memory removals", r)
		}
		removed = append(removed, *r.MemoryBlock)
	}
	slices.Sort(removed)
	if !slices.Equal(removed, blocks) {
		t.Errorf("virtio-mem shrink removed blocks %v; want %v", removed, blocks)
	}
	if err := g.vm.DelVirtioMem(ctx, id); err != nil {
		t.Fatal(err)
	}
	s.quiet(t, 500*time.Millisecond, "virtio-mem's shrink and unplug")
	if c := len(g.interfaces(t, "memory")); c != present {
		t.Errorf("/interfaces lists %d memory blocks after the shrink; want %d", c, present)
	}
	// Its removal came with the first block that went, and nothing arrived for the empty device.
	mods = waitModules(t, g, modulesBefore+1, "the removal of virtio-mem's plug")[modulesBefore-1:]
	if m := mods[1]; m.event != "removal" || m.device != mods[0].device || m.blocks != mods[0].blocks {
		t.Errorf("module notification %+v after the shrink; want the removal of %+v", m, mods[0])
	}
}

// Scenario 5: device_del of every pc-dimm and CPU the scenarios plugged (one of each is plugged
// first when none is): a removal for each block and CPU, and the interface counts return to
// the boot values.
func testHotRemove(t testing.TB, g *guest) {
	if len(g.dimms) == 0 {
		hotAddDIMM(t, g, g.subscribe(t, "class=memory"))
	}
	if len(g.cpus) == 0 {
		hotAddCPUs(t, g, 1)
	}
	ctx := ctxFor(t, 120*time.Second)
	s := g.subscribe(t, "")
	want := map[string]bool{}
	for _, d := range g.dimms {
		for _, b := range d.blocks {
			want[fmt.Sprintf("/sys/devices/system/memory/memory%d", b)] = true
		}
	}
	for _, c := range g.cpus {
		want[fmt.Sprintf("/sys/devices/system/cpu/cpu%d", c.cpu)] = true
	}
	start := time.Now()
	for len(g.dimms) > 0 {
		d := g.dimms[len(g.dimms)-1]
		if err := g.vm.DelDIMM(ctx, d.id); err != nil {
			t.Fatal(err)
		}
		g.dimms = g.dimms[:len(g.dimms)-1]
		t.Logf("device_del %s: DEVICE_DELETED after %v", d.id, time.Since(start).Round(time.Millisecond))
	}
	for len(g.cpus) > 0 {
		c := g.cpus[len(g.cpus)-1]
		if err := g.vm.DelCPU(ctx, c.id); err != nil {
			t.Fatal(err)
		}
		g.cpus = g.cpus[:len(g.cpus)-1]
		t.Logf("device_del %s: slot free after %v", c.id, time.Since(start).Round(time.Millisecond))
	}
	got := s.take(t, len(want), 60*time.Second, fmt.Sprintf("%d removals (%s)", len(want), strings.Join(keys(want), " ")))
	s.quiet(t, time.Second, "the removals")
	for _, r := range got {
		if r.Event != "removal" || !want[r.SymbolicLink] {
			t.Errorf("unexpected notification %v; want removals of %v", r, keys(want))
		}
		delete(want, r.SymbolicLink)
	}
	if len(want) > 0 {
		t.Errorf("no removal for %v", keys(want))
	}
	cpus, blocks := g.interfaceCounts(t)
	m := g.metrics(t)
	if cpus != g.bootCPUs || blocks != g.bootBlocks {
		t.Errorf("/interfaces lists %d CPUs and %d blocks; want the boot values %d and %d", cpus, blocks, g.bootCPUs, g.bootBlocks)
	}
	if c, b := m.get("hotplug_agent_interfaces", "interface_class", "processor"), m.get("hotplug_agent_interfaces", "interface_class", "memory"); c != float64(g.bootCPUs) || b != float64(g.bootBlocks) {
		t.Errorf("hotplug_agent_interfaces: processor %v, memory %v; want the boot values %d and %d", c, b, g.bootCPUs, g.bootBlocks)
	}
	free, err := g.vm.FreeCPUSlots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(free) != 4-g.bootCPUs {
		t.Errorf("query-hotpluggable-cpus has %d free slots; want %d", len(free), 4-g.bootCPUs)
	}
	// Each memory device that arrived was removed when its first block went.
	last := map[string]string{}
	for _, md := range moduleLog(g) {
		last[md.device] = md.event
	}
	for device, event := range last {
		if event != "removal" {
			t.Errorf("memory device %s: its last notification is the %s; want its removal after device_del", device, event)
		}
		if d, ok := deviceListed(t, g, device); ok {
			t.Errorf("/interfaces?memory_devices=true still lists %+v after device_del", d)
		}
	}
}

func keys(m map[string]bool) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

// callbackCounts are a callback's dispatch (started) and duration (finished) histogram counts,
// and sums.
type callbackCounts struct {
	started, finished       float64
	latencySum, durationSum float64
}

func (m metricSet) callback(name string) callbackCounts {
	return callbackCounts{
		started:     m.get("hotplug_agent_dispatch_latency_seconds_count", "callback", name),
		finished:    m.get("hotplug_agent_callback_duration_seconds_count", "callback", name),
		latencySum:  m.get("hotplug_agent_dispatch_latency_seconds_sum", "callback", name),
		durationSum: m.get("hotplug_agent_callback_duration_seconds_sum", "callback", name),
	}
}

// memoryNotifications is how many memory notifications the agent has emitted.
func (m metricSet) memoryNotifications() float64 {
	return m.get("hotplug_agent_notifications_total", "event", "arrival", "interface_class", "memory") +
		m.get("hotplug_agent_notifications_total", "event", "removal", "interface_class", "memory")
}

// waitMetrics scrapes /metrics until cond holds, for up to d.
func (g *guest) waitMetrics(t testing.TB, d time.Duration, what string, cond func(metricSet) bool) metricSet {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		m := g.metrics(t)
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Scenario 6: a hot-add while one registration's callback is slow (an exec callback that sleeps
// slowSleep per notification): the other registrations (an /events subscriber, a fast exec
// callback, the log callback) get every notification of the hot-add while the slow one is still
// blocked on the first. Asserted on order, never on timings; the latencies are logged.
func testSlowCallback(t testing.TB, g *guest) {
	// The slow registration must be idle: it has finished every memory notification emitted.
	m0 := g.waitMetrics(t, 4*slowSleep+30*time.Second, "the slow callback to finish the memory notifications already emitted", func(m metricSet) bool {
		return m.callback("slow").finished == m.memoryNotifications()
	})
	slow0, fast0, events0, log0 := m0.callback("slow"), m0.callback("fast"), m0.callback("events"), m0.callback("log")
	s := g.subscribe(t, "class=memory")
	got := hotAddDIMM(t, g, s)
	firstSeen := time.Now()
	// The fast exec callback finishes both notifications...
	m1 := g.waitMetrics(t, 60*time.Second, "the fast exec callback to finish the hot-add's two notifications", func(m metricSet) bool {
		return m.callback("fast").finished >= fast0.finished+2
	})
	elapsed := time.Since(firstSeen)
	// ...while the slow one has started the first and finished nothing.
	slow1 := m1.callback("slow")
	if elapsed < slowSleep-time.Second {
		if slow1.started != slow0.started+1 || slow1.finished != slow0.finished {
			t.Errorf("while the others had both notifications, the slow callback had started %v and finished %v of them; want 1 started, 0 finished (it sleeps %v each)",
				slow1.started-slow0.started, slow1.finished-slow0.finished, slowSleep)
		}
	} else {
		t.Logf("the host was too slow to observe the slow callback mid-sleep (%v elapsed): ordering not checked", elapsed)
	}
	if e := m1.callback("events"); e.started < events0.started+2 {
		t.Errorf("the /events registrations started %v notifications; want at least 2", e.started-events0.started)
	}
	// Then the slow callback catches up, in order, on its own.
	m2 := g.waitMetrics(t, 2*slowSleep+30*time.Second, "the slow callback to finish the hot-add's two notifications", func(m metricSet) bool {
		return m.callback("slow").finished >= slow0.finished+2
	})
	perCall := func(name string, before callbackCounts, after metricSet) string {
		a := after.callback(name)
		n := a.started - before.started
		if n == 0 {
			return name + ": none"
		}
		return fmt.Sprintf("%s: %v dispatched, mean dispatch latency %v, mean run time %v", name, n,
			time.Duration((a.latencySum-before.latencySum)/n*float64(time.Second)).Round(time.Microsecond),
			time.Duration((a.durationSum-before.durationSum)/max(a.finished-before.finished, 1)*float64(time.Second)).Round(time.Microsecond))
	}
	slowFirst := time.Duration((slow1.latencySum - slow0.latencySum) * float64(time.Second))
	slowSecond := time.Duration((m2.callback("slow").latencySum - slow1.latencySum) * float64(time.Second))
	t.Logf("hot-add of %s and %s with a %v callback registered:\n  %s\n  %s\n  %s\n  %s (first %v, second %v: it waited for the first)",
		got[0].SymbolicLink, got[1].SymbolicLink, slowSleep,
		perCall("events", events0, m2), perCall("fast", fast0, m2), perCall("log", log0, m2), perCall("slow", slow0, m2),
		slowFirst.Round(time.Microsecond), slowSecond.Round(time.Microsecond))
}
