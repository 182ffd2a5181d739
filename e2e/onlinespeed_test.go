//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/bench/onlining"
	"github.com/hotplug-agent/hotplug-agent/internal/qemu"
)

// Onlining speed (issue 15, part 3): how long a hot-added memory device takes to come online in
// the Debian systemd guest, from QMP device_add (or a virtio-mem resize) to the last block's
// arrival and to the device's arrival on the agent's /events, with three onliners:
//
//   - kernel: the kernel's own auto-online (memhp_default_state=online_movable), the floor;
//   - udev: the rule distributions ship, run by the guest's systemd-udevd;
//   - agent: the agent's packaged online policy (memory: auto), memhp_default_state=offline.
//
// The agent runs in all three (with memory: none under kernel and udev), so that the same clock
// reads the same notifications. Under `go test` it runs at a CI size and checks correctness only;
// with HOTPLUG_ONLINE_SPEED=full (bench/run.sh onlining) it runs the full sizes, several runs
// each, and writes the figures to $HOTPLUG_ONLINE_SPEED_OUT/onlining.json for BENCHMARKS.md.

// speedMode is one onliner.
type speedMode struct {
	name   string
	append []string // the kernel command line's memhp_default_state
	udev   bool     // install the distribution-style udev rule
	agent  bool     // the agent's online policy onlines memory
}

var speedModes = []speedMode{
	{name: "kernel", append: []string{"memhp_default_state=online_movable"}},
	{name: "udev", append: []string{"memhp_default_state=offline"}, udev: true},
	{name: "agent", append: []string{"memhp_default_state=offline"}, agent: true},
}

// udevOnlineRule is the rule distributions ship to online hot-added memory.
const udevOnlineRule = `SUBSYSTEM=="memory", ACTION=="add", ATTR{state}=="offline", ATTR{state}="online"` + "\n"

const udevRulePath = "/etc/udev/rules.d/80-hotplug-speed-memory-online.rules"

// speedConfigNone is the packaged configuration with the memory online policy off: under the
// kernel's auto-online and the udev rule the agent only announces.
const speedConfigNone = `log_notifications: true
online:
  cpu: online
  memory: none
  retries: 3
callbacks: []
`

// speedDropIn gives the agent what it needs to group virtio-mem blocks into devices (see the
// unit's comments), in every mode alike.
const speedDropIn = `[Service]
CapabilityBoundingSet=CAP_NET_ADMIN CAP_KILL CAP_SYS_ADMIN
ProcSubset=all
`

