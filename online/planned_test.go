package online

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/memdev"
)

// plannedMachine is a fake machine with 1 GiB of boot memory (blocks 0-7, DMA32), whose
// /proc/zoneinfo follows the blocks the onliner brings online, and a layout of memory devices
// that a test changes as the kernel would.
type plannedMachine struct {
	*fakeFS
	zoneinfo string

	lmu    sync.Mutex
	layout memdev.Layout
}

func newPlannedMachine(t *testing.T) *plannedMachine {
	m := &plannedMachine{fakeFS: newFake(), zoneinfo: filepath.Join(t.TempDir(), "zoneinfo"),
		layout: memdev.Layout{Devices: map[string]*memdev.Device{}}}
	for n := range 8 {
		m.blocks[n], m.zones[n] = "online", "DMA32"
	}
	m.writeZoneinfo()
	m.onWrite = func(string) { m.writeZoneinfo() }
	return m
}

// writeZoneinfo writes the zones of the online blocks as /proc/zoneinfo shows them.
func (m *plannedMachine) writeZoneinfo() {
	m.mu.Lock()
	present := map[string]int{"DMA32": 0, "Normal": 0, "Movable": 0}
	for n, s := range m.blocks {
		if s == "online" {
			present[m.zones[n]] += blockPages
		}
	}
	m.mu.Unlock()
	var b strings.Builder
	for _, z := range []string{"DMA32", "Normal", "Movable"} {
		fmt.Fprintf(&b, "Node 0, zone %8s\n  pages free     1\n        spanned  %d\n        present  %d\n        managed  %d\n", z, present[z], present[z], present[z])
	}
	if err := os.WriteFile(m.zoneinfo, []byte(b.String()), 0o644); err != nil {
		panic(err)
	}
}

// plug adds blocks first..last offline, as the kernel's add does; with device set, they belong
// to it (an ACPI device once the kernel has linked them; virtio-mem from the start).
func (m *plannedMachine) plug(first, last int, device, kind string) []int {
	var blocks []int
	m.mu.Lock()
	for n := first; n <= last; n++ {
		m.blocks[n] = "offline"
		blocks = append(blocks, n)
	}
	m.mu.Unlock()
	if device != "" {
		m.link(device, kind, blocks...)
	}
	return blocks
}

// link makes blocks part of device.
func (m *plannedMachine) link(device, kind string, blocks ...int) {
	m.lmu.Lock()
	defer m.lmu.Unlock()
	d := m.layout.Devices[device]
	if d == nil {
		d = &memdev.Device{ID: device, Kind: kind}
		m.layout.Devices[device] = d
	}
	d.Blocks = append(d.Blocks, blocks...)
	slices.Sort(d.Blocks)
}

func (m *plannedMachine) readLayout() (memdev.Layout, error) {
	m.lmu.Lock()
	defer m.lmu.Unlock()
	l := memdev.Layout{Devices: map[string]*memdev.Device{}}
	for id, d := range m.layout.Devices {
		c := *d
		c.Blocks = slices.Clone(d.Blocks)
		l.Devices[id] = &c
	}
	return l, nil
}

// decisions records the planner's decisions as "kind:zone".
type decisions struct {
	mu  sync.Mutex
	got []string
}

// wait waits until n decisions are recorded and returns them.
func (d *decisions) wait(t *testing.T, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		d.mu.Lock()
		got := slices.Clone(d.got)
		d.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
	}
}

