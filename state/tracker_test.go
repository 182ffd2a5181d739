package state

import (
	"fmt"
	"io/fs"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
	"github.com/hotplug-agent/hotplug-agent/udev"
)

// fakeFS is a scripted machine: CPUs and memory blocks with an online bit.
type fakeFS struct {
	cpus   map[int]bool // number -> online
	blocks map[int]bool // index -> online
}

func newFake(cpus, blocks map[int]bool) *fakeFS { return &fakeFS{cpus: cpus, blocks: blocks} }

func (f *fakeFS) CPUs() ([]sysfs.CPU, error) {
	var out []sysfs.CPU
	for n := range 64 {
		if on, ok := f.cpus[n]; ok {
			out = append(out, sysfs.CPU{Number: n, Online: on, Hotpluggable: n != 0, Node: 0})
		}
	}
	return out, nil
}

func (f *fakeFS) CPU(n int) (sysfs.CPU, error) {
	on, ok := f.cpus[n]
	if !ok {
		return sysfs.CPU{}, fmt.Errorf("cpu%d: %w", n, fs.ErrNotExist)
	}
	return sysfs.CPU{Number: n, Online: on, Hotpluggable: n != 0, Node: 0}, nil
}

func (f *fakeFS) block(n int, on bool) sysfs.MemoryBlock {
	state := "offline"
	if on {
		state = "online"
	}
	return sysfs.MemoryBlock{Index: n, State: state, PhysIndex: uint64(n), PhysStart: uint64(n) << 27, Size: 1 << 27, Node: 0}
}

func (f *fakeFS) MemoryBlocks() ([]sysfs.MemoryBlock, error) {
	var out []sysfs.MemoryBlock
	for n := range 256 {
		if on, ok := f.blocks[n]; ok {
			out = append(out, f.block(n, on))
		}
	}
	return out, nil
}

func (f *fakeFS) MemoryBlock(n int) (sysfs.MemoryBlock, error) {
	on, ok := f.blocks[n]
	if !ok {
		return sysfs.MemoryBlock{}, fmt.Errorf("memory%d: %w", n, fs.ErrNotExist)
	}
	return f.block(n, on), nil
}

// uevent builds a kernel uevent from raw bytes, as the socket would deliver it.
func uevent(t testing.TB, action, devpath, subsystem string, seq uint64, synthetic bool) *udev.Event {
	t.Helper()
	raw := fmt.Sprintf("%s@%s\x00ACTION=%s\x00DEVPATH=%s\x00SUBSYSTEM=%s\x00", action, devpath, action, devpath, subsystem)
	if synthetic {
		raw += "SYNTH_UUID=0\x00"
	}
	raw += fmt.Sprintf("SEQNUM=%d\x00", seq)
	ev, err := udev.Parse([]byte(raw))
	if err != nil {
		t.Fatalf("udev.Parse(%q): %v", raw, err)
	}
	ev.ReadAt = time.Unix(1700000000, 0)
	return &ev
}

func cpuEv(t testing.TB, action string, n int, seq uint64) *udev.Event {
	return uevent(t, action, fmt.Sprintf("/devices/system/cpu/cpu%d", n), "cpu", seq, false)
}

func memEv(t testing.TB, action string, n int, seq uint64) *udev.Event {
	return uevent(t, action, fmt.Sprintf("/devices/system/memory/memory%d", n), "memory", seq, false)
}

// summary renders notifications as "arrival /sys/devices/system/cpu/cpu1" lines.
func summary(ns []notify.Notification) []string {
	var out []string
	for _, n := range ns {
		out = append(out, notify.EventName(n.Event)+" "+n.SymbolicLinkName)
	}
	return out
}

