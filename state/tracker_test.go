package state

import (
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path"
	"strings"
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
	seqnum uint64       // kernel/uevent_seqnum; 0: the file is absent
}

func (f *fakeFS) UeventSeqnum() (uint64, error) {
	if f.seqnum == 0 {
		return 0, fmt.Errorf("uevent_seqnum: %w", fs.ErrNotExist)
	}
	return f.seqnum, nil
}

func (f *fakeFS) MemoryBlockBasics(n int) (sysfs.MemoryBlock, error) { return f.MemoryBlock(n) }

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
		{"cpu", "/devices/system/cpu/..", true},
		{"cpu", "/devices/system/cpu/.", true},
		{"cpu", "/devices/", true},
		{"cpu", "/devices/.../cpu1", false},                // an odd name, but a clean path
		{"cpuid", "/devices/virtual/../cpuid/cpu1", false}, // not ours to judge
	} {
		if got := Suspicious(tt.subsystem, tt.devpath); got != tt.want {
			t.Errorf("Suspicious(%q, %q) = %v; want %v", tt.subsystem, tt.devpath, got, tt.want)
		}
	}
}

// Suspicious's scan of the path says what path.Clean would: a cpu or memory DEVPATH is
// suspicious exactly when it is not clean or not under /devices/.
func FuzzSuspicious(f *testing.F) {
	for _, p := range []string{"/devices/system/cpu/cpu1", "/devices/system//cpu/cpu1", "/devices/system/cpu/./cpu1",
		"/devices/system/cpu/cpu1/", "/devices/system/cpu/..", "/devices/", "/devices", "/", "", "/devices/a/../b"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, devpath string) {
		want := devpath != path.Clean(devpath) || !strings.HasPrefix(devpath, "/devices/")
		if got := Suspicious("memory", devpath); got != want {
			t.Errorf("Suspicious(memory, %q) = %v; path.Clean gives %q", devpath, got, path.Clean(devpath))
		}
	})
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
		{"offline that sysfs already undid is announced when the kernel's online confirms it", []step{
			{func(t testing.TB) *udev.Event { return cpuEv(t, "offline", 1, 10) }, nil, nil},
			{func(t testing.TB) *udev.Event { return cpuEv(t, "online", 1, 11) }, nil, []string{"removal " + cpu1, "arrival " + cpu1}},
		}},
		{"online that sysfs already undid is announced when the kernel's offline confirms it", []step{
			{func(t testing.TB) *udev.Event { return cpuEv(t, "offline", 1, 10) }, func(f *fakeFS) { f.cpus[1] = false }, []string{"removal " + cpu1}},
			{func(t testing.TB) *udev.Event { return cpuEv(t, "online", 1, 11) }, nil, nil},
			{func(t testing.TB) *udev.Event { return cpuEv(t, "offline", 1, 12) }, nil, []string{"arrival " + cpu1, "removal " + cpu1}},
		}},
		{"an offline sysfs does not show, followed by another offline, is one removal", []step{
			{func(t testing.TB) *udev.Event { return cpuEv(t, "offline", 1, 10) }, nil, nil},
			{func(t testing.TB) *udev.Event { return cpuEv(t, "offline", 1, 11) }, func(f *fakeFS) { f.cpus[1] = false }, []string{"removal " + cpu1}},
		}},
		{"offline of a CPU sysfs shows online is not a removal", []step{
			{func(t testing.TB) *udev.Event { return cpuEv(t, "offline", 0, 10) }, nil, nil},
			{func(t testing.TB) *udev.Event { return cpuEv(t, "remove", 0, 11) }, nil, nil},
		}},
		{"online of a CPU that does not exist is nothing", []step{
			{func(t testing.TB) *udev.Event { return cpuEv(t, "online", 7, 10) }, nil, nil},
			{func(t testing.TB) *udev.Event { return cpuEv(t, "offline", 7, 11) }, nil, nil},
		}},
		{"remove of a memory block sysfs still shows online is not a removal", []step{
			{func(t testing.TB) *udev.Event { return memEv(t, "remove", 0, 10) }, nil, nil},
			{func(t testing.TB) *udev.Event { return memEv(t, "offline", 0, 11) }, nil, nil},
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
				got := tr.Handle(s.ev(t))
				if got.Gap {
					t.Errorf("step %d: gap reported for consecutive SEQNUMs", i)
				}
				if diff := cmp.Diff(s.want, summary(got.Notes)); diff != "" {
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
	got := tr.Handle(ev).Notes
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
	if tr.Handle(cpuEv(t, "change", 0, 100)).Gap {
		t.Error("first event reported a gap")
	}
	if tr.Handle(cpuEv(t, "change", 0, 101)).Gap {
		t.Error("consecutive SEQNUM reported a gap")
	}
	// Events 102-104 are lost: cpu2 went offline, memory1 came online.
	f.cpus[2] = false
	f.blocks[1] = true
	if !tr.Handle(cpuEv(t, "change", 0, 105)).Gap {
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
			check(tr.Handle(ev).Notes)
		}
		ns, _ := tr.Resync(0, time.Now())
		check(ns)
		truth, _ := New(f).Scan()
		if diff := cmp.Diff(truth, tr.Known()); diff != "" {
			t.Fatalf("seed %d: record after resync differs from sysfs (-sysfs +record):\n%s", seed, diff)
		}
	}
}

// TestHotAddAndRemove: only the kernel's add of a device that was not present, and that sysfs
// shows, is a hot-add (what the online policy acts on); the kernel's remove of a present device
// is a hot-remove, even while sysfs still shows it.
func TestHotAddAndRemove(t *testing.T) {
	f := newFake(map[int]bool{0: true, 1: true, 2: false}, map[int]bool{0: true})
	tr := New(f)
	var rejected []string
	tr.OnReject(func(r string) { rejected = append(rejected, r) })
	if _, err := tr.Scan(); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name              string
		apply             func()
		ev                *udev.Event
		hotAdd, hotRemove bool
	}{
		{"add of a CPU present since the scan (administrator-offlined)", nil, cpuEv(t, "add", 2, 10), false, false},
		{"add of an online CPU", nil, cpuEv(t, "add", 1, 11), false, false},
		{"add of a CPU sysfs does not show", nil, cpuEv(t, "add", 5, 12), false, false},
		{"add of a new CPU", func() { f.cpus[3] = false }, cpuEv(t, "add", 3, 13), true, false},
		{"its add again", nil, cpuEv(t, "add", 3, 14), false, false},
		// The kernel sends remove before it deletes the directory; a burst read late may find the
		// device added again. Either way the remove is the kernel's: the next add is a hot-add.
		{"remove of a CPU sysfs still shows", nil, cpuEv(t, "remove", 2, 15), false, true},
		{"its add, read with it", nil, cpuEv(t, "add", 2, 16), true, false},
		{"remove of a CPU gone from sysfs", func() { delete(f.cpus, 3) }, cpuEv(t, "remove", 3, 17), false, true},
		{"its remove again", nil, cpuEv(t, "remove", 3, 18), false, false},
		{"add of it again", func() { f.cpus[3] = false }, cpuEv(t, "add", 3, 19), true, false},
		{"add of a new block", func() { f.blocks[9] = false }, memEv(t, "add", 9, 20), true, false},
		{"add of block 0", nil, memEv(t, "add", 0, 21), false, false},
		{"synthetic add of a new block", func() { f.blocks[10] = false }, uevent(t, "add", "/devices/system/memory/memory10", "memory", 22, true), false, false},
	}
	for _, s := range steps {
		if s.apply != nil {
			s.apply()
		}
		got := tr.Handle(s.ev)
		if got.HotAdd != s.hotAdd || got.HotRemove != s.hotRemove || len(got.Notes) != 0 {
			t.Errorf("%s: HotAdd %v HotRemove %v notes %v; want %v %v none", s.name, got.HotAdd, got.HotRemove, summary(got.Notes), s.hotAdd, s.hotRemove)
		}
	}
	if len(rejected) != 0 {
		t.Errorf("rejections %q; an add or remove is not a transition to confirm", rejected)
	}
	// What the state file keeps: the scan's devices, with the adds and removes since.
	want := &PresentSet{CPUs: []int{0, 1, 2, 3}, MemoryBlocks: []int{0, 9}}
	if diff := cmp.Diff(want, tr.Present()); diff != "" {
		t.Errorf("Present() (-want +got):\n%s", diff)
	}
}