// startPlanned runs an onliner under the policy Planned at ratio on m.
func startPlanned(t *testing.T, m *plannedMachine, ratio int, wait time.Duration, log *slog.Logger) (*Onliner, *decisions) {
	t.Helper()
	o := New(Policy{Memory: Planned, MovableRatio: ratio, Backoff: time.Millisecond}, m, log, nil)
	decided := &decisions{}
	o.SetPlanner(PlannerSources{Zoneinfo: m.zoneinfo, Layout: m.readLayout, DeviceWait: wait, PageSize: 4096,
		Decided: func(kind string, z Zone) {
			decided.mu.Lock()
			decided.got = append(decided.got, kind+":"+z.String())
			decided.mu.Unlock()
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { o.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return o, decided
}

// addAll queues blocks as hot-added.
func addAll(o *Onliner, blocks []int) {
	for _, n := range blocks {
		o.AddMemoryBlock(n, 0, time.Now())
	}
}

// waitWrites waits for the writes want, in order.
func waitWrites(t *testing.T, f *fakeFS, want []string) {
	t.Helper()
	var got []string
	for range want {
		select {
		case w := <-f.wrote:
			got = append(got, w)
		case <-time.After(10 * time.Second):
			t.Fatalf("writes %v; want %v", got, want)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("writes (-want +got):\n%s", diff)
	}
}

func writes(first, last int, state string) []string {
	var out []string
	for n := first; n <= last; n++ {
		out = append(out, fmt.Sprintf("memory%d=%s", n, state))
	}
	return out
}

// TestPlannedGrowth grows a 1 GiB machine by a DIMM, a virtio-mem device and another DIMM: the
// onliner writes the zones the planner decides, as the kernel's auto-movable would.
func TestPlannedGrowth(t *testing.T) {
	m := newPlannedMachine(t)
	o, decided := startPlanned(t, m, DefaultMovableRatio, time.Minute, nil)

	// A 512 MiB DIMM: 4 blocks of 24 the boot memory backs at 301%.
	addAll(o, m.plug(32, 35, "PNP0C80:00", memdev.KindACPI))
	waitWrites(t, m.fakeFS, writes(32, 35, "online_movable"))

	// virtio-mem grows by 2 GiB in two steps: 20 movable blocks in all, within 24.
	addAll(o, m.plug(40, 47, "virtio5", memdev.KindVirtioMem))
	waitWrites(t, m.fakeFS, writes(40, 47, "online_movable"))
	addAll(o, m.plug(48, 55, "virtio5", memdev.KindVirtioMem))
	waitWrites(t, m.fakeFS, writes(48, 55, "online_movable"))

	// A 1 GiB DIMM: virtio-mem's 16 movable blocks need 5.3 blocks of boot memory, leaving 2.7,
	// which back 8.1 movable blocks; the first DIMM has 4 of them: the DIMM goes whole to the
	// kernel zone.
	addAll(o, m.plug(64, 71, "PNP0C80:01", memdev.KindACPI))
	waitWrites(t, m.fakeFS, writes(64, 71, "online_kernel"))

	// virtio-mem grows on: to the 24 movable blocks the boot memory backs, then its own kernel
	// blocks back three times as many movable ones (the DIMM's kernel blocks back none).
	addAll(o, m.plug(56, 63, "virtio5", memdev.KindVirtioMem))
	waitWrites(t, m.fakeFS, append(writes(56, 59, "online_movable"), "memory60=online_kernel", "memory61=online_movable", "memory62=online_movable", "memory63=online_movable"))

	rep := func(s string, n int) []string { return slices.Repeat([]string{s}, n) }
	want := slices.Concat(rep("acpi:movable", 4), rep("virtio-mem:movable", 16), rep("acpi:kernel", 8),
		rep("virtio-mem:movable", 4), rep("virtio-mem:kernel", 1), rep("virtio-mem:movable", 3))
	if diff := cmp.Diff(want, decided.wait(t, len(want))); diff != "" {
		t.Errorf("decisions (-want +got):\n%s", diff)
	}
}

// TestPlannedWaitsForTheDevice: a DIMM's blocks are held back until the kernel links them to
// the DIMM, then decided whole; a block no device claims is decided alone after the wait.
func TestPlannedWaitsForTheDevice(t *testing.T) {
	m := newPlannedMachine(t)
	o, decided := startPlanned(t, m, DefaultMovableRatio, 300*time.Millisecond, nil)
	// 3.5 GiB: too much for one boot GiB, so decided whole it is KERNEL; block by block its first
	// 24 blocks would be MOVABLE.
	blocks := m.plug(32, 59, "", "")
	addAll(o, blocks)
	time.Sleep(100 * time.Millisecond)
	m.mu.Lock()
	early := slices.Clone(m.fakeFS.writes)
	m.mu.Unlock()
	if len(early) != 0 {
		t.Fatalf("writes %v before the DIMM's blocks were linked to it", early)
	}
	m.link("PNP0C80:00", memdev.KindACPI, blocks...)
	waitWrites(t, m.fakeFS, writes(32, 59, "online_kernel"))

	start := time.Now()
	addAll(o, m.plug(64, 64, "", ""))
	waitWrites(t, m.fakeFS, []string{"memory64=online_movable"})
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("a block of no device decided after %v; want the wait (300ms) first", d)
	}
	if got := decided.wait(t, 29); len(got) != 29 || got[28] != "none:movable" {
		t.Errorf("last decision %q; want none:movable", got)
	}
}

// TestPlannedHotAddedMemoryIsNeverBootMemory: memory of no known device (a balloon, dax/kmem,
// virtio-mem where /proc/iomem hides it) that was hot-added into a kernel zone backs no MOVABLE
// memory, however long it has been online and its arrival announced, nor after a restart within
// the same boot (SetMemoryOrigin): the MOVABLE memory stays within the ratio of the kernel zones'
// memory that was there at boot, as the kernel's auto-movable keeps it.
func TestPlannedHotAddedMemoryIsNeverBootMemory(t *testing.T) {
	m := newPlannedMachine(t) // 8 boot blocks: at 301%, 24 MOVABLE blocks
	noDevices := func() (memdev.Layout, error) { return memdev.Layout{Devices: map[string]*memdev.Device{}}, nil }
	sources := PlannerSources{Zoneinfo: m.zoneinfo, Layout: noDevices, DeviceWait: time.Nanosecond, PageSize: 4096}
	hotAdd := func(o *Onliner, n int) {
		m.plug(n, n, "", "")
		o.AddMemoryBlock(n, 0, time.Now())
		time.Sleep(time.Millisecond) // past DeviceWait: a block of no device
		handleOnce(context.Background(), o, item{memory: true, n: n, added: time.Now()})
		o.Onlined(n) // its arrival, as the agent attributes each one
	}
	o := New(Policy{Memory: Planned, MovableRatio: DefaultMovableRatio}, m, nil, nil)
	o.SetPlanner(sources)
	o.SetMemoryOrigin([]int{0, 1, 2, 3, 4, 5, 6, 7}, nil)
	for n := 32; n <= 58; n++ {
		hotAdd(o, n)
	}
	waitWrites(t, m.fakeFS, append(writes(32, 55, "online_movable"), writes(56, 58, "online_kernel")...))
	if diff := cmp.Diff([]int{0, 1, 2, 3, 4, 5, 6, 7}, o.BootMemory()); diff != "" {
		t.Errorf("boot memory (-want +got):\n%s", diff)
	}

	// The agent restarts: the state file tells it which of the blocks present are boot memory.
	o = New(Policy{Memory: Planned, MovableRatio: DefaultMovableRatio}, m, nil, nil)
	o.SetPlanner(sources)
	var hot []int
	for n := 32; n <= 58; n++ {
		hot = append(hot, n)
	}
	o.SetMemoryOrigin([]int{0, 1, 2, 3, 4, 5, 6, 7}, hot)
	hotAdd(o, 59)
	waitWrites(t, m.fakeFS, []string{"memory59=online_kernel"})
}

// TestPlannedWithoutZoneinfo: without /proc/zoneinfo (a service with ProcSubset=pid) the
// planner counts the online blocks of each zone instead, and says so once; without any view of
// the machine it onlines into the kernel zones, which never unbalances them, and says so once.
func TestPlannedWithoutZoneinfo(t *testing.T) {
	m := newPlannedMachine(t)
	var logs testenv.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	o, _ := startPlanned(t, m, DefaultMovableRatio, time.Minute, log)
	os.Remove(m.zoneinfo)
	m.mu.Lock()
	m.onWrite = nil
	m.mu.Unlock()
	addAll(o, m.plug(32, 33, "PNP0C80:00", memdev.KindACPI))
	waitWrites(t, m.fakeFS, writes(32, 33, "online_movable"))
	addAll(o, m.plug(34, 57, "PNP0C80:01", memdev.KindACPI))
	waitWrites(t, m.fakeFS, writes(34, 57, "online_kernel"))
	if n := strings.Count(logs.String(), "counting online memory blocks instead"); n != 1 {
		t.Errorf("%d warnings about the zones; want 1:\n%s", n, logs.String())
	}

	m.lmu.Lock()
	m.layout.Devices = nil // the layout cannot be read
	m.lmu.Unlock()
	broken := func() (memdev.Layout, error) { return memdev.Layout{}, os.ErrPermission }
	o2 := New(Policy{Memory: Planned, MovableRatio: DefaultMovableRatio}, m, log, nil)
	o2.SetPlanner(PlannerSources{Zoneinfo: m.zoneinfo, Layout: broken})
	for _, n := range []int{60, 61} {
		m.plug(n, n, "", "")
		o2.AddMemoryBlock(n, 0, time.Now())
		handleOnce(context.Background(), o2, item{memory: true, n: n, added: time.Now()})
	}
	waitWrites(t, m.fakeFS, []string{"memory60=online_kernel", "memory61=online_kernel"})
	if n := strings.Count(logs.String(), "cannot read the machine's memory"); n != 1 {
		t.Errorf("%d warnings about the machine; want 1:\n%s", n, logs.String())
	}
}

// TestOtherOnliners: the agent leaves hot-added memory to the kernel's auto-online and to
// whoever onlines it first, counts who onlined each block, and logs each conflict once.
func TestOtherOnliners(t *testing.T) {
	for _, mode := range []string{Planned, OnlineMovable, Auto, None} {
		t.Run(mode, func(t *testing.T) {
			m := newPlannedMachine(t)
			var logs testenv.Buffer
			o := New(Policy{Memory: mode, MovableRatio: DefaultMovableRatio, Backoff: time.Millisecond}, m, slog.New(slog.NewTextHandler(&logs, nil)), nil)
			o.SetPlanner(PlannerSources{Zoneinfo: m.zoneinfo, Layout: m.readLayout, PageSize: 4096})
			ctx := context.Background()

			// The agent onlines block 32. Each arrival is attributed as it comes.
			var got []string
			m.plug(32, 32, "PNP0C80:00", memdev.KindACPI)
			o.AddMemoryBlock(32, 0, time.Now())
			handleOnce(ctx, o, item{memory: true, n: 32, added: time.Now()})
			got = append(got, o.Onlined(32))
			// A udev rule wins the race for block 33: the agent's write fails, the block is online.
			m.plug(33, 33, "PNP0C80:01", memdev.KindACPI)
			o.AddMemoryBlock(33, 0, time.Now())
			m.failures = 1
			m.before = func(string) {
				m.mu.Lock()
				m.blocks[33], m.zones[33] = "online", "Normal"
				m.mu.Unlock()
			}
			handleOnce(ctx, o, item{memory: true, n: 33, added: time.Now()})
			m.before = nil
			got = append(got, o.Onlined(33))
			// The kernel's auto-online onlines block 34 before the agent gets to it; block 35 after.
			m.auto = "online"
			m.plug(34, 35, "PNP0C80:02", memdev.KindACPI)
			o.AddMemoryBlock(34, 0, time.Now())
			o.AddMemoryBlock(35, 0, time.Now())
			m.blocks[34], m.zones[34] = "online", "Normal"
			got = append(got, o.Onlined(34))
			handleOnce(ctx, o, item{memory: true, n: 35, added: time.Now()})
			m.blocks[35], m.zones[35] = "online", "Normal"
			got = append(got, o.Onlined(35))
			want := []string{ByAgent, ByOther, ByKernel, ByKernel}
			if mode == None {
				want = []string{ByOther, ByOther, ByKernel, ByKernel}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Onlined (-want +got):\n%s", diff)
			}
			for _, w := range m.writes {
				if w != "memory32="+map[string]string{Planned: "online_movable", OnlineMovable: "online_movable", Auto: "online"}[mode] && w != "memory33=online_movable" && w != "memory33=online" {
					t.Errorf("write %q: the agent wrote to a block another onliner had", w)
				}
			}
			conflicts := map[string]int{}
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "another onliner") {
					for _, by := range []string{ByKernel, ByOther} {
						if strings.Contains(l, "onliner="+by) {
							conflicts[by]++
						}
					}
				}
			}
			wantConflicts := map[string]int{ByKernel: 1, ByOther: 1}
			switch mode {
			case None:
				wantConflicts = map[string]int{}
			case Auto:
				wantConflicts = map[string]int{ByOther: 1}
			}
			if diff := cmp.Diff(wantConflicts, conflicts); diff != "" {
				t.Errorf("conflicts logged (-want +got):\n%s\n%s", diff, logs.String())
			}
		})
	}
}
