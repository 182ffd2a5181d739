//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/qemu"
)

// growth is a sequence of hot-adds and unplugs: a virtio-mem device grown in steps to its
// maximum, pc-dimms added beside it, then the virtio-mem device shrunk in steps to nothing and
// the pc-dimms unplugged, newest first.
type growth struct {
	// boot is the guest's boot memory (-m); maxMem bounds what can be hot-added.
	boot, maxMem string
	// virtioMax is the virtio-mem device's size; grow are the requested sizes it is taken
	// through, ascending; shrink those on the way back down (the last one 0).
	virtioMax    uint64
	grow, shrink []uint64
	// dimms are the pc-dimm sizes, added in order after the virtio-mem device has grown.
	dimms []uint64
	// load is the share of the guest's memory the workload keeps in anonymous pages.
	load float64
}

// String describes the sequence for logs and tables.
func (s growth) String() string {
	var d []string
	for _, b := range s.dimms {
		d = append(d, fmt.Sprintf("%d MiB", b/mib))
	}
	return fmt.Sprintf("%s boot; virtio-mem grown to %d MiB in %d steps; pc-dimms %s; shrunk to 0 in %d steps; the pc-dimms unplugged; the workload keeps %.0f%% of the memory",
		s.boot, s.virtioMax/mib, len(s.grow), strings.Join(d, ", "), len(s.shrink), 100*s.load)
}

// unplugFigures are what one policy made of a growth sequence.
type unplugFigures struct {
	policy string
	// added is every byte hot-added (virtio-mem at its peak and the pc-dimms); unplugged what
	// went away again (virtio-mem's size shrunk, pc-dimms whose device_del completed).
	added, unplugged uint64
	// movable and kernel are the hot-added bytes online in ZONE_MOVABLE and in a kernel zone at
	// the peak.
	movable, kernel uint64
	// dimmsRemoved of len(dimms) pc-dimms were unplugged; virtioLeft is what virtio-mem kept.
	dimmsRemoved, dimms int
	virtioLeft          uint64
	// oom is the console's first line that says the guest ran out of memory, if any.
	oom  string
	took time.Duration
	// dimmZones are the zones of each pc-dimm's blocks at the peak, by pc-dimm id.
	dimmZones map[string][]string
}

// percent returns unplugged as a share of added.
func (f unplugFigures) percent() float64 {
	if f.added == 0 {
		return 0
	}
	return 100 * float64(f.unplugged) / float64(f.added)
}

func (f unplugFigures) String() string {
	return fmt.Sprintf("%s: hot-added %d MiB (movable %d MiB, kernel %d MiB), unplugged %d MiB (%.0f%%): virtio-mem kept %d MiB, %d of %d pc-dimms removed; OOM: %v; %v",
		f.policy, f.added/mib, f.movable/mib, f.kernel/mib, f.unplugged/mib, f.percent(), f.virtioLeft/mib, f.dimmsRemoved, f.dimms,
		f.oom != "", f.took.Round(100*time.Millisecond))
}

// oomLine returns the first console line that names an out-of-memory kill's victim ("Out of
// memory: Killed process ..."), else the first that reports the OOM killer or a panic, else "".
func oomLine(console string) string {
	first := ""
	for _, l := range strings.Split(console, "\n") {
		if strings.Contains(l, "Out of memory") {
			return strings.TrimSpace(l)
		}
		if first == "" && (strings.Contains(l, "invoked oom-killer") || strings.Contains(l, "Kernel panic")) {
			first = strings.TrimSpace(l)
		}
	}
	return first
}

// addBackend adds a memory-backend-ram of size bytes that reserves no swap on the host
// (reserve=false: the host refuses large backends otherwise).
func addBackend(ctx context.Context, vm *qemu.VM, id string, size uint64) error {
	return vm.QMP.Execute(ctx, "object-add", map[string]any{"qom-type": "memory-backend-ram", "id": id, "size": size, "reserve": false}, nil)
}

// onlineBlocks returns the memory blocks /interfaces lists, by index.
func onlineBlocks(t *testing.T, g *guest) map[int]iface {
	t.Helper()
	out := map[int]iface{}
	for _, i := range g.interfaces(t, "memory") {
		if i.MemoryBlock != nil {
			out[*i.MemoryBlock] = i
		}
	}
	return out
}

