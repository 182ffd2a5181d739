//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/headroom"
)

const gib = 1 << 30

// headroomGuest is a guest of TestIntegrationHeadroom: 512 MiB of boot memory, so that the
// headroom is some 17 GiB, which the kernel adds and onlines (movable, as Kata Containers'
// guests do) in about 3 s under TCG. The DIMMs' memory backends reserve nothing on the host.
func headroomGuest(name string) guestOptions {
	return guestOptions{
		name:   name,
		append: []string{"memhp_default_state=online_movable"},
		config: "log_notifications: false\n",
		memory: "512M", maxMem: "40G", slots: 2,
	}
}

// costGuest is the guest of the long form's cost_by_size: 1 GiB, the kernel leaves hot-added
// memory offline, so that what each hot-add takes is its add alone.
func costGuest() guestOptions {
	return guestOptions{
		name:   "cost",
		append: []string{"memhp_default_state=offline"},
		config: "log_notifications: false\n",
		memory: "1G", maxMem: "80G", slots: 8,
	}
}

// oomSigns are what the guest's console says when a hot-add ran it out of memory: the OOM killer
// and its victim (at the console's loglevel, "invoked oom-killer" is not printed), a panic when
// nothing is left to kill, or the ACPI driver giving up the add when its memmap did not fit.
var oomSigns = []string{"Out of memory", "Kernel panic", "add_memory failed"}

// TestIntegrationHeadroom checks the headroom the agent advertises in fresh 512 MiB guests:
//
//   - advertised_size_fits: a DIMM of the headroom is added and onlined; the agent stays
//     healthy, the console shows no sign of running out of memory, and the kernel memory the
//     add took is 0.95 to 1.0 of what the model says;
//   - the_limit_is_the_oom_point: a DIMM of 0.95 times the advertised limit fits, one of 1.05
//     times it runs the guest out of memory (the OOM killer, or the kernel giving up the add),
//     while the agent is asked for /metrics and /interfaces as Prometheus and an orchestrator
//     would. HOTPLUG_HEADROOM_PROBE=0.99,1.01 probes other fractions (the long form).
//   - memmap_on_memory_not_applied: with memory_hotplug.memmap_on_memory=1, which Linux 6.1
//     does not apply to a DIMM, the agent still counts the memmap, and 1.05 times its limit
//     still runs the guest out of memory.
//
// HOTPLUG_HEADROOM_SIZES=1,8,32 adds cost_by_size: DIMMs of those GiB, one after another, in a
// 1 GiB guest that leaves them offline, each with the kernel memory it took against the model.
func TestIntegrationHeadroom(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU end-to-end tests boot guests: not in -short mode")
	}
	prepare(t)
	start := time.Now()
	t.Cleanup(func() { t.Logf("figure: TestIntegrationHeadroom took %v", time.Since(start).Round(time.Millisecond)) })
	t.Run("advertised_size_fits", testHeadroomFits)
	fracs := []float64{0.95, 1.05}
	if v := os.Getenv("HOTPLUG_HEADROOM_PROBE"); v != "" {
		fracs = nil
		for _, f := range strings.Split(v, ",") {
			x, err := strconv.ParseFloat(f, 64)
			if err != nil || x <= 0 || x == 1 {
				t.Fatalf("HOTPLUG_HEADROOM_PROBE: %q: want fractions of the limit, none of them 1", f)
			}
			fracs = append(fracs, x)
		}
	}
	t.Run("the_limit_is_the_oom_point", func(t *testing.T) {
		for i, frac := range fracs {
			t.Run(fmt.Sprintf("%.2f", frac), func(t *testing.T) { testHeadroomLimit(t, fmt.Sprintf("limit%d", i), frac) })
		}
	})
	t.Run("memmap_on_memory_not_applied", testHeadroomMemmapOnMemory)
	if v := os.Getenv("HOTPLUG_HEADROOM_SIZES"); v != "" {
		var sizes []uint64
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.ParseUint(f, 10, 64)
			if err != nil || n == 0 {
				t.Fatalf("HOTPLUG_HEADROOM_SIZES: %q: want sizes in GiB", f)
			}
			sizes = append(sizes, n*gib)
		}
		t.Run("cost_by_size", func(t *testing.T) { testHeadroomCost(t, sizes) })
	}
}