func TestClassify(t *testing.T) {
	tests := []struct {
		subsystem, devpath string
		kind               Kind
		n                  int
	}{
		{"cpu", "/devices/system/cpu/cpu1", KindCPU, 1},
		{"cpu", "/devices/system/cpu/cpu127", KindCPU, 127},
		{"memory", "/devices/system/memory/memory32", KindMemory, 32},
		{"memory", "/devices/system/memory/memory0", KindMemory, 0},
		{"cpuid", "/devices/virtual/cpuid/cpu1", KindNone, -1},
		{"cpu", "/devices/system/cpu/cpufreq", KindNone, -1},
		{"cpu", "/devices/system/cpu/cpu01", KindNone, -1},
		{"cpu", "/devices/system/cpu/cpu1/", KindNone, -1},
		{"cpu", "/devices/system/cpu/cpu1/../cpu2", KindNone, -1},
		{"cpu", "/devices/system/cpu//cpu1", KindNone, -1},
		{"cpu", "/devices/system/cpu/cpu", KindNone, -1},
		{"cpu", "/devices/system/cpu/cpu-1", KindNone, -1},
		{"cpu", "/devices/system/cpu/cpu99999999999", KindNone, -1},
		{"memory", "/devices/system/cpu/cpu1", KindNone, -1},
		{"cpu", "/devices/system/memory/memory1", KindNone, -1},
		{"machinecheck", "/devices/system/machinecheck/machinecheck1", KindNone, -1},
	}
	for _, tt := range tests {
		t.Run(tt.subsystem+tt.devpath, func(t *testing.T) {
			kind, n := Classify(tt.subsystem, tt.devpath)
			if kind != tt.kind || n != tt.n {
				t.Errorf("Classify(%q, %q) = %v, %d; want %v, %d", tt.subsystem, tt.devpath, kind, n, tt.kind, tt.n)
			}
		})
	}
}

func TestSuspicious(t *testing.T) {
	for _, tt := range []struct {
		subsystem, devpath string
		want               bool
	}{
		{"cpu", "/devices/system/cpu/cpu1", false},
		{"memory", "/devices/system/memory/memory9", false},
		{"cpu", "/devices/system/cpu/../cpu/cpu1", true},
		{"cpu", "/devices/system//cpu/cpu1", true},
		{"cpu", "/devices/system/cpu/./cpu1", true},
		{"cpu", "/devices/system/cpu/cpu1/", true},
		{"cpu", "/bus/cpu/devices/cpu1", true},
		{"memory", "/../../etc/memory1", true},
		{"memory", "devices/system/memory/memory1", true},
		{"cpuid", "/devices/virtual/../cpuid/cpu1", false}, // not ours to judge
	} {
		if got := Suspicious(tt.subsystem, tt.devpath); got != tt.want {
			t.Errorf("Suspicious(%q, %q) = %v; want %v", tt.subsystem, tt.devpath, got, tt.want)
		}
	}
}

func TestScanAnnouncesOnlineOnly(t *testing.T) {
	f := newFake(map[int]bool{0: true, 1: true, 2: false}, map[int]bool{0: true, 5: false, 32: true})
	got, err := New(f).Scan()
	if err != nil {
		t.Fatal(err)
	}
	var links []string
	for _, i := range got {
		links = append(links, i.SymbolicLink)
	}
	want := []string{
		"/sys/devices/system/cpu/cpu0", "/sys/devices/system/cpu/cpu1",
		"/sys/devices/system/memory/memory0", "/sys/devices/system/memory/memory32",
	}
	if diff := cmp.Diff(want, links); diff != "" {
		t.Errorf("Scan() links (-want +got):\n%s", diff)
	}
	if got[3].PhysStart != 32<<27 || got[3].Size != 1<<27 || got[3].ClassGUID != notify.GUIDDeviceMemory {
		t.Errorf("memory32 = %+v; want phys start 0x%x, size 128 MiB, memory class", got[3], 32<<27)
	}
}

