// Package state turns kernel uevents and sysfs reads into device interface notifications. It
// holds the set of interfaces the agent has announced, and keeps it equal to the truth in sysfs:
// uevents say what changed, sysfs says what is, and a rescan repairs what lost events broke.
package state

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
	"github.com/hotplug-agent/hotplug-agent/udev"
)

// Sysfs is what the tracker reads: the subset of sysfs.FS it needs, so tests can script it.
type Sysfs interface {
	CPUs() ([]sysfs.CPU, error)
	CPU(n int) (sysfs.CPU, error)
	MemoryBlocks() ([]sysfs.MemoryBlock, error)
	MemoryBlock(n int) (sysfs.MemoryBlock, error)
}

// LinkPrefix is what a DEVPATH is joined to for a symbolic link: the kernel names its devices
// under /sys whatever root the agent reads sysfs from.
const LinkPrefix = "/sys"

// CPULink is the symbolic link of CPU n: /sys/devices/system/cpu/cpuN.
func CPULink(n int) string { return LinkPrefix + "/devices/system/cpu/cpu" + strconv.Itoa(n) }

// MemoryBlockLink is the symbolic link of memory block n: /sys/devices/system/memory/memoryN.
func MemoryBlockLink(n int) string {
	return LinkPrefix + "/devices/system/memory/memory" + strconv.Itoa(n)
}

// Resync reasons, as counted in hotplug_agent_resyncs_total.
const (
	ReasonOverflow  = "overflow"
	ReasonSeqnumGap = "seqnum_gap"
)

// Tracker is the agent's record of announced interfaces. Its methods return the notifications
// that bring the record in line with the machine. It is not safe for concurrent use: one event
// loop owns it.
type Tracker struct {
	fs      Sysfs
	known   map[key]notify.Interface
	lastSeq uint64
	now     func() time.Time
}

// New returns a Tracker over fs with an empty record; call Scan before handling events.
func New(fs Sysfs) *Tracker {
	return &Tracker{fs: fs, known: make(map[key]notify.Interface), now: time.Now}
}

// key names an interface in the record: its kind and number, so that handling a uevent needs no
// symbolic link string built.
type key struct {
	kind Kind
	n    int
}

// keyOf is the key of an interface of the record (a processor or a memory block).
func keyOf(i notify.Interface) key {
	if i.ClassGUID == notify.GUIDDeviceProcessor {
		return key{KindCPU, i.Number}
	}
	return key{KindMemory, i.Number}
}

// Kind says which interface class a device path names.
type Kind int

// The device kinds the agent follows.
const (
	KindNone Kind = iota
	KindCPU
	KindMemory
)

// Classify maps a uevent's subsystem and DEVPATH to a CPU number or memory block index. Only the
// exact forms /devices/system/cpu/cpuN and /devices/system/memory/memoryN count (no "..", no
// doubled slash, no leading zeros, no trailing parts): any other path is KindNone.
func Classify(subsystem, devpath string) (Kind, int) {
	switch subsystem {
	case "cpu":
		if n, ok := index(devpath, "/devices/system/cpu/cpu"); ok {
			return KindCPU, n
		}
	case "memory":
		if n, ok := index(devpath, "/devices/system/memory/memory"); ok {
			return KindMemory, n
		}
	}
	return KindNone, -1
}

// Suspicious reports a DEVPATH of a cpu or memory uevent that no kernel would send: one that is
// not clean (doubled slashes, "." or ".." elements, a trailing slash) or that lies outside
// /devices (a symlink name such as /bus/cpu/devices/cpu1). The agent drops such events and counts
// them; the real kernel never sends them, so only a forger or a bug could.
func Suspicious(subsystem, devpath string) bool {
	if subsystem != "cpu" && subsystem != "memory" {
		return false
	}
	return devpath != path.Clean(devpath) || !strings.HasPrefix(devpath, "/devices/")
}

// index parses the decimal number that ends path after prefix.
func index(path, prefix string) (int, bool) {
	s, ok := strings.CutPrefix(path, prefix)
	if !ok || s == "" || len(s) > 9 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// Scan reads sysfs and returns the interfaces that are active now (online CPUs and online memory
// blocks), sorted, and makes them the record. It is what the agent announces at start.
func (t *Tracker) Scan() ([]notify.Interface, error) {
	active, err := t.read()
	if err != nil {
		return nil, err
	}
	t.known = make(map[key]notify.Interface, len(active))
	for _, i := range active {
		t.known[keyOf(i)] = i
	}
	return active, nil
}

// Restore makes ifaces the record (what was announced before a restart) without reading sysfs;
// a following Resync announces what changed since.
func (t *Tracker) Restore(ifaces []notify.Interface) {
	t.known = make(map[key]notify.Interface, len(ifaces))
	for _, i := range ifaces {
		t.known[keyOf(i)] = i
	}
}

// Known returns the record, sorted.
func (t *Tracker) Known() []notify.Interface {
	out := make([]notify.Interface, 0, len(t.known))
	for _, i := range t.known {
		out = append(out, i)
	}
	slices.SortFunc(out, compare)
	return out
}

// read returns every active interface in sysfs, sorted.
func (t *Tracker) read() ([]notify.Interface, error) {
	cpus, err := t.fs.CPUs()
	if err != nil {
		return nil, fmt.Errorf("state: scan CPUs: %w", err)
	}
	blocks, err := t.fs.MemoryBlocks()
	if err != nil {
		return nil, fmt.Errorf("state: scan memory blocks: %w", err)
	}
	out := make([]notify.Interface, 0, len(cpus)+len(blocks))
	for _, c := range cpus {
		if c.Online {
			out = append(out, CPUInterface(c))
		}
	}
	for _, b := range blocks {
		if b.Online() {
			out = append(out, MemoryInterface(b))
		}
	}
	slices.SortFunc(out, compare)
	return out, nil
}

// Present returns every CPU and memory block present in fs, online or not, sorted: what
// `hotplug-agent list` prints.
func Present(fs Sysfs) ([]notify.Interface, error) {
	cpus, err := fs.CPUs()
	if err != nil {
		return nil, fmt.Errorf("state: scan CPUs: %w", err)
	}
	blocks, err := fs.MemoryBlocks()
	if err != nil {
		return nil, fmt.Errorf("state: scan memory blocks: %w", err)
	}
	out := make([]notify.Interface, 0, len(cpus)+len(blocks))
	for _, c := range cpus {
		out = append(out, CPUInterface(c))
	}
	for _, b := range blocks {
		out = append(out, MemoryInterface(b))
	}
	slices.SortFunc(out, compare)
	return out, nil
}

// Resync rescans sysfs and returns the notifications that turn the record into the truth:
// removals first, then arrivals, each sorted. It is called after lost events.
func (t *Tracker) Resync(seqnum uint64, readAt time.Time) ([]notify.Notification, error) {
	active, err := t.read()
	if err != nil {
		return nil, err
	}
	now := make(map[key]notify.Interface, len(active))
	for _, i := range active {
		now[keyOf(i)] = i
	}
	var out []notify.Notification
	for _, old := range t.Known() {
		if _, ok := now[keyOf(old)]; !ok {
			delete(t.known, keyOf(old))
			old.State = "offline"
			out = append(out, notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, old, seqnum, readAt, notify.CauseResync))
		}
	}
	for _, i := range active {
		if _, ok := t.known[keyOf(i)]; !ok {
			t.known[keyOf(i)] = i
			out = append(out, notify.NewNotification(notify.GUIDDeviceInterfaceArrival, i, seqnum, readAt, notify.CauseResync))
		}
	}
	return out, nil
}