// TestIntegrationOnlineSpeed hot-adds memory into the systemd guest under each onliner and checks
// what a user checks: every block online, one arrival per block and one per device, nothing lost
// at the default receive buffer, the agent's peak RSS under 30 MiB. It never asserts timings.
func TestIntegrationOnlineSpeed(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a Debian guest with systemd: not in -short mode")
	}
	prepareSystemd(t)
	full := os.Getenv("HOTPLUG_ONLINE_SPEED") == "full"
	outDir := os.Getenv("HOTPLUG_ONLINE_SPEED_OUT")
	runs := 1
	if v := os.Getenv("HOTPLUG_ONLINE_SPEED_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("HOTPLUG_ONLINE_SPEED_RUNS=%q: want a number of runs, 1 or more", v)
		}
		runs = n
	}
	// A boot is a list of hot-adds into one guest. At CI size one boot per onliner takes both; at
	// full size each hot-add has a fresh guest (the memmap of 32 GiB is half the boot memory).
	type boot struct {
		mode      speedMode
		scenarios []onlining.Scenario
		run       int
	}
	var boots []boot
	maxMem := "8G"
	if full {
		maxMem = "40G"
		only := os.Getenv("HOTPLUG_ONLINE_SPEED_SCENARIOS") // e.g. "dimm8,vmem32"
		all := []struct {
			key string
			s   onlining.Scenario
		}{
			{"dimm8", onlining.Scenario{Name: "pc-dimm 8 GiB", Device: "pc-dimm", Size: 8 << 30}},
			{"dimm32", onlining.Scenario{Name: "pc-dimm 32 GiB", Device: "pc-dimm", Size: 32 << 30}},
			{"vmem32", onlining.Scenario{Name: "virtio-mem 32 GiB", Device: "virtio-mem", Size: 32 << 30}},
		}
		for run := 1; run <= runs; run++ {
			for _, s := range all {
				if only != "" && !strings.Contains(","+only+",", ","+s.key+",") {
					continue
				}
				// The onliners take turns, so that a change in the host's load falls on all.
				for _, m := range speedModes {
					boots = append(boots, boot{m, []onlining.Scenario{s.s}, run})
				}
			}
		}
	} else {
		for _, m := range speedModes {
			boots = append(boots, boot{m, []onlining.Scenario{
				{Name: "pc-dimm 2 GiB", Device: "pc-dimm", Size: 2 << 30},
				{Name: "virtio-mem 2 GiB", Device: "virtio-mem", Size: 2 << 30},
			}, 1})
		}
	}

	disk, payload, port := sysFiles(t)
	res := onlining.Result{Date: time.Now().UTC().Format(time.RFC3339), Revision: os.Getenv("BENCH_REVISION"),
		GuestKernel: env.kernel.Version, BootMemory: "1 GiB"}
	if out, err := exec.Command(qemu.QEMUBinary, "--version").Output(); err == nil {
		res.QEMU = strings.SplitN(string(out), "\n", 2)[0]
	}
	installed := false
	for i, b := range boots {
		name := fmt.Sprintf("%02d-%s-run%d", i+1, b.mode.name, b.run)
		ok := t.Run(name, func(t *testing.T) {
			g := bootSystemdWith(t, t.Name(), "guest", sysBoot{disk: disk, payload: payload, append: b.mode.append,
				memory: "1G", maxMem: maxMem, slots: 4}, &port, func(int) {})
			defer func() {
				if t.Failed() {
					g.saveJournal()
					g.logArtefacts(t)
				}
				g.stop()
			}()
			if !installed {
				installSpeedAgent(t, g)
				installed = true
			}
			setSpeedMode(t, g, b.mode)
			for j, s := range b.scenarios {
				r := measureOnlining(t, g, b.mode, s, fmt.Sprintf("mem%d", j))
				r.Run = b.run
				res.Runs = append(res.Runs, r)
				t.Logf("figure: %s, %s, run %d: last block online %v, device arrival %v after device_add (guest: first to last block %v); %d device notifications; agent VmHWM %.1f MiB; load %s -> %s",
					s.Name, b.mode.name, b.run, r.LastBlock.Round(time.Millisecond), r.DeviceArrival.Round(time.Millisecond),
					r.GuestSpan.Round(time.Millisecond), r.DeviceNotifications, float64(r.AgentHWM)/(1<<20), r.LoadBefore, r.LoadAfter)
			}
		})
		if !ok && !installed {
			t.Fatal("the first boot failed before the agent was installed")
		}
		if outDir != "" {
			writeSpeedResult(t, outDir, res)
		}
	}
}