func TestHandle(t *testing.T) {
	type step struct {
		ev    func(t testing.TB) *udev.Event
		apply func(f *fakeFS) // the machine's state when the event is handled
		want  []string
	}
	cpu1 := "/sys/devices/system/cpu/cpu1"
	mem9 := "/sys/devices/system/memory/memory9"
	tests := []struct {
		name  string
		steps []step
	}{
		{"offline then online", []step{
			{func(t testing.TB) *udev.Event { return cpuEv(t, "offline", 1, 10) }, func(f *fakeFS) { f.cpus[1] = false }, []string{"removal " + cpu1}},
			{func(t testing.TB) *udev.Event { return cpuEv(t, "online", 1, 11) }, func(f *fakeFS) { f.cpus[1] = true }, []string{"arrival " + cpu1}},
		}},
		{"repeated online is one arrival", []step{
			{func(t testing.TB) *udev.Event { return cpuEv(t, "online", 1, 10) }, nil, nil},
			{func(t testing.TB) *udev.Event { return cpuEv(t, "online", 1, 11) }, nil, nil},
		}},
		{"synthetic online of an online CPU changes nothing", []step{
			{func(t testing.TB) *udev.Event {
				return uevent(t, "online", "/devices/system/cpu/cpu1", "cpu", 10, true)
			}, nil, nil},
		}},
		{"synthetic offline of an online CPU changes nothing", []step{
			{func(t testing.TB) *udev.Event {
				return uevent(t, "offline", "/devices/system/cpu/cpu1", "cpu", 10, true)
			}, nil, nil},
		}},
		{"synthetic events announce nothing, even when sysfs has moved on", []step{
			// The agent reads events late; sysfs may already show the next real transition,
			// whose own uevent will announce it with the right SEQNUM.
			{func(t testing.TB) *udev.Event {
				return uevent(t, "add", "/devices/system/cpu/cpu1", "cpu", 10, true)
			}, func(f *fakeFS) { f.cpus[1] = false }, nil},
			{func(t testing.TB) *udev.Event { return cpuEv(t, "offline", 1, 11) }, nil, []string{"removal " + cpu1}},
			{func(t testing.TB) *udev.Event {
				return uevent(t, "online", "/devices/system/cpu/cpu1", "cpu", 12, true)
			}, nil, nil},
		}},
		{"offline that sysfs already undid is still a removal, and the online follows", []step{
			{func(t testing.TB) *udev.Event { return cpuEv(t, "offline", 1, 10) }, nil, []string{"removal " + cpu1}},
			{func(t testing.TB) *udev.Event { return cpuEv(t, "online", 1, 11) }, nil, []string{"arrival " + cpu1}},
		}},
		{"memory hot-add: add is not an arrival, online is", []step{
			{func(t testing.TB) *udev.Event { return memEv(t, "add", 9, 10) }, func(f *fakeFS) { f.blocks[9] = false }, nil},
			{func(t testing.TB) *udev.Event { return memEv(t, "online", 9, 11) }, func(f *fakeFS) { f.blocks[9] = true }, []string{"arrival " + mem9}},
			{func(t testing.TB) *udev.Event { return memEv(t, "offline", 9, 12) }, func(f *fakeFS) { f.blocks[9] = false }, []string{"removal " + mem9}},
			{func(t testing.TB) *udev.Event { return memEv(t, "remove", 9, 13) }, func(f *fakeFS) { delete(f.blocks, 9) }, nil},
		}},
		{"memory onlined by the kernel (auto-online) arrives once, with its online", []step{
			{func(t testing.TB) *udev.Event { return memEv(t, "add", 9, 10) }, func(f *fakeFS) { f.blocks[9] = true }, nil},
			{func(t testing.TB) *udev.Event { return memEv(t, "online", 9, 11) }, nil, []string{"arrival " + mem9}},
			{func(t testing.TB) *udev.Event { return memEv(t, "online", 9, 12) }, nil, nil},
		}},
		{"remove of an online block is a removal", []step{
			{func(t testing.TB) *udev.Event { return memEv(t, "online", 9, 10) }, func(f *fakeFS) { f.blocks[9] = true }, []string{"arrival " + mem9}},
			{func(t testing.TB) *udev.Event { return memEv(t, "remove", 9, 11) }, func(f *fakeFS) { delete(f.blocks, 9) }, []string{"removal " + mem9}},
		}},
		{"hot-added CPU: add and bind are not arrivals", []step{
			{func(t testing.TB) *udev.Event { return cpuEv(t, "add", 3, 10) }, func(f *fakeFS) { f.cpus[3] = false }, nil},
			{func(t testing.TB) *udev.Event { return cpuEv(t, "bind", 3, 11) }, nil, nil},
			{func(t testing.TB) *udev.Event { return cpuEv(t, "online", 3, 12) }, func(f *fakeFS) { f.cpus[3] = true }, []string{"arrival /sys/devices/system/cpu/cpu3"}},
		}},
		{"other subsystems are ignored", []step{
			{func(t testing.TB) *udev.Event {
				return uevent(t, "remove", "/devices/virtual/cpuid/cpu1", "cpuid", 10, false)
			}, nil, nil},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(map[int]bool{0: true, 1: true}, map[int]bool{0: true})
			tr := New(f)
			if _, err := tr.Scan(); err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.steps {
				if s.apply != nil {
					s.apply(f)
				}
				got, gap := tr.Handle(s.ev(t))
				if gap {
					t.Errorf("step %d: gap reported for consecutive SEQNUMs", i)
				}
				if diff := cmp.Diff(s.want, summary(got)); diff != "" {
					t.Errorf("step %d (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func TestHandleNotificationFields(t *testing.T) {
	f := newFake(map[int]bool{0: true, 1: false}, map[int]bool{})
	tr := New(f)
	tr.Scan()
	f.cpus[1] = true
	ev := cpuEv(t, "online", 1, 42)
	got, _ := tr.Handle(ev)
	if len(got) != 1 {
		t.Fatalf("got %d notifications, want 1", len(got))
	}
	n := got[0]
	want := notify.Notification{
		Version: 1, Event: notify.GUIDDeviceInterfaceArrival, InterfaceClassGUID: notify.GUIDDeviceProcessor,
		SymbolicLinkName: "/sys/devices/system/cpu/cpu1",
		Interface: notify.Interface{ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: "/sys/devices/system/cpu/cpu1",
			Number: 1, Node: 0, State: "online"},
		Seqnum: 42, ReadAt: ev.ReadAt, Cause: notify.CauseUevent,
	}
	if diff := cmp.Diff(want, n); diff != "" {
		t.Errorf("notification (-want +got):\n%s", diff)
	}
}

func TestGapAndResync(t *testing.T) {
	f := newFake(map[int]bool{0: true, 1: true, 2: true}, map[int]bool{0: true, 1: false})
	tr := New(f)
	tr.Scan()
	if _, gap := tr.Handle(cpuEv(t, "change", 0, 100)); gap {
		t.Error("first event reported a gap")
	}
	if _, gap := tr.Handle(cpuEv(t, "change", 0, 101)); gap {
		t.Error("consecutive SEQNUM reported a gap")
	}
	// Events 102-104 are lost: cpu2 went offline, memory1 came online.
	f.cpus[2] = false
	f.blocks[1] = true
	if _, gap := tr.Handle(cpuEv(t, "change", 0, 105)); !gap {
		t.Error("SEQNUM 101 -> 105 not reported as a gap")
	}
	got, err := tr.Resync(105, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"removal /sys/devices/system/cpu/cpu2", "arrival /sys/devices/system/memory/memory1"}
	if diff := cmp.Diff(want, summary(got)); diff != "" {
		t.Errorf("Resync (-want +got):\n%s", diff)
	}
	for _, n := range got {
		if n.Cause != notify.CauseResync {
			t.Errorf("%s: cause %q, want resync", n.SymbolicLinkName, n.Cause)
		}
	}
	if again, _ := tr.Resync(106, time.Now()); len(again) != 0 {
		t.Errorf("second Resync = %v; want nothing", summary(again))
	}
}

// TestRandomSequencesAlternate drives the tracker with random real and synthetic events, losing
// some (a resync follows, as after an overflow), and checks the property users rely on: per
// interface, arrivals and removals alternate, and after a final resync the record is the truth.
func TestRandomSequencesAlternate(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 1))
		f := newFake(map[int]bool{0: true, 1: true, 2: true, 3: false}, map[int]bool{0: true, 1: true, 2: false})
		tr := New(f)
		initial, _ := tr.Scan()
		active := map[string]bool{}
		for _, i := range initial {
			active[i.SymbolicLink] = true
		}
		check := func(ns []notify.Notification) {
			for _, n := range ns {
				if n.IsArrival() == active[n.SymbolicLinkName] {
					t.Fatalf("seed %d: %s %s while active=%v", seed, notify.EventName(n.Event), n.SymbolicLinkName, active[n.SymbolicLinkName])
				}
				active[n.SymbolicLinkName] = n.IsArrival()
			}
		}
		var seq uint64 = 1
		for range 300 {
			seq++
			cpu := r.IntN(3) + 1
			var ev *udev.Event
			switch r.IntN(6) {
			case 0, 1: // a real transition, with its event
				f.cpus[cpu] = !f.cpus[cpu]
				action := "offline"
				if f.cpus[cpu] {
					action = "online"
				}
				ev = cpuEv(t, action, cpu, seq)
			case 2: // a real transition whose event is lost
				f.cpus[cpu] = !f.cpus[cpu]
				continue
			case 3: // a synthetic event
				actions := []string{"online", "offline", "change", "add"}
				ev = uevent(t, actions[r.IntN(4)], fmt.Sprintf("/devices/system/cpu/cpu%d", cpu), "cpu", seq, true)
			case 4: // memory block transition
				b := r.IntN(3)
				f.blocks[b] = !f.blocks[b]
				action := "offline"
				if f.blocks[b] {
					action = "online"
				}
				ev = memEv(t, action, b, seq)
			case 5: // overflow: resync
				ns, err := tr.Resync(0, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				check(ns)
				continue
			}
			ns, _ := tr.Handle(ev)
			check(ns)
		}
		ns, _ := tr.Resync(0, time.Now())
		check(ns)
		truth, _ := New(f).Scan()
		if diff := cmp.Diff(truth, tr.Known()); diff != "" {
			t.Fatalf("seed %d: record after resync differs from sysfs (-sysfs +record):\n%s", seed, diff)
		}
	}
}