func testHeadroomFits(t *testing.T) {
	g := bootGuest(t, headroomGuest("fits"), artefactDir(t, "TestIntegrationHeadroom", "fits"))
	defer g.stop()
	defer logIfFailed(t, g)
	gauge := g.metrics(t).get("hotplug_agent_memory_hotadd_headroom_bytes")
	e := g.memory(t)
	if gauge != float64(e.Headroom) {
		t.Errorf("hotplug_agent_memory_hotadd_headroom_bytes = %v; /memory says %d", gauge, e.Headroom)
	}
	if e.Headroom < 4*gib || e.Headroom%e.BlockSize != 0 || e.Limit < e.Headroom {
		t.Fatalf("headroom %d bytes, limit %d, block size %d: want at least 4 GiB in whole blocks, under the limit", e.Headroom, e.Limit, e.BlockSize)
	}
	// The guest's kernel says what a struct page is, and that memmap_on_memory does not apply.
	if e.StructPage != 64 || e.StructPageSource != "vmcoreinfo" || e.MemmapOnMemory.Applies {
		t.Errorf("struct page %d (%s), memmap_on_memory %+v: want 64 from vmcoreinfo, and not applying on Linux 6.1", e.StructPage, e.StructPageSource, e.MemmapOnMemory)
	}
	t.Logf("figure: 512 MiB guest: headroom %d MiB (%d blocks), limit %d MiB; kernel memory above the high watermarks %d MiB (reserve %d MiB), above min %d MiB; %d bytes per block; memmap_on_memory %q: %s",
		e.Headroom>>20, e.Headroom/e.BlockSize, e.Limit>>20, e.Usable>>20, e.Reserve>>20, e.KernelFree>>20, e.BlockCost, e.MemmapOnMemory.Parameter, e.MemmapOnMemory.Reason)
	blocks := g.presentBlocks(t)
	ctx := ctxFor(t, 2*time.Minute)
	begin := time.Now()
	g.addDIMM(t, ctx, "headroom", e.Headroom)
	if outcome := g.outcome(ctx, blocks+int(e.Headroom/e.BlockSize)); outcome != "fits" {
		t.Fatalf("a hot-add of the advertised %d MiB: %s", e.Headroom>>20, outcome)
	}
	took := time.Since(begin)
	if err := g.waitHealthyHTTP(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatalf("after the hot-add: %v", err)
	}
	after := g.memory(t)
	used := int64(kernelFree(e)) - int64(kernelFree(after))
	model := int64(e.Headroom/e.BlockSize*e.BlockCost + e.AddCost)
	t.Logf("figure: %d MiB added and onlined in %v; kernel memory it took: %d KiB, model %d KiB (%.3f of the model); headroom now %d MiB",
		e.Headroom>>20, took.Round(time.Millisecond), used>>10, model>>10, float64(used)/float64(model), after.Headroom>>20)
	// The model is the memmap and page tables plus a margin (BlockOverhead, AddOverhead); what
	// the agent itself allocates meanwhile in kernel zones is within the last 1%.
	if float64(used) > 1.01*float64(model) || float64(used) < 0.95*float64(model) {
		t.Errorf("the hot-add took %d KiB of kernel memory; the model says %d KiB: want 0.95 to 1.01 of it", used>>10, model>>10)
	}
}

