//go:build linux

package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/client"
	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/statefile"
)

// moduleJournal records the notifications a memory-device registration receives.
type moduleJournal struct {
	mu  sync.Mutex
	got []string
}

func (j *moduleJournal) callback(_ context.Context, n notify.Notification, _ any) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.got = append(j.got, fmt.Sprintf("%s %s blocks %s size %dM cause %s", notify.EventName(n.Event), n.Interface.Device,
		n.Interface.Blocks, n.Interface.Size>>20, n.Cause))
	return nil
}

func (j *moduleJournal) wait(t *testing.T, want ...string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		j.mu.Lock()
		got := strings.Join(j.got, "\n")
		j.mu.Unlock()
		if got == strings.Join(want, "\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("memory-device notifications:\n  %s\nwant:\n  %s", strings.ReplaceAll(got, "\n", "\n  "), strings.Join(want, "\n  "))
		}
	}
}

// TestMemoryDevices: through the agent, a registration with FlagMemoryDevices gets the DIMM
// present at start (include existing), its removal when one block goes offline and its arrival
// when it is back; /interfaces names each block's device and lists the device; a registration
// for processors cannot ask for memory devices; and a DIMM removed while the agent was down is
// announced gone at restart (cause startup), from the state file.
func TestMemoryDevices(t *testing.T) {
	root := fixture(t)
	testenv.LinkMemoryDevice(t, root, "PNP0C80:00", 32, 33)
	statePath := filepath.Join(t.TempDir(), "state.json")
	a, src, stop, done := runAgent(t, Options{SysfsPath: root, StatePath: statePath})

	if _, err := a.Register(notify.EventCategoryDeviceInterfaceChange, notify.FlagMemoryDevices, notify.GUIDDeviceProcessor, "cpus",
		func(context.Context, notify.Notification, any) error { return nil }, nil); err == nil || !strings.Contains(err.Error(), "FlagMemoryDevices is for the memory class") {
		t.Errorf("a processor registration with FlagMemoryDevices: %v; want an error saying it is for memory", err)
	}
	j := &moduleJournal{}
	if _, err := a.Register(notify.EventCategoryDeviceInterfaceChange, notify.FlagMemoryDevices|notify.FlagIncludeExistingInterfaces,
		notify.GUIDDeviceMemory, "modules", j.callback, nil); err != nil {
		t.Fatal(err)
	}
	j.wait(t, "arrival PNP0C80:00 blocks 32-33 size 256M cause existing")
	// A subscriber in another process, through /events?memory_devices=true.
	base := "http://" + a.Addrs()[0].String()
	c, err := client.New(base, client.Options{MemoryDevices: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	remote := &moduleJournal{}
	if _, err := c.Register(client.Filter{Class: notify.GUIDDeviceMemory}, notify.FlagIncludeExistingInterfaces,
		func(ctx context.Context, n notify.Notification) error { return remote.callback(ctx, n, nil) }); err != nil {
		t.Fatal(err)
	}
	remote.wait(t, "arrival PNP0C80:00 blocks 32-33 size 256M cause existing")

	writeAttr(t, root, "devices/system/memory/memory33/state", "offline")
	src.send(t, "offline", "/devices/system/memory/memory33", "memory", 10)
	j.wait(t, "arrival PNP0C80:00 blocks 32-33 size 256M cause existing",
		"removal PNP0C80:00 blocks 32-33 size 256M cause uevent")
	writeAttr(t, root, "devices/system/memory/memory33/state", "online")
	src.send(t, "online", "/devices/system/memory/memory33", "memory", 11)
	j.wait(t, "arrival PNP0C80:00 blocks 32-33 size 256M cause existing",
		"removal PNP0C80:00 blocks 32-33 size 256M cause uevent",
		"arrival PNP0C80:00 blocks 32-33 size 256M cause uevent")
	remote.wait(t, "arrival PNP0C80:00 blocks 32-33 size 256M cause existing",
		"removal PNP0C80:00 blocks 32-33 size 256M cause uevent",
		"arrival PNP0C80:00 blocks 32-33 size 256M cause uevent")
	for _, q := range []string{"memory_devices=maybe", "memory_devices=true&class=processor"} {
		if resp, err := http.Get(base + "/events?" + q); err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("/events?%s: %v %v; want 400", q, resp.Status, err)
		}
	}
	c.Close()

	var blocks, devices []map[string]any
	getJSON(t, base+"/interfaces?class=memory", &blocks)
	getJSON(t, base+"/interfaces?memory_devices=true", &devices)
	for _, b := range blocks {
		want := ""
		if n := b["memory_block"].(float64); n == 32 || n == 33 {
			want = "PNP0C80:00"
		}
		if got, _ := b["memory_device"].(string); got != want {
			t.Errorf("/interfaces: memory%v has memory_device %q; want %q", b["memory_block"], got, want)
		}
	}
	if len(devices) != 1 || devices[0]["memory_device"] != "PNP0C80:00" || devices[0]["memory_blocks"] != "32-33" ||
		devices[0]["symbolic_link"] != "/sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04/PNP0C80:00" || devices[0]["memory_block"] != nil {
		t.Errorf("/interfaces?memory_devices=true = %v; want PNP0C80:00 with blocks 32-33 at its /sys path, no memory_block", devices)
	}
	if a, r := counterValue(a.metrics.DeviceNotifications.WithLabelValues("arrival")), counterValue(a.metrics.DeviceNotifications.WithLabelValues("removal")); a != 1 || r != 1 {
		t.Errorf("hotplug_agent_memory_device_notifications_total: arrival %v, removal %v; want 1 and 1", a, r)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	exposition, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(exposition), "\nhotplug_agent_memory_devices 1\n") {
		t.Errorf("/metrics has no hotplug_agent_memory_devices 1")
	}
	if resp, err := http.Get(base + "/interfaces?memory_devices=maybe"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("/interfaces?memory_devices=maybe: %v %v; want 400", resp.Status, err)
	}

	// The DIMM goes while the agent is stopped. The restarted agent's configured registration
	// (registered before anything is published) gets the device's removal.
	stop()
	err = <-done
	done <- err
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []int{32, 33} {
		if err := os.RemoveAll(filepath.Join(root, fmt.Sprintf("devices/system/memory/memory%d", b))); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Parse([]byte("log_notifications: false\ncallbacks:\n  - {name: modules, class: memory, memory_devices: true, log: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.Buffer{}
	a, _, _, _ = runAgent(t, Options{SysfsPath: root, StatePath: statePath, Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	want := regexp.MustCompile(`msg="device interface change" callback=modules event=removal .* cause=startup id=[1-9][0-9]* memory_device=PNP0C80:00 memory_blocks=32-33 `)
	for deadline := time.Now().Add(10 * time.Second); !want.MatchString(logs.String()); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no removal of PNP0C80:00 with cause startup in the restarted agent's log:\n%s", logs)
		}
	}
	if got := a.MemoryDevices(); len(got) != 0 {
		t.Errorf("MemoryDevices() after the restart = %+v; want none", got)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestEventIDsAcrossRestarts: IDs continue exactly after an orderly shutdown, and jump ahead
// after a start without a clean state (a first start, a kill), so that no ID names two
// notifications.
func TestEventIDsAcrossRestarts(t *testing.T) {
	root := fixture(t)
	statePath := filepath.Join(t.TempDir(), "state.json")
	seq := uint64(100)
	// toggle changes cpu1 and returns the ID of the notification it causes.
	toggle := func(a *Agent, src *fakeSource) uint64 {
		t.Helper()
		before := a.Registry().LastID()
		state, action := "0", "offline"
		if s, _ := os.ReadFile(filepath.Join(root, "devices/system/cpu/cpu1/online")); strings.TrimSpace(string(s)) == "0" {
			state, action = "1", "online"
		}
		writeAttr(t, root, "devices/system/cpu/cpu1/online", state)
		seq++
		src.send(t, action, "/devices/system/cpu/cpu1", "cpu", seq)
		for deadline := time.Now().Add(10 * time.Second); a.Registry().LastID() == before; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no notification for %s of cpu1", action)
			}
		}
		return a.Registry().LastID()
	}
	start := func() (*Agent, *fakeSource, func()) {
		a, src, stop, done := runAgent(t, Options{SysfsPath: root, StatePath: statePath})
		return a, src, func() {
			stop()
			err := <-done
			done <- err
			if err != nil {
				t.Fatal(err)
			}
		}
	}

	began := uint64(time.Now().UnixMicro())
	a, src, stop := start()
	first := toggle(a, src)
	if first <= began {
		t.Errorf("first ID of a first start %d; want one beyond the microseconds since 1970 (%d), so no earlier run's ID comes again", first, began)
	}
	last := toggle(a, src)
	stop()

	a, src, stop = start()
	if got := toggle(a, src); got != last+1 {
		t.Errorf("after an orderly shutdown at ID %d the next ID is %d; want %d", last, got, last+1)
	}
	stop()

	// As if killed: the last state saved while running is not marked clean.
	s, err := statefile.Load(statePath)
	if err != nil {
		t.Fatal(err)
	}
	s.Clean = false
	if err := statefile.Save(statePath, s); err != nil {
		t.Fatal(err)
	}
	a, src, _ = start()
	if got := toggle(a, src); got < s.LastEventID+idJump+1 {
		t.Errorf("after an unclean stop at saved ID %d the next ID is %d; want at least %d", s.LastEventID, got, s.LastEventID+idJump+1)
	}
}

// TestMemoryBlockBeyondCPUNumbersAcrossRestarts: memory block numbers are not bounded as CPU
// numbers are (with 128 MiB blocks, block 1048576 is at 128 TiB, where hot-add windows may lie).
// The state file an agent saves with such a block present, online and in a memory device is
// restored at its next start, which announces the device's removal made while it was down.
func TestMemoryBlockBeyondCPUNumbersAcrossRestarts(t *testing.T) {
	root := fixture(t)
	mem := filepath.Join(root, "devices/system/memory")
	high := filepath.Join(mem, "memory1048576")
	if out, err := exec.Command("cp", "-a", filepath.Join(mem, "memory33"), high).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	writeAttr(t, root, "devices/system/memory/memory1048576/phys_index", "00100000")
	testenv.LinkMemoryDevice(t, root, "PNP0C80:07", 1048576)
	statePath := filepath.Join(t.TempDir(), "state.json")
	a, _, stop, done := runAgent(t, Options{SysfsPath: root, StatePath: statePath})
	j := &moduleJournal{}
	if _, err := a.Register(notify.EventCategoryDeviceInterfaceChange, notify.FlagMemoryDevices|notify.FlagIncludeExistingInterfaces,
		notify.GUIDDeviceMemory, "modules", j.callback, nil); err != nil {
		t.Fatal(err)
	}
	j.wait(t, "arrival PNP0C80:07 blocks 1048576 size 128M cause existing")
	stop()
	err := <-done
	done <- err
	if err != nil {
		t.Fatal(err)
	}
	s, err := statefile.Load(statePath)
	if err != nil {
		t.Fatalf("the state file saved at the orderly shutdown: %v", err)
	}
	if !slices.Contains(s.Present.MemoryBlocks, 1048576) || len(s.MemoryDevices) != 1 || s.MemoryDevices[0].Blocks != "1048576" {
		t.Errorf("the state file holds present blocks %v and memory devices %+v; want block 1048576 in both", s.Present.MemoryBlocks, s.MemoryDevices)
	}

	if err := os.RemoveAll(high); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte("log_notifications: false\ncallbacks:\n  - {name: modules, class: memory, memory_devices: true, log: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.Buffer{}
	runAgent(t, Options{SysfsPath: root, StatePath: statePath, Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	want := regexp.MustCompile(`msg="device interface change" callback=modules event=removal .* cause=startup id=[1-9][0-9]* memory_device=PNP0C80:07 memory_blocks=1048576 `)
	for deadline := time.Now().Add(10 * time.Second); !want.MatchString(logs.String()); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no removal of PNP0C80:07 with cause startup in the restarted agent's log:\n%s", logs)
		}
	}
	if strings.Contains(logs.String(), "state file unusable") {
		t.Errorf("the restarted agent could not use its state file; log:\n%s", logs)
	}
}