// writeSpeedResult writes res to dir/onlining.json (after every boot, so that a run cut short
// keeps what it measured).
func writeSpeedResult(t *testing.T, dir string, res onlining.Result) {
	t.Helper()
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "onlining.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// installSpeedAgent installs the agent's package with dpkg, as an operator would, and gives it
// the drop-in that lets it group virtio-mem blocks.
func installSpeedAgent(t *testing.T, g *sysGuest) {
	t.Helper()
	deb := "/mnt/" + filepath.Base(sysEnv.deb)
	g.must(t, "mount -o ro /dev/vdb /mnt && dpkg -i "+deb+" && umount /mnt")
	g.must(t, "cp /etc/hotplug-agent/config.yaml /etc/hotplug-agent/config.yaml.packaged")
	g.must(t, "mkdir -p /etc/systemd/system/hotplug-agent.service.d && cat > /etc/systemd/system/hotplug-agent.service.d/speed.conf <<'EOF'\n"+speedDropIn+"EOF\n")
	g.must(t, "systemctl daemon-reload")
	// QEMU quits the guest without a shutdown: what the next boots need must be on the disk.
	g.must(t, "sync")
}

// setSpeedMode puts the guest in mode m: the udev rule there or not, the agent's online policy,
// and checks the kernel's auto-online. It restarts the agent and waits until it answers.
func setSpeedMode(t *testing.T, g *sysGuest, m speedMode) {
	t.Helper()
	want := "offline"
	if !m.udev && !m.agent {
		want = "online_movable"
	}
	if got := g.guestFile(t, "/sys/devices/system/memory/auto_online_blocks"); got != want {
		t.Fatalf("auto_online_blocks is %q; want %q for the %s onliner", got, want, m.name)
	}
	if m.udev {
		g.must(t, "cat > "+udevRulePath+" <<'EOF'\n"+udevOnlineRule+"EOF\n")
	} else {
		g.must(t, "rm -f "+udevRulePath)
	}
	g.must(t, "udevadm control --reload")
	if m.agent {
		g.must(t, "cp /etc/hotplug-agent/config.yaml.packaged /etc/hotplug-agent/config.yaml")
	} else {
		g.must(t, "cat > /etc/hotplug-agent/config.yaml <<'EOF'\n"+speedConfigNone+"EOF\n")
	}
	cfg := g.must(t, "cat /etc/hotplug-agent/config.yaml")
	if m.agent && !strings.Contains(cfg, "memory: auto") {
		t.Fatalf("the packaged configuration does not say memory: auto:\n%s", cfg)
	}
	pid := g.unit(t, "MainPID")["MainPID"]
	// On a loaded host the guest's systemd may not answer systemctl in time (its D-Bus call
	// times out): that is not what is tested here, so it is asked again.
	for attempt := 1; ; attempt++ {
		r := g.sh(t, "systemctl restart hotplug-agent.service")
		if r.Success() {
			break
		}
		if attempt == 3 {
			t.Fatalf("guest %s: systemctl restart hotplug-agent.service, 3 times: %v", g.name, r)
		}
		t.Logf("systemctl restart hotplug-agent.service: %v; again", r)
	}
	g.waitActive(t, time.Minute, pid, "the restart for the "+m.name+" onliner")
	g.waitHTTP(t, 30*time.Second)
}

// lossMetrics are the agent's counters that grow when events may have been lost.
var lossMetrics = []string{"hotplug_agent_netlink_overflows_total", "hotplug_agent_resyncs_total",
	"hotplug_agent_uevents_rejected_total", "hotplug_agent_stream_subscribers_cut_total",
	"hotplug_agent_callback_queue_overflows_total"}

// lossSum sums every series of the loss counters.
func lossSum(m metricSet) float64 {
	var sum float64
	for k, v := range m {
		name, _, _ := strings.Cut(k, "{")
		for _, l := range lossMetrics {
			if name == l {
				sum += v
			}
		}
	}
	return sum
}

// measureOnlining hot-adds s (device id) and waits for its blocks and the device to arrive, then
// checks the outcome.
func measureOnlining(t *testing.T, g *sysGuest, m speedMode, s onlining.Scenario, id string) onlining.Run {
	t.Helper()
	n := int(s.Size / blockSize)
	r := onlining.Run{Scenario: s, Blocks: n, Mode: m.name}
	// Generous: under the udev rule, with other guests on the host, 32 GiB takes minutes.
	d := 5*time.Minute + time.Duration(n)*3*time.Second
	ctx := ctxFor(t, d+2*time.Minute)
	blocks := g.subscribe(t, "class=memory")
	devices := g.subscribe(t, "memory_devices=true")
	before := g.metrics(t)
	presentBefore := strings.Count(g.must(t, "ls -d /sys/devices/system/memory/memory*"), "\n")
	if s.Device == "virtio-mem" {
		if err := g.vm.AddVirtioMem(ctx, id, "rp0", s.Size); err != nil {
			t.Fatal(err)
		}
		// The plug is timed from the resize, once the guest's driver has bound the device.
		deadline := time.Now().Add(time.Minute)
		for !g.sh(t, "ls /sys/bus/virtio/drivers/virtio_mem/ | grep -q '^virtio'").Success() {
			if time.Now().After(deadline) {
				t.Fatalf("the guest's virtio_mem driver did not bind %s within a minute", id)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	r.LoadBefore = loadAvg()
	r.Date = time.Now().UTC().Format(time.RFC3339)
	start := time.Now()
	switch s.Device {
	case "pc-dimm":
		if err := g.vm.AddDIMM(ctx, id, s.Size); err != nil {
			t.Fatal(err)
		}
	case "virtio-mem":
		if err := g.vm.ResizeVirtioMem(ctx, id, s.Size); err != nil {
			t.Fatal(err)
		}
	}
	got := blocks.take(t, n, d, fmt.Sprintf("%d block arrivals after the hot-add of %s under the %s onliner", n, s.Name, m.name))
	last := got[len(got)-1]
	r.LastBlock = last.Recv.Sub(start)
	r.GuestSpan = last.ReadAt.Sub(got[0].ReadAt)
	seen := map[int]bool{}
	lo, hi := -1, -1
	for _, a := range got {
		if a.Event != "arrival" || a.MemoryBlock == nil || a.State != "online" {
			t.Fatalf("%v: want an online memory block arrival", a)
		}
		b := *a.MemoryBlock
		if seen[b] {
			t.Errorf("memory%d arrived twice", b)
		}
		seen[b] = true
		if lo < 0 || b < lo {
			lo = b
		}
		hi = max(hi, b)
	}
	if hi-lo+1 != n {
		t.Errorf("the arrivals are of blocks %d-%d; want %d consecutive blocks", lo, hi, n)
	}
	// The device: its arrival once all its blocks are online. A virtio-mem plug may be announced
	// in extents while it grows (each replaced by the next: a removal and an arrival).
	want := fmt.Sprintf("%d-%d", lo, hi)
	for {
		x := devices.next(t, 2*time.Minute, "the memory device arrival with blocks "+want)
		r.DeviceNotifications++
		if x.Event == "arrival" && x.MemoryBlocks == want {
			r.DeviceArrival = x.Recv.Sub(start)
			if s.Device == "pc-dimm" && r.DeviceNotifications != 1 {
				t.Errorf("%s: %d device notifications before its arrival with blocks %s; want that arrival alone: %v",
					s.Name, r.DeviceNotifications, want, devices.got)
			}
			break
		}
		if s.Device == "pc-dimm" {
			t.Fatalf("%s: device notification %v; want one arrival with blocks %s", s.Name, x, want)
		}
	}
	if s.Device == "virtio-mem" {
		if err := g.vm.WaitVirtioMemSize(ctx, id, s.Size); err != nil {
			t.Fatal(err)
		}
	}
	r.LoadAfter = loadAvg()
	blocks.quiet(t, time.Second, "the arrivals of "+s.Name)
	devices.quiet(t, time.Second, "the device's arrival")

	// What a user checks in the guest: every block there is online, the hot-added ones included.
	if off := strings.TrimSpace(g.sh(t, "grep -L '^online$' /sys/devices/system/memory/memory*/state").Stdout); off != "" {
		t.Errorf("memory blocks not online after %s under the %s onliner:\n%s", s.Name, m.name, off)
	}
	if present := strings.Count(g.must(t, "ls -d /sys/devices/system/memory/memory*"), "\n"); present != presentBefore+n {
		t.Errorf("%d memory blocks present after the hot-add; want %d", present, presentBefore+n)
	}
	after := g.metrics(t)
	if lost := lossSum(after) - lossSum(before); lost != 0 {
		t.Errorf("the agent's loss counters (%s) grew by %v during %s", strings.Join(lossMetrics, ", "), lost, s.Name)
		r.Lost = lost
	}
	succ := after.get("hotplug_agent_online_attempts_total", "interface_class", "memory", "result", "success") -
		before.get("hotplug_agent_online_attempts_total", "interface_class", "memory", "result", "success")
	fail := after.get("hotplug_agent_online_attempts_total", "interface_class", "memory", "result", "failure") -
		before.get("hotplug_agent_online_attempts_total", "interface_class", "memory", "result", "failure")
	wantSucc := 0.0
	if m.agent {
		wantSucc = float64(n)
	}
	if succ != wantSucc || fail != 0 {
		t.Errorf("the agent's memory online attempts grew by %v successes and %v failures under the %s onliner; want %v and 0",
			succ, fail, m.name, wantSucc)
	}
	pid := g.unit(t, "MainPID")["MainPID"]
	hwm := g.must(t, "grep VmHWM /proc/"+pid+"/status")
	f := strings.Fields(hwm) // VmHWM:   12345 kB
	if len(f) != 3 {
		t.Fatalf("VmHWM of the agent: %q", hwm)
	}
	kb, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		t.Fatalf("VmHWM of the agent: %q: %v", hwm, err)
	}
	r.AgentHWM = kb << 10
	if r.AgentHWM >= 30<<20 {
		t.Errorf("the agent's VmHWM is %.1f MiB after %s; want under 30 MiB", float64(r.AgentHWM)/(1<<20), s.Name)
	}
	return r
}

// loadAvg returns the host's load averages (1, 5, 15 minutes).
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
