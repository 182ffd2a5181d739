//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

func ueventSeqnum(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/sys/kernel/uevent_seqnum")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("/sys/kernel/uevent_seqnum: %v", err)
	}
	return n
}

// uevent is a well-formed uevent datagram, as the kernel formats one.
func uevent(action, devpath, subsystem string, extra ...string) []byte {
	s := fmt.Sprintf("%s@%s\x00ACTION=%s\x00DEVPATH=%s\x00SUBSYSTEM=%s\x00", action, devpath, action, devpath, subsystem)
	for _, e := range extra {
		s += e + "\x00"
	}
	return []byte(s)
}

// TestIntegrationForgedUevent is guarantee 3: a root process sends the kernel's uevent group a
// well-formed "online" of a CPU that is offline. The agent must announce nothing for it and count
// it as rejected (sender); the first notification must be the real arrival when the CPU then
// really comes online.
func TestIntegrationForgedUevent(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	devpath := strings.TrimPrefix(link, "/sys")

	testenv.SetCPUOnline(t, cpu, false) // back online in cleanup whatever happens
	a := startAgent(t)
	events := a.subscribe(t, "class=processor")
	const rejected = `hotplug_agent_uevents_rejected_total{reason="sender"}`
	before := metric(t, a.get(t, "/metrics"), rejected)

	// The forgery looks like the kernel's next uevent: the SEQNUM it would use next, no SYNTH_UUID.
	forgedSeq := ueventSeqnum(t) + 1
	testenv.SendToGroup(t, uevent("online", devpath, "cpu", "DRIVER=processor", fmt.Sprintf("SEQNUM=%d", forgedSeq)))
	// A real (synthetic, announcing nothing) uevent takes the SEQNUM the forgery claimed, so that
	// the real online below has a higher one.
	if err := testenv.Synthesize("/sys/devices/system/cpu/cpu0", "change"); err != nil {
		t.Fatal(err)
	}

	// The agent reads its socket in order: by the time it delivers the real arrival, it has seen
	// the forgery. Had it believed the forgery, the first notification would be the forged
	// arrival (seqnum forgedSeq), and the real online would announce nothing.
	testenv.SetCPUOnline(t, cpu, true)
	first := next(t, events, "the real arrival of "+link)
	if first.Event != "arrival" || first.SymbolicLink != link || first.Cause != "uevent" || first.Seqnum <= forgedSeq {
		t.Errorf("first notification after the forged online = %+v; want the real arrival of %s, cause uevent, seqnum above the forged %d",
			first, link, forgedSeq)
	}
	if after := metric(t, a.get(t, "/metrics"), rejected); after < before+1 {
		t.Errorf("%s went from %v to %v after a forged uevent; want it to rise", rejected, before, after)
	}
	a.stop(t)
}