// Handle applies one uevent and returns the notifications it causes, in order. gap reports that
// the event's SEQNUM skipped numbers since the previous event: events may have been lost, and the
// caller should Resync (the gap is a hint, not proof, because SEQNUM also counts uevents sent to
// other network namespaces).
//
// Only the kernel's own transitions change the record: "online" of a CPU or block not announced
// is an arrival; "offline" or "remove" of an announced one is a removal. The kernel sends them for
// every transition (device_online and device_offline do, whoever asked), so nothing else needs a
// look at sysfs, and each notification carries the SEQNUM of the uevent that really caused it.
// Synthetic uevents (written to a uevent file, they carry SYNTH_UUID) change nothing in the
// machine and announce nothing; neither do add, change, bind, unbind and move. A hot-added CPU
// or block arrives with its "online". Lost events are repaired by Resync, not guessed at here.
func (t *Tracker) Handle(ev *udev.Event) (out []notify.Notification, gap bool) {
	if t.lastSeq != 0 && ev.Seqnum > t.lastSeq+1 {
		gap = true
	}
	if ev.Seqnum > t.lastSeq {
		t.lastSeq = ev.Seqnum
	}
	if ev.Synthetic() {
		return nil, gap
	}
	kind, n := Classify(ev.Subsystem, ev.DevPath)
	if kind == KindNone {
		return nil, gap
	}
	k := key{kind, n}
	_, announced := t.known[k]
	switch ev.Action {
	case "online":
		if !announced {
			return t.arrive(kind, n, ev), gap
		}
	case "offline", "remove":
		if announced {
			return t.remove(k, ev), gap
		}
	}
	return nil, gap
}

// arrive records and announces the arrival of CPU or block n, with details read from sysfs.
func (t *Tracker) arrive(kind Kind, n int, ev *udev.Event) []notify.Notification {
	var iface notify.Interface
	if kind == KindCPU {
		c, err := t.fs.CPU(n)
		if err != nil {
			c = sysfs.CPU{Number: n, Node: -1}
		}
		c.Online = true
		iface = CPUInterface(c)
	} else {
		b, err := t.fs.MemoryBlock(n)
		if err != nil {
			b = sysfs.MemoryBlock{Index: n, Node: -1}
		}
		b.State = "online"
		iface = MemoryInterface(b)
	}
	t.known[key{kind, n}] = iface
	return []notify.Notification{notify.NewNotification(notify.GUIDDeviceInterfaceArrival, iface, ev.Seqnum, ev.ReadAt, notify.CauseUevent)}
}

// remove forgets and announces the removal of the interface of k.
func (t *Tracker) remove(k key, ev *udev.Event) []notify.Notification {
	iface := t.known[k]
	delete(t.known, k)
	iface.State = "offline"
	return []notify.Notification{notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, iface, ev.Seqnum, ev.ReadAt, notify.CauseUevent)}
}

// CPUInterface is the interface of CPU c.
func CPUInterface(c sysfs.CPU) notify.Interface {
	state := "offline"
	if c.Online {
		state = "online"
	}
	return notify.Interface{
		ClassGUID:    notify.GUIDDeviceProcessor,
		SymbolicLink: CPULink(c.Number),
		Number:       c.Number,
		Node:         c.Node,
		State:        state,
	}
}

// MemoryInterface is the interface of memory block b.
func MemoryInterface(b sysfs.MemoryBlock) notify.Interface {
	return notify.Interface{
		ClassGUID:    notify.GUIDDeviceMemory,
		SymbolicLink: MemoryBlockLink(b.Index),
		Number:       b.Index,
		Node:         b.Node,
		PhysStart:    b.PhysStart,
		Size:         b.Size,
		State:        b.State,
		Zones:        b.ValidZones,
	}
}

func compare(a, b notify.Interface) int {
	if a.Less(b) {
		return -1
	}
	if b.Less(a) {
		return 1
	}
	return 0
}