// TestSeqnumBeyondKernel: a uevent whose SEQNUM the kernel's counter has not reached is dropped
// and counted, and does not move the tracker's idea of the last SEQNUM.
func TestSeqnumBeyondKernel(t *testing.T) {
	f := newFake(map[int]bool{0: true, 1: true}, map[int]bool{0: true})
	f.seqnum = 200
	tr := New(f)
	var rejected []string
	tr.OnReject(func(r string) { rejected = append(rejected, r) })
	tr.Scan()
	f.cpus[1] = false
	got := tr.Handle(cpuEv(t, "offline", 1, 1<<64-1))
	if len(got.Notes) != 0 || got.Gap || fmt.Sprint(rejected) != "[seqnum]" {
		t.Fatalf("SEQNUM 2^64-1 with the kernel at 200: %v gap %v rejected %q; want nothing and one seqnum rejection", summary(got.Notes), got.Gap, rejected)
	}
	f.seqnum = 201
	got = tr.Handle(cpuEv(t, "offline", 1, 201))
	if diff := cmp.Diff([]string{"removal /sys/devices/system/cpu/cpu1"}, summary(got.Notes)); diff != "" || got.Gap {
		t.Errorf("the kernel's next uevent (gap %v) (-want +got):\n%s", got.Gap, diff)
	}
	f.seqnum = 205
	if got = tr.Handle(cpuEv(t, "change", 0, 205)); !got.Gap {
		t.Error("SEQNUM 201 -> 205 with the kernel at 205: no gap reported")
	}
	if len(rejected) != 1 {
		t.Errorf("rejections %q; want only the first", rejected)
	}
}