// TestIntegrationForgedThroughKernel: a root process has the kernel itself broadcast forged
// uevents (Linux 4.18 and later): from port id 0, with the kernel's next SEQNUM appended, like
// the kernel's own. The agent runs with the online policy `cpu: online`, and the administrator
// has taken a CPU offline. None of the forgeries may reach a callback or the stream, none may
// make the agent online the CPU, and each is counted as rejected (sender). The first
// notification is then the real arrival when the administrator brings the CPU back.
func TestIntegrationForgedThroughKernel(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	devpath := strings.TrimPrefix(link, "/sys")
	mems, _ := filepath.Glob("/sys/devices/system/memory/memory[0-9]*")
	if len(mems) == 0 {
		testenv.Unavailable(t, "no memory blocks in sysfs")
	}

	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("online:\n  cpu: online\n  memory: online\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.SetCPUOnline(t, cpu, false) // the administrator's; back online in cleanup whatever happens
	a := startAgent(t, "--config.file="+cfg)
	events := a.subscribe(t, "")
	m := a.get(t, "/metrics")
	const rejected = `hotplug_agent_uevents_rejected_total{reason="sender"}`
	const onlined = `hotplug_agent_online_attempts_total{interface_class="processor",result="success"}`
	before, onlinedBefore := metric(t, m, rejected), metric(t, m, onlined)

	mem0 := "/devices/system/memory/memory0"
	memLast := strings.TrimPrefix(mems[len(mems)-1], "/sys")
	forgeries := [][]byte{
		uevent("offline", "/devices/system/cpu/cpu0", "cpu", "DRIVER=processor"), // a false removal of cpu0
		uevent("remove", "/devices/system/cpu/cpu0", "cpu"),
		uevent("offline", mem0, "memory"), // a false removal of memory0
		uevent("remove", mem0, "memory"),
		uevent("online", "/devices/system/cpu/cpu4095", "cpu"), // a CPU that does not exist
		uevent("add", "/devices/system/cpu/cpu4095", "cpu"),
		uevent("add", devpath, "cpu"), // the administrator's offline CPU, "hot-added" to the online policy
		uevent("online", devpath, "cpu", "DRIVER=processor"),
		uevent("add", memLast, "memory"),
		uevent("offline", devpath, "cpu", "SEQNUM=18446744073709551615"), // a SEQNUM far ahead
		uevent("change", "/devices/system/cpu/cpu0", "\xff\xfe"),         // a subsystem that is not UTF-8
	}
	for _, f := range forgeries {
		testenv.SendToKernel(t, f)
	}
	// The agent reads its socket in order: once it has delivered this, it has seen them all.
	testenv.SetCPUOnline(t, cpu, true)
	first := next(t, events, "the real arrival of "+link)
	if first.Event != "arrival" || first.SymbolicLink != link || first.Cause != "uevent" {
		// "cause resync" would mean the forgeries' SEQNUMs were taken for lost uevents.
		t.Errorf("first notification after %d forgeries = %+v; want the administrator's arrival of %s", len(forgeries), first, link)
	}
	m = a.get(t, "/metrics")
	if after := metric(t, m, rejected); after < before+float64(len(forgeries)) {
		t.Errorf("%s went from %v to %v after %d forgeries; want each counted", rejected, before, after, len(forgeries))
	}
	if after := metric(t, m, onlined); after != onlinedBefore {
		t.Errorf("%s went from %v to %v: a forged add made the agent online a CPU", onlined, onlinedBefore, after)
	}
	a.stop(t)
}

// TestIntegrationFloodOfSubsystems: 20,000 uevents with distinct subsystems, sent through the
// kernel, then a real CPU offline. Its removal reaches /events within 10 s (the agent drops each
// forgery in microseconds; a per-subsystem series once delayed it by minutes), /healthz stays
// 200, and /metrics stays small: no series per subsystem.
func TestIntegrationFloodOfSubsystems(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	a := startAgent(t, "--log.level=info")
	events := a.subscribe(t, "class=processor")
	m := a.get(t, "/metrics")
	linesBefore := strings.Count(m, "\n")
	const rescans = `hotplug_agent_resyncs_total{reason="seqnum_gap"}`
	rescansBefore := metric(t, m, rescans)

	const flood = 20000
	start := time.Now()
	for i := range flood {
		testenv.SendToKernel(t, uevent("change", "/devices/system/cpu/cpu0", fmt.Sprintf("flood%05d", i)))
	}
	sent := time.Since(start)
	offlineAt := time.Now()
	testenv.SetCPUOnline(t, cpu, false)
	e := next(t, events, "the removal of "+link)
	took := time.Since(offlineAt)
	if e.Event != "removal" || e.SymbolicLink != link || e.Cause != "uevent" {
		t.Fatalf("first notification after the flood = %+v; want the removal of %s, from its uevent", e, link)
	}
	t.Logf("flood of %d sent in %s; the removal reached /events %s after the offline", flood, sent.Round(time.Millisecond), took.Round(time.Millisecond))
	if code := a.status(t, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d after the flood; want 200", code)
	}
	m = a.get(t, "/metrics")
	// Each forgery took a kernel SEQNUM; none of them is a lost uevent to rescan sysfs for.
	if after := metric(t, m, rescans); after != rescansBefore {
		t.Errorf("%s went from %v to %v: the flood made the agent rescan sysfs", rescans, rescansBefore, after)
	}
	if strings.Contains(m, "flood0") {
		t.Errorf("/metrics has a series named after a flood subsystem")
	}
	if lines := strings.Count(m, "\n"); lines > linesBefore+50 {
		t.Errorf("/metrics grew from %d to %d lines after the flood", linesBefore, lines)
	}
	testenv.SetCPUOnline(t, cpu, true)
	next(t, events, "the arrival of "+link)
	a.stop(t)
}