// waitOnline waits until /interfaces lists want memory blocks online.
func waitOnline(t *testing.T, g *guest, want int, d time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		n := len(onlineBlocks(t, g))
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d memory blocks online after %v; want %d", what, n, d, want)
		}
		select {
		case <-g.vm.Exited():
			t.Fatalf("%s: the guest died (%v); console: %s", what, g.vm.ExitErr(), oomLine(g.vm.Serial()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// settleVirtioMem waits until virtio-mem device id has plugged size bytes, or its size has not
// moved for stall, and returns the size reached.
func settleVirtioMem(ctx context.Context, vm *qemu.VM, id string, size uint64, stall time.Duration) (uint64, error) {
	last, moved := uint64(1<<63), time.Now()
	for {
		got, err := vm.VirtioMemSize(ctx, id)
		if err != nil {
			return 0, err
		}
		if got == size {
			return got, nil
		}
		if got != last {
			last, moved = got, time.Now()
		}
		if time.Since(moved) > stall {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-vm.Exited():
			return got, fmt.Errorf("the guest died: %v", vm.ExitErr())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// unplugDIMM asks the guest to eject pc-dimm id and reports whether it went: DEVICE_DELETED, or
// the guest's _OST refusing the eject (it could not offline every block), within d.
func unplugDIMM(ctx context.Context, vm *qemu.VM, id string, d time.Duration) (bool, string, error) {
	sub := vm.QMP.Subscribe()
	if err := vm.QMP.Execute(ctx, "device_del", map[string]any{"id": id}, nil); err != nil {
		return false, "", err
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		e, err := sub.Next(wctx)
		if err != nil {
			return false, "no answer", nil
		}
		switch e.Name {
		case "DEVICE_DELETED":
			if qemu.DeviceIs(id)(e) {
				return true, "", nil
			}
		case "ACPI_DEVICE_OST":
			var o qemu.OST
			// Source 3 is the eject request; 0x84 says the eject is under way.
			if json.Unmarshal(e.Data, &o) == nil && o.Info.Device == id && o.Info.Source == 3 && o.Info.Status != 0 && o.Info.Status != 0x84 {
				return false, fmt.Sprintf("_OST status %#x", o.Info.Status), nil
			}
		}
	}
}

// memloadPort is the workload's HTTP port in the guest.
const memloadPort = 19101

// workload is the memload program of a guest, reached through a host forward.
type workload struct {
	base string
	// vm is the guest; killed says the guest's OOM killer killed memload (then it is not waited
	// for any more: the sequence goes on without it).
	vm     *qemu.VM
	killed bool
}

// withWorkload returns the QEMU adjustment that boots with s's memory and packs memload (built
// at bin) into the initramfs as /bin/memload, forwarding its port; the agent's configuration
// must start it (workloadCallback).
func withWorkload(t *testing.T, s growth, bin string, w *workload) func(*qemu.Config) {
	return func(c *qemu.Config) {
		c.Memory, c.MaxMem, c.Slots = s.boot, s.maxMem, 8
		port, err := qemu.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		c.Forwards = append(c.Forwards, qemu.Forward{HostPort: port, GuestPort: memloadPort})
		w.base = fmt.Sprintf("http://127.0.0.1:%d", port)
		// The kernel unpacks concatenated archives in order.
		f, err := os.OpenFile(c.Initramfs, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		a := qemu.NewInitramfs(f)
		a.CopyFile("/bin/memload", 0o755, bin)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// workloadCallback is the agent configuration's callback that starts memload once, for the
// boot CPU's existing arrival, and lets it run, keeping the share load of the guest's memory.
func workloadCallback(load float64) string {
	return fmt.Sprintf(`callbacks:
  - name: workload
    class: processor
    include_existing: true
    exec:
      command: ["/bin/memload", "-fraction", "%g"]
      timeout: 24h
`, load)
}

// memloadStatus is memload's /status.
type memloadStatus struct{ Anon, Pipes, Target, Memtotal int64 }

// status returns memload's /status.
func (w *workload) status() (st memloadStatus, err error) {
	resp, err := client.Get(w.base + "/status")
	if err != nil {
		return st, fmt.Errorf("memload: %w", err)
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// set sets memload's target (a query such as bytes=N or fraction=F) and waits until its
// memory matches it.
func (w *workload) set(t *testing.T, query string) {
	t.Helper()
	if w.killed {
		return
	}
	// A failed request is answered by wait: memload was killed, or it fails t.
	if resp, err := client.Get(w.base + "/target?" + query); err == nil {
		resp.Body.Close()
	}
	w.wait(t)
}

// wait waits until memload answers and holds its target, unless the guest's OOM killer has
// killed it.
func (w *workload) wait(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !w.killed {
		st, err := w.status()
		if err == nil && st.Target > 0 && st.Anon >= st.Target-4*mib && st.Anon <= st.Target+4*mib {
			return
		}
		if l := oomLine(w.vm.Serial()); strings.Contains(l, "(memload)") {
			t.Logf("the workload is gone: %s", l)
			w.killed = true
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("memload: %+v, %v after a minute", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runGrowth drives s on g and measures what could be unplugged again. The guest must have
// booted with s's memory and no hot-added memory yet; its agent's policy, or the kernel, onlines
// what is added.
func runGrowth(t *testing.T, g *guest, w *workload, policy string, s growth) unplugFigures {
	t.Helper()
	start := time.Now()
	ctx := ctxFor(t, 30*time.Minute)
	f := unplugFigures{policy: policy, dimms: len(s.dimms)}
	boot := onlineBlocks(t, g)
	online := len(boot)

	// virtio-mem, grown in steps.
	if err := addBackend(ctx, g.vm, "vmem-mem", s.virtioMax); err != nil {
		t.Fatal(err)
	}
	if err := g.vm.QMP.Execute(ctx, "device_add", map[string]any{"driver": "virtio-mem-pci", "id": "vmem", "memdev": "vmem-mem", "bus": "rp0", "requested-size": 0}, nil); err != nil {
		t.Fatal(err)
	}
	for _, size := range s.grow {
		if err := g.vm.ResizeVirtioMem(ctx, "vmem", size); err != nil {
			t.Fatal(err)
		}
		got, err := settleVirtioMem(ctx, g.vm, "vmem", size, 30*time.Second)
		if err != nil || got != size {
			t.Fatalf("%s: virtio-mem reached %d MiB of %d MiB: %v; console: %s", policy, got/mib, size/mib, err, oomLine(g.vm.Serial()))
		}
		online = len(boot) + int(size/blockSize)
		waitOnline(t, g, online, 60*time.Second, fmt.Sprintf("%s: virtio-mem grown to %d MiB", policy, size/mib))
		w.wait(t)
		t.Logf("%s: virtio-mem at %d MiB after %v", policy, size/mib, time.Since(start).Round(100*time.Millisecond))
	}
	f.added = s.virtioMax

	// pc-dimms.
	for i, size := range s.dimms {
		id := fmt.Sprintf("dimm%d", i)
		if err := addBackend(ctx, g.vm, id+"-mem", size); err != nil {
			t.Fatal(err)
		}
		if err := g.vm.QMP.Execute(ctx, "device_add", map[string]any{"driver": "pc-dimm", "id": id, "memdev": id + "-mem"}, nil); err != nil {
			t.Fatal(err)
		}
		online += int(size / blockSize)
		waitOnline(t, g, online, 60*time.Second, fmt.Sprintf("%s: pc-dimm %s (%d MiB)", policy, id, size/mib))
		w.wait(t)
		f.added += size
		t.Logf("%s: pc-dimm %s (%d MiB) online after %v", policy, id, size/mib, time.Since(start).Round(100*time.Millisecond))
	}

	// The peak: which zone each hot-added block is in, and each pc-dimm's blocks.
	var zones []string
	peak := onlineBlocks(t, g)
	f.dimmZones = map[string][]string{}
	for i := range s.dimms {
		id := fmt.Sprintf("dimm%d", i)
		d, err := g.vm.MemoryDevice(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for n := int(d.Data.Addr / blockSize); n < int((d.Data.Addr+d.Data.Size)/blockSize); n++ {
			f.dimmZones[id] = append(f.dimmZones[id], peak[n].Zones)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(peak)) {
		b := peak[n]
		if _, ok := boot[n]; ok {
			continue
		}
		if b.Zones == "Movable" {
			f.movable += blockSize
		} else {
			f.kernel += blockSize
		}
		zones = append(zones, fmt.Sprintf("%d:%s", n, b.Zones))
	}
	t.Logf("%s: zones at the peak: %s", policy, strings.Join(zones, " "))

	st, _ := w.status()
	t.Logf("%s: workload %+v", policy, st)
	// virtio-mem shrunk in steps; the workload first shrinks to its share of what will be left.
	bootBytes := uint64(len(boot)) * blockSize
	var dimmBytes uint64
	for _, d := range s.dimms {
		dimmBytes += d
	}
	// What it keeps (anonymous memory and the pipes it holds on to) must fit in its share of
	// what is left, or the guest would run out of memory whatever the policy.
	keep := func(left uint64) string {
		return fmt.Sprintf("bytes=%d", max(int64(float64(left)*s.load)-st.Pipes, 4*mib))
	}
	for _, size := range s.shrink {
		w.set(t, keep(bootBytes+dimmBytes+size))
		if err := g.vm.ResizeVirtioMem(ctx, "vmem", size); err != nil {
			t.Fatal(err)
		}
		got, err := settleVirtioMem(ctx, g.vm, "vmem", size, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: virtio-mem shrink to %d MiB: %v", policy, size/mib, err)
		}
		f.virtioLeft = got
		t.Logf("%s: virtio-mem asked for %d MiB, at %d MiB after %v", policy, size/mib, got/mib, time.Since(start).Round(100*time.Millisecond))
	}
	f.unplugged = s.virtioMax - f.virtioLeft

	// pc-dimms unplugged, newest first.
	for i := len(s.dimms) - 1; i >= 0; i-- {
		id := fmt.Sprintf("dimm%d", i)
		dimmBytes -= s.dimms[i]
		w.set(t, keep(bootBytes+dimmBytes+f.virtioLeft))
		ok, why, err := unplugDIMM(ctx, g.vm, id, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			f.dimmsRemoved++
			f.unplugged += s.dimms[i]
		}
		t.Logf("%s: device_del %s: removed %v %s after %v", policy, id, ok, why, time.Since(start).Round(100*time.Millisecond))
	}
	f.oom = oomLine(g.vm.Serial())
	f.took = time.Since(start)
	return f
}

// The growth sequences of TestIntegrationZonePlanner: ciGrowth in `make test`; benchGrowth, with
// HOTPLUG_PLANNER_GROWTH=bench, in `make bench` (bench/run.sh planner).
var (
	ciGrowth = growth{boot: "512M", maxMem: "8G", virtioMax: 3072 * mib,
		grow:   []uint64{1024 * mib, 1536 * mib, 2048 * mib, 3072 * mib},
		dimms:  []uint64{512 * mib, 512 * mib},
		shrink: []uint64{2048 * mib, 1024 * mib, 0}, load: 0.5}
	benchGrowth = growth{boot: "1G", maxMem: "24G", virtioMax: 12288 * mib,
		grow:   []uint64{1024 * mib, 2048 * mib, 4096 * mib, 8192 * mib, 12288 * mib},
		dimms:  []uint64{1024 * mib, 2048 * mib},
		shrink: []uint64{8192 * mib, 4096 * mib, 2048 * mib, 0}, load: 0.3}
)

// TestIntegrationZonePlanner drives the same growth sequence (virtio-mem grown from 1 GiB in
// steps, pc-dimms beside it, then all of it unplugged again) under a workload that keeps a share of
// the guest's memory in use and some unmovable kernel memory, three times: with the agent's zone
// planner (online.memory: planned, the kernel leaving memory offline), and, for comparison, with
// the kernel onlining everything MOVABLE (memhp_default_state=online_movable) and with the
// kernel's auto-movable policy. The planner's guest must never run out of memory, must online
// each pc-dimm all in one zone, must let everything it onlined MOVABLE be unplugged again, and
// must count every hot-added block as onlined by the agent. How much of the hot-added memory
// each policy let go again is logged as a table (and written to $HOTPLUG_PLANNER_TABLE when set).
func TestIntegrationZonePlanner(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU end-to-end tests boot guests: not in -short mode")
	}
	prepare(t)
	s := ciGrowth
	if os.Getenv("HOTPLUG_PLANNER_GROWTH") == "bench" {
		s = benchGrowth
	}
	bin := filepath.Join(env.binDir, "memload")
	root, err := qemu.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := qemu.BuildStatic(ctxFor(t, 3*time.Minute), root, "./e2e/testdata/memload", bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("sequence: %v", s)
	cfgNone := "log_notifications: false\nonline:\n  memory: none\n" + workloadCallback(s.load)
	var all []unplugFigures
	for _, p := range []struct {
		name   string
		append []string
		config string
	}{
		{"planner", []string{"memhp_default_state=offline"}, strings.Replace(cfgNone, "memory: none", "memory: planned", 1)},
		{"kernel online_movable", []string{"memhp_default_state=online_movable"}, cfgNone},
		{"kernel auto-movable", []string{"memhp_default_state=online", "memory_hotplug.online_policy=auto-movable"}, cfgNone},
	} {
		t.Run(strings.ReplaceAll(p.name, " ", "_"), func(t *testing.T) {
			w := &workload{}
			o := guestOptions{name: p.name, append: p.append, config: p.config, vm: withWorkload(t, s, bin, w)}
			g := bootGuest(t, o, artefactDir(t, t.Name(), "guest"))
			defer g.stop()
			defer func() {
				if t.Failed() {
					g.logArtefacts(t)
				}
			}()
			w.vm = g.vm
			w.wait(t)
			f := runGrowth(t, g, w, p.name, s)
			t.Log(f)
			all = append(all, f)
			if p.name != "planner" {
				return
			}
			if f.oom != "" {
				t.Errorf("the guest ran out of memory under the zone planner: %s", f.oom)
			}
			for id, zones := range f.dimmZones {
				if len(slices.Compact(slices.Clone(zones))) != 1 {
					t.Errorf("pc-dimm %s's blocks were onlined into zones %v; want all in one zone", id, zones)
				}
			}
			if f.unplugged < f.movable {
				t.Errorf("%d MiB were unplugged again, less than the %d MiB the planner onlined MOVABLE", f.unplugged/mib, f.movable/mib)
			}
			var dimmBlocks float64
			for _, d := range s.dimms {
				dimmBlocks += float64(d / blockSize)
			}
			virtioBlocks := float64(s.virtioMax / blockSize)
			m := g.metrics(t)
			sum := func(name, label, value string) float64 {
				var n float64
				for _, z := range []string{"movable", "kernel", "unknown"} {
					n += m.get(name, label, value, "zone", z)
				}
				return n
			}
			if got, want := sum("hotplug_agent_memory_blocks_onlined_total", "onliner", "agent"), virtioBlocks+dimmBlocks; got != want {
				t.Errorf("memory_blocks_onlined_total{onliner=\"agent\"} = %v; want %v, every hot-added block", got, want)
			}
			if got := sum("hotplug_agent_memory_blocks_onlined_total", "onliner", "kernel") + sum("hotplug_agent_memory_blocks_onlined_total", "onliner", "other"); got != 0 {
				t.Errorf("memory_blocks_onlined_total counts %v blocks onlined by another onliner; want 0", got)
			}
			if got := sum("hotplug_agent_zone_plan_blocks_total", "device", "acpi"); got != dimmBlocks {
				t.Errorf("zone_plan_blocks_total{device=\"acpi\"} = %v; want %v, the pc-dimms' blocks, each decided with its device", got, dimmBlocks)
			}
			if got := sum("hotplug_agent_zone_plan_blocks_total", "device", "virtio-mem"); got != virtioBlocks {
				t.Errorf("zone_plan_blocks_total{device=\"virtio-mem\"} = %v; want %v", got, virtioBlocks)
			}
		})
	}
	table := unplugTable(s, all)
	t.Logf("unplugged again after the growth sequence:\n%s", table)
	if out := os.Getenv("HOTPLUG_PLANNER_TABLE"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// killedRE finds the victim's name in the OOM killer's line.
var killedRE = regexp.MustCompile(`Killed process \d+ \(([^)]*)\)`)

// unplugTable is the figures of each policy as a Markdown table.
func unplugTable(s growth, all []unplugFigures) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Sequence: %v.\n\n", s)
	b.WriteString("| onlined by | hot-added | MOVABLE at the peak | KERNEL at the peak | unplugged again | share | pc-dimms removed | virtio-mem kept | out of memory |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range all {
		oom := "no"
		if m := killedRE.FindStringSubmatch(f.oom); m != nil {
			oom = "yes: " + m[1] + " killed"
		} else if f.oom != "" {
			oom = "yes"
		}
		fmt.Fprintf(&b, "| %s | %d MiB | %d MiB | %d MiB | %d MiB | %.0f%% | %d of %d | %d MiB | %s |\n",
			f.policy, f.added/mib, f.movable/mib, f.kernel/mib, f.unplugged/mib, f.percent(), f.dimmsRemoved, f.dimms, f.virtioLeft/mib, oom)
	}
	return b.String()
}