// TestLateReadsAndForgeries drives the tracker with a machine whose CPUs and a memory block go
// offline and online (each transition a real uevent), read late, so that sysfs has often moved
// on when a uevent is handled, mixed with lost uevents and forged ones: any action, on any CPU
// or block, real or not, with the SEQNUM next in line as the kernel gives it to a uevent a
// process sent it. The forger never sends the reverse of its own last forgery of a device
// before a real uevent of that device: such a pair passes for a real quick offline and online,
// which sysfs cannot tell apart (udev's credential check stops it). Per interface, arrivals and
// removals alternate; cpu0 and memory0, which never change, and devices that do not exist are
// never announced; every real uevent handled leaves the record equal to sysfs.
func TestLateReadsAndForgeries(t *testing.T) {
	stable := map[string]bool{"/sys/devices/system/cpu/cpu0": true, "/sys/devices/system/memory/memory0": true}
	exists := map[string]bool{"/sys/devices/system/memory/memory1": true}
	for n := range 4 {
		exists[CPULink(n)] = true
	}
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 7))
		f := newFake(map[int]bool{0: true, 1: true, 2: true, 3: false}, map[int]bool{0: true, 1: true})
		tr := New(f)
		initial, _ := tr.Scan()
		active := map[string]bool{}
		for _, i := range initial {
			active[i.SymbolicLink] = true
		}
		check := func(ns []notify.Notification) {
			for _, n := range ns {
				if stable[n.SymbolicLinkName] || !exists[n.SymbolicLinkName] {
					t.Fatalf("seed %d: %s %s announced: a forgery", seed, notify.EventName(n.Event), n.SymbolicLinkName)
				}
				if n.IsArrival() == active[n.SymbolicLinkName] {
					t.Fatalf("seed %d: %s %s while active=%v", seed, notify.EventName(n.Event), n.SymbolicLinkName, active[n.SymbolicLinkName])
				}
				active[n.SymbolicLinkName] = n.IsArrival()
			}
		}
		var queue []*udev.Event
		lastForged := map[string]string{} // devpath -> direction of the forger's last uevent since a real one
		var seq uint64 = 1
		for range 400 {
			seq++
			switch r.IntN(8) {
			case 0, 1, 2, 3: // a real transition of cpu1-3 or memory1; its uevent is queued
				var ev *udev.Event
				if b := r.IntN(4); b == 3 {
					f.blocks[1] = !f.blocks[1]
					ev = memEv(t, map[bool]string{true: "online", false: "offline"}[f.blocks[1]], 1, seq)
				} else {
					f.cpus[b+1] = !f.cpus[b+1]
					ev = cpuEv(t, map[bool]string{true: "online", false: "offline"}[f.cpus[b+1]], b+1, seq)
				}
				delete(lastForged, ev.DevPath)
				queue = append(queue, ev)
			case 4: // a forgery
				action := []string{"online", "offline", "remove", "add"}[r.IntN(4)]
				var ev *udev.Event
				if r.IntN(3) == 0 {
					ev = memEv(t, action, r.IntN(3), seq)
				} else {
					ev = cpuEv(t, action, r.IntN(6), seq)
				}
				dir := map[string]string{"online": "up", "offline": "down", "remove": "down"}[action]
				if last := lastForged[ev.DevPath]; dir != "" && last != "" && last != dir {
					continue // the reverse of its own held forgery: see above
				}
				if dir != "" {
					lastForged[ev.DevPath] = dir
				}
				queue = append(queue, ev)
			case 5: // the agent reads a few
				for n := r.IntN(4); n > 0 && len(queue) > 0; n-- {
					check(tr.Handle(queue[0]).Notes)
					queue = queue[1:]
				}
			case 6: // a lost real transition, then an overflow: the queue is dropped and a resync follows
				if r.IntN(4) == 0 {
					f.cpus[2] = !f.cpus[2]
					queue = nil
					clear(lastForged)
					ns, err := tr.Resync(0, time.Now())
					if err != nil {
						t.Fatal(err)
					}
					check(ns)
				}
			case 7: // the agent catches up
				for _, ev := range queue {
					check(tr.Handle(ev).Notes)
				}
				queue = nil
			}
		}
		for _, ev := range queue {
			check(tr.Handle(ev).Notes)
		}
		truth, _ := New(f).Scan()
		if diff := cmp.Diff(truth, tr.Known()); diff != "" {
			t.Fatalf("seed %d: record after every uevent differs from sysfs (-sysfs +record):\n%s", seed, diff)
		}
		if ns, _ := tr.Resync(0, time.Now()); len(ns) != 0 {
			t.Fatalf("seed %d: a resync after every uevent still announced %v", seed, summary(ns))
		}
	}
}