// testHeadroomLimit hot-adds frac times the advertised limit into a fresh guest: below 1 it
// must fit, above 1 it must run the guest out of memory.
func testHeadroomLimit(t *testing.T, name string, frac float64) {
	g := bootGuest(t, headroomGuest(name), artefactDir(t, "TestIntegrationHeadroom", name))
	defer g.stop()
	defer logIfFailed(t, g)
	e := g.memory(t)
	size := uint64(frac*float64(e.Limit)) / e.BlockSize * e.BlockSize
	// The reserve (64 MiB of kernel memory, 4 GiB of hot-add) keeps the limit well above the
	// headroom; 1.5 times the headroom is beyond it.
	if e.Limit <= e.Headroom || e.Limit >= e.Headroom*3/2 {
		t.Errorf("headroom %d MiB, limit %d MiB: want the limit (the OOM point) between 1.0 and 1.5 times the headroom", e.Headroom>>20, e.Limit>>20)
	}
	ctx := ctxFor(t, 2*time.Minute)
	blocks := g.presentBlocks(t)
	begin := time.Now()
	g.addDIMM(t, ctx, "limit", size)
	outcome := g.outcome(ctx, blocks+int(size/e.BlockSize))
	t.Logf("figure: limit %d MiB (headroom %d MiB): %.2f of it, %d MiB: %s, %v after device_add",
		e.Limit>>20, e.Headroom>>20, frac, size>>20, outcome, time.Since(begin).Round(time.Millisecond))
	switch fits := outcome == "fits"; {
	case frac < 1 && !fits:
		t.Errorf("%.2f of the limit (%d MiB) should fit: %s", frac, size>>20, outcome)
	case frac > 1 && fits:
		t.Errorf("%.2f of the limit (%d MiB) should run the guest out of memory: it fits", frac, size>>20)
	case frac > 1 && !slices.Contains(oomSigns, outcome):
		t.Errorf("%.2f of the limit (%d MiB): %s; want a sign of running out of memory", frac, size>>20, outcome)
	}
}

// testHeadroomMemmapOnMemory boots a guest with memory_hotplug.memmap_on_memory=1: Linux 6.1
// adds an ACPI DIMM as one range, to which the parameter does not apply, so the memmap still
// comes from kernel memory. The agent must say the parameter is set but not applying, count the
// memmap, and be right: 1.05 times its limit still runs the guest out of memory.
func testHeadroomMemmapOnMemory(t *testing.T) {
	o := headroomGuest("memmap")
	o.append = append(slices.Clone(o.append), "memory_hotplug.memmap_on_memory=1")
	g := bootGuest(t, o, artefactDir(t, "TestIntegrationHeadroom", o.name))
	defer g.stop()
	defer logIfFailed(t, g)
	e := g.memory(t)
	m := e.MemmapOnMemory
	if m.Parameter != "Y" || m.Applies || !strings.Contains(m.Reason, "one range") {
		t.Fatalf("memmap_on_memory %+v: want the parameter Y, not applying on Linux 6.1 (a DIMM is one range)", m)
	}
	if memmap := e.BlockSize / e.PageSize * e.StructPage; e.BlockCost < memmap {
		t.Fatalf("%d bytes of kernel memory per block: want at least the memmap, %d", e.BlockCost, memmap)
	}
	size := uint64(1.05*float64(e.Limit)) / e.BlockSize * e.BlockSize
	ctx := ctxFor(t, 2*time.Minute)
	blocks := g.presentBlocks(t)
	begin := time.Now()
	g.addDIMM(t, ctx, "memmap", size)
	outcome := g.outcome(ctx, blocks+int(size/e.BlockSize))
	t.Logf("figure: memmap_on_memory=1: headroom %d MiB, limit %d MiB: 1.05 of it, %d MiB: %s, %v after device_add",
		e.Headroom>>20, e.Limit>>20, size>>20, outcome, time.Since(begin).Round(time.Millisecond))
	if !slices.Contains(oomSigns, outcome) {
		t.Errorf("with memmap_on_memory=1, 1.05 of the limit (%d MiB): %s; want a sign of running out of memory, as without it", size>>20, outcome)
	}
}