// TestSkippedSeqnumsAreNoGap: the SEQNUMs of datagrams the listener dropped (uevents a process
// had the kernel broadcast) are not lost uevents: no gap, no resync; numbers beyond them are.
func TestSkippedSeqnumsAreNoGap(t *testing.T) {
	f := newFake(map[int]bool{0: true, 1: true}, map[int]bool{0: true})
	tr := New(f)
	tr.Scan()
	tr.Handle(cpuEv(t, "change", 0, 100))
	ev := cpuEv(t, "change", 0, 112)
	ev.Skipped = 11
	if tr.Handle(ev).Gap {
		t.Error("SEQNUM 100 -> 112 with 11 dropped in between reported as a gap")
	}
	ev = cpuEv(t, "change", 0, 120)
	ev.Skipped = 2
	if !tr.Handle(ev).Gap {
		t.Error("SEQNUM 112 -> 120 with 2 dropped in between not reported as a gap")
	}
}

// TestGapKeepsWhatTheRescanContradicts: a real offline and online of cpu1 in one burst, read
// after both, with a uevent between them whose SEQNUM skipped one (sent to another network
// namespace). The rescan the gap calls for (ResyncGap) keeps the held offline, which sysfs
// still contradicts, so the online settles it: the removal and the arrival are both announced.
// After an overflow (Resync) the held offline is dropped: the online may be among the lost.
func TestGapKeepsWhatTheRescanContradicts(t *testing.T) {
	for _, gap := range []bool{true, false} {
		f := newFake(map[int]bool{0: true, 1: true}, map[int]bool{0: true})
		f.seqnum = 100
		tr := New(f)
		if _, err := tr.Scan(); err != nil {
			t.Fatal(err)
		}
		f.seqnum = 104 // 101 offline cpu1, 102 to another namespace, 103 change cpu0, 104 online cpu1
		var got []string
		tr.BeginBatch()
		for _, ev := range []struct {
			action string
			n      int
			seq    uint64
		}{{"offline", 1, 101}, {"change", 0, 103}, {"online", 1, 104}} {
			out := tr.Handle(cpuEv(t, ev.action, ev.n, ev.seq))
			got = append(got, summary(out.Notes)...)
			if out.Gap {
				resync := tr.Resync
				if gap {
					resync = tr.ResyncGap
				}
				notes, err := resync(ev.seq, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, summary(notes)...)
			}
		}
		got = append(got, summary(tr.EndBatch())...)
		want := 2
		if !gap {
			want = 0
		}
		if len(got) != want {
			t.Errorf("gap %v: cpu1 went offline and online: notifications %q; want %d", gap, got, want)
		}
	}
}