// testHeadroomCost measures the kernel memory DIMMs of the given sizes take, one after another,
// against the model, in a guest that leaves them offline.
func testHeadroomCost(t *testing.T, sizes []uint64) {
	o := costGuest()
	g := bootGuest(t, o, artefactDir(t, "TestIntegrationHeadroom", o.name))
	defer g.stop()
	defer logIfFailed(t, g)
	blocks := g.presentBlocks(t)
	for i, size := range sizes {
		time.Sleep(2 * time.Second) // the agent done with the last add's uevents
		b := g.memory(t)
		ctx := ctxFor(t, 2*time.Minute)
		begin := time.Now()
		g.addDIMM(t, ctx, fmt.Sprintf("cost%d", i), size)
		blocks += int(size / b.BlockSize)
		g.waitPresentBlocks(t, ctx, blocks)
		took := time.Since(begin)
		time.Sleep(2 * time.Second)
		a := g.memory(t)
		used := int64(kernelFree(b)) - int64(kernelFree(a))
		model := int64(size/b.BlockSize*b.BlockCost + b.AddCost)
		memmap := int64(size / b.PageSize * b.StructPage)
		t.Logf("figure: %d GiB: added in %v; kernel memory it took %d KiB: the memmap %d KiB and %d KiB more; model %d KiB (%.3f of the model)",
			size/gib, took.Round(time.Millisecond), used>>10, memmap>>10, (used-memmap)>>10, model>>10, float64(used)/float64(model))
		if used > model {
			t.Errorf("%d GiB took %d KiB of kernel memory, above the model's %d KiB", size/gib, used>>10, model>>10)
		}
	}
}

// memory returns the agent's /memory.
func (g *guest) memory(t *testing.T) headroom.Estimate {
	t.Helper()
	var e headroom.Estimate
	if err := json.Unmarshal(g.get(t, "/memory"), &e); err != nil {
		t.Fatalf("/memory: %v", err)
	}
	return e
}

// kernelFree is the free memory of the zones kernel allocations may use.
func kernelFree(e headroom.Estimate) uint64 {
	var n uint64
	for _, z := range e.Zones {
		if z.Kernel {
			n += z.FreeBytes
		}
	}
	return n
}

// addDIMM hot-adds a pc-dimm of size bytes, backed by a memory-backend-ram that reserves no
// host memory (reserve=false: the host would refuse to reserve tens of GiB).
func (g *guest) addDIMM(t *testing.T, ctx context.Context, id string, size uint64) {
	t.Helper()
	if err := g.vm.QMP.Execute(ctx, "object-add", map[string]any{"qom-type": "memory-backend-ram", "id": id + "-mem", "size": size, "reserve": false}, nil); err != nil {
		t.Fatalf("add DIMM %s of %d MiB: %v", id, size>>20, err)
	}
	if err := g.vm.QMP.Execute(ctx, "device_add", map[string]any{"driver": "pc-dimm", "id": id, "memdev": id + "-mem"}, nil); err != nil {
		t.Fatalf("add DIMM %s of %d MiB: %v", id, size>>20, err)
	}
}

// presentBlocks returns hotplug_agent_present{interface_class="memory"}.
func (g *guest) presentBlocks(t *testing.T) int {
	t.Helper()
	return int(g.metrics(t).get("hotplug_agent_present", "interface_class", "memory"))
}

// waitPresentBlocks waits until n memory blocks are present.
func (g *guest) waitPresentBlocks(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	for {
		if got := g.presentBlocks(t); got >= n {
			return
		} else if ctx.Err() != nil {
			t.Fatalf("waiting for %d memory blocks present: %d (%v)", n, got, ctx.Err())
		}
		select {
		case <-g.vm.Exited():
			t.Fatalf("waiting for %d memory blocks present: QEMU exited (%v)", n, g.vm.ExitErr())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// outcome follows a hot-add, asking the agent for /metrics and /interfaces every 100 ms as
// Prometheus and an orchestrator would, until n memory blocks are online ("fits", once a second
// more has passed without a sign) or the console shows one of oomSigns (returned), or QEMU
// exits. It never fails t: the agent may be dying.
func (g *guest) outcome(ctx context.Context, n int) string {
	for ctx.Err() == nil {
		if sign := firstOOMSign(g.vm.Serial()); sign != "" {
			return sign
		}
		select {
		case <-g.vm.Exited():
			if sign := firstOOMSign(g.vm.Serial()); sign != "" {
				return sign
			}
			return "QEMU exited"
		case <-time.After(100 * time.Millisecond):
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		online, err := g.onlineBlocks(rctx)
		cancel()
		if err == nil && online >= n {
			time.Sleep(time.Second)
			if sign := firstOOMSign(g.vm.Serial()); sign != "" {
				return sign
			}
			return "fits"
		}
	}
	return fmt.Sprintf("neither online nor out of memory: %v", ctx.Err())
}

// onlineBlocks scrapes /metrics and returns the number of memory blocks /interfaces lists.
func (g *guest) onlineBlocks(ctx context.Context) (int, error) {
	var blocks []iface
	for _, path := range []string{"/metrics", "/interfaces?class=memory"} {
		req, _ := http.NewRequestWithContext(ctx, "GET", g.base+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, err
		}
		if strings.HasPrefix(path, "/interfaces") {
			if err := json.Unmarshal(b, &blocks); err != nil {
				return 0, err
			}
		}
	}
	return len(blocks), nil
}

// firstOOMSign returns the first of oomSigns on the console, or "".
func firstOOMSign(console string) string {
	first, at := "", -1
	for _, s := range oomSigns {
		if i := strings.Index(console, s); i >= 0 && (at < 0 || i < at) {
			first, at = s, i
		}
	}
	return first
}

// logIfFailed logs the guest's artefacts when t has failed.
func logIfFailed(t *testing.T, g *guest) {
	if t.Failed() {
		g.logArtefacts(t)
	}
}

// TestIntegrationHeadroomSystemd checks that the agent estimates the headroom when run as
// shipped: installed with dpkg in the systemd guest, under the unit's hardening (which must
// leave /proc/meminfo and /proc/zoneinfo readable, and keeps /proc/kcore closed).
func TestIntegrationHeadroomSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a Debian guest with systemd: not in -short mode")
	}
	prepareSystemd(t)
	disk, payload, port := sysFiles(t)
	g := bootSystemd(t, t.Name(), "systemd", disk, payload, &port, func(int) {})
	defer g.stop()
	defer logIfFailed(t, g.guest)
	g.must(t, "mount -o ro /dev/vdb /mnt && dpkg -i /mnt/"+filepath.Base(sysEnv.deb))
	g.waitActive(t, 30*time.Second, "", "dpkg -i")
	g.waitHTTP(t, 30*time.Second)
	e := g.memory(t)
	gauge := g.metrics(t).get("hotplug_agent_memory_hotadd_headroom_bytes")
	if e.Headroom == 0 || e.Headroom%e.BlockSize != 0 || gauge == 0 || len(e.Zones) == 0 {
		t.Errorf("under the unit: /memory headroom %d bytes, %d zones; gauge %v: want a headroom", e.Headroom, len(e.Zones), gauge)
	}
	// Without CAP_SYS_RAWIO the agent cannot read /proc/kcore, and says it assumed the size.
	if e.StructPage != 64 || e.StructPageSource != "assumed" {
		t.Errorf("under the unit: struct page %d (%s); want 64, assumed", e.StructPage, e.StructPageSource)
	}
	t.Logf("figure: under the unit, in the systemd guest (%s): headroom %d MiB, limit %d MiB", sysGuestMemory, e.Headroom>>20, e.Limit>>20)
}
