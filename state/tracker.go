// Package state turns kernel uevents and sysfs reads into device interface notifications. It
// holds the set of interfaces the agent has announced, and keeps it equal to the truth in sysfs:
// uevents say what changed, sysfs says what is, and a rescan repairs what lost events broke.
package state

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
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
	// MemoryBlockBasics reads a block without its zones: safe while it is being hot-added.
	MemoryBlockBasics(n int) (sysfs.MemoryBlock, error)
	// UeventSeqnum is the kernel's last uevent SEQNUM (kernel/uevent_seqnum).
	UeventSeqnum() (uint64, error)
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

// Reasons a uevent is not believed, passed to the tracker's OnReject and counted in
// hotplug_agent_uevents_rejected_total.
const (
	// RejectSeqnum: a SEQNUM beyond the kernel's own counter (kernel/uevent_seqnum).
	RejectSeqnum = "seqnum"
	// RejectUnconfirmed: an online, offline or remove that sysfs did not show when the event
	// was handled, and that no later uevent of the same device confirmed (see Handle).
	RejectUnconfirmed = "unconfirmed"
)

// Tracker is the agent's record of announced interfaces, and of the CPUs and memory blocks
// present. Its methods return the notifications that bring the record in line with the machine.
// It is not safe for concurrent use: one event loop owns it.
type Tracker struct {
	fs    Sysfs
	known map[key]notify.Interface
	// present holds every CPU and memory block sysfs showed at the last scan, updated by
	// confirmed adds and removes: what tells a hot-add from an add of something already there.
	present map[key]struct{}
	// held is, per present device, a transition sysfs did not show when its uevent was handled:
	// undone since (a quick offline and online), or not real. The next uevent of the device
	// decides (see Handle). At most one per present or announced device.
	held map[key]udev.Event
	// links holds the symbolic links of devices that left the record, for their next arrival:
	// a device that goes offline and online again costs no new string.
	links map[key]string
	// cpus holds, per CPU sysfs showed (at the last scan, or read since), what does not change
	// while it is present: its node and whether it has an online file. With it, a transition of
	// a hot-pluggable CPU is confirmed by reading its online file alone (see observe). An add or
	// remove of the CPU drops its entry; only CPUs sysfs showed get one.
	cpus map[int]cpuFacts
	// batch is true between BeginBatch and EndBatch: the CPU transitions handled are confirmed
	// against online, read once (when the first needs it) for all of them.
	batch bool
	// onlineRead says that online holds what cpu/online showed since the batch began;
	// onlineFailed that its read failed, and each CPU's own file is read instead.
	onlineRead, onlineFailed bool
	online                   sysfs.CPUSet
	// batchHeld lists the CPUs whose transitions the batch held against online (at most one
	// entry per uevent of the batch): EndBatch reads them again.
	batchHeld []key
	// onlineFile is cpu/online, held open from the first batch that reads it until Close.
	onlineFile *sysfs.OnlineCPUs
	// notes is the array of the last Outcome's Notes, reused by the next Handle.
	notes    []notify.Notification
	lastSeq  uint64
	now      func() time.Time
	onReject func(reason string)
	// presentSnap is present as sorted lists, for readers on other goroutines (the state
	// file's saver); replaced whenever present changes.
	presentSnap atomic.Pointer[PresentSet]
}

// PresentSet is a set of CPUs and memory blocks by number, each list sorted.
type PresentSet struct {
	CPUs, MemoryBlocks []int
}

// New returns a Tracker over fs with an empty record; call Scan before handling events.
func New(fs Sysfs) *Tracker {
	return &Tracker{fs: fs, known: make(map[key]notify.Interface), present: make(map[key]struct{}),
		held: make(map[key]udev.Event), links: make(map[key]string), cpus: make(map[int]cpuFacts), now: time.Now}
}

// Present returns the CPUs and memory blocks present as of the last scan, add and remove the
// tracker handled; nil before the first scan. The lists are not to be modified. It does not
// block and, unlike the other methods, is safe for concurrent use.
func (t *Tracker) Present() *PresentSet { return t.presentSnap.Load() }

// snapshotPresent publishes present for Present.
func (t *Tracker) snapshotPresent() {
	p := &PresentSet{}
	for k := range t.present {
		if k.kind == KindCPU {
			p.CPUs = append(p.CPUs, k.n)
		} else {
			p.MemoryBlocks = append(p.MemoryBlocks, k.n)
		}
	}
	slices.Sort(p.CPUs)
	slices.Sort(p.MemoryBlocks)
	t.presentSnap.Store(p)
}

// OnReject sets the function told, with a Reject* reason, of each uevent the tracker does not
// believe. Call it before handling events.
func (t *Tracker) OnReject(f func(reason string)) { t.onReject = f }

func (t *Tracker) reject(reason string) {
	if t.onReject != nil {
		t.onReject(reason)
	}
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
	return !strings.HasPrefix(devpath, "/devices/") || !clean(devpath)
}

// clean reports whether the absolute path p is as path.Clean returns it: no element of it is
// empty (a doubled or trailing slash), "." or "..". It allocates nothing and scans p once.
func clean(p string) bool {
	for rest, more := p[1:], true; more; {
		var elem string
		elem, rest, more = strings.Cut(rest, "/")
		if elem == "" || elem == "." || elem == ".." {
			return false
		}
	}
	return true
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
	t.startSeq()
	return active, nil
}

// startSeq takes the kernel's SEQNUM as the last one seen: uevents queued before the scan are
// older, and the first one after it is checked like any that skips numbers.
func (t *Tracker) startSeq() {
	if k, err := t.fs.UeventSeqnum(); err == nil && k > t.lastSeq {
		t.lastSeq = k
	}
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

// read returns every active interface in sysfs, sorted, and makes what it found present.
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
	present := make(map[key]struct{}, len(cpus)+len(blocks))
	t.cpus = make(map[int]cpuFacts, len(cpus))
	for _, c := range cpus {
		present[key{KindCPU, c.Number}] = struct{}{}
		t.cpus[c.Number] = cpuFacts{c.Node, c.Hotpluggable}
		if c.Online {
			out = append(out, CPUInterface(c))
		}
	}
	for _, b := range blocks {
		present[key{KindMemory, b.Index}] = struct{}{}
		if b.Online() {
			out = append(out, MemoryInterface(b))
		}
	}
	t.present = present
	t.snapshotPresent()
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

// BeginBatch says that the uevents handled from now until EndBatch were all received, and so
// sent by the kernel, before this call: the caller read them from the socket's queue without
// waiting, one after the other, and handles them in order. The CPU transitions among them are
// then confirmed against one read of cpu/online (the CPUs online), made when the first of them
// needs it, instead of a read of each CPU's online file: that read comes after the kernel sent
// every uevent of the batch, so it can only be later than the one per uevent, never earlier,
// and a late read is what Handle's held transitions allow for; EndBatch reads the CPUs whose
// transitions are still held at its end once more, each from its own file. Without a batch, or
// when cpu/online cannot be read, each transition reads its CPU's file.
func (t *Tracker) BeginBatch() { t.batch, t.onlineRead, t.onlineFailed = true, false, false }

// EndBatch ends what BeginBatch began: later uevents are confirmed one by one. It returns the
// notifications of the CPU transitions the batch held against cpu/online and that their CPU's
// own online file shows now, valid until the next Handle or EndBatch. That file is the one a
// uevent answers to: the kernel changes it, under the device's lock, when a transition is done,
// just before it sends the uevent, and a read of it waits for a transition under way; so a file
// that shows the held transition means no reverse uevent is on its way to release it.
// cpu/online is the CPU mask, read without a lock and changed part-way through a transition: an
// online that fails after its CPU was set in the mask shows it there until the rollback, which
// sends no uevent, and an offline handled meanwhile would otherwise wait for the CPU's next one.
func (t *Tracker) EndBatch() (notes []notify.Notification) {
	t.batch = false
	for _, k := range t.batchHeld {
		h, ok := t.held[k]
		if !ok {
			continue // released or dropped by a later uevent of the batch
		}
		iface, s, err := t.observe(k, false)
		if err != nil || s.online != (h.Action == "online") {
			continue // the reverse transition is done: its uevent releases both
		}
		delete(t.held, k)
		notes = t.apply(k, &h, iface, notes)
	}
	t.batchHeld = t.batchHeld[:0]
	return notes
}

// onlineOpener is implemented by sysfs.FS: cpu/online, held open.
type onlineOpener interface {
	OpenOnlineCPUs() (*sysfs.OnlineCPUs, error)
}

// batchOnline reports whether CPU n is online as the batch's read of cpu/online shows it, and
// ok=false outside a batch or when cpu/online cannot be read.
func (t *Tracker) batchOnline(n int) (online, ok bool) {
	if !t.batch || t.onlineFailed {
		return false, false
	}
	if !t.onlineRead {
		if err := t.readOnline(); err != nil {
			t.onlineFailed = true
			return false, false
		}
		t.onlineRead = true
	}
	return t.online.Contains(n), true
}

// readOnline reads cpu/online into t.online, through the file held open, which it opens the
// first time. A file that fails a read is closed: the next batch opens it again.
func (t *Tracker) readOnline() error {
	if t.onlineFile == nil {
		o, ok := t.fs.(onlineOpener)
		if !ok {
			return errors.ErrUnsupported
		}
		f, err := o.OpenOnlineCPUs()
		if err != nil {
			return err
		}
		t.onlineFile = f
	}
	err := t.onlineFile.Read(&t.online)
	if err != nil {
		t.Close()
	}
	return err
}

// Close releases cpu/online, which batches hold open; a later batch opens it again. Call it from
// the goroutine that handles the uevents, once it is done with them.
func (t *Tracker) Close() {
	if t.onlineFile != nil {
		t.onlineFile.Close() // read-only: a close error cannot lose data
		t.onlineFile = nil
	}
}

// Resync rescans sysfs and returns the notifications that turn the record into the truth:
// removals first, then arrivals, each sorted. It is called after lost events. Transitions held
// for confirmation are dropped: sysfs is the truth now, and the uevents that would have settled
// them may be among those lost.
func (t *Tracker) Resync(seqnum uint64, readAt time.Time) ([]notify.Notification, error) {
	return t.resync(seqnum, readAt, false)
}

// ResyncGap is Resync after a SEQNUM gap (Outcome.Gap), a hint of lost uevents, not proof:
// SEQNUM also counts uevents sent to other network namespaces. A held transition that the
// rescan still contradicts (an offline of a CPU sysfs shows online) is kept, so that its
// device's reverse uevent settles it as Handle would have: both halves of a quick offline and
// online are announced. One the rescan agrees with is dropped: the rescan announces it.
func (t *Tracker) ResyncGap(seqnum uint64, readAt time.Time) ([]notify.Notification, error) {
	return t.resync(seqnum, readAt, true)
}

// resync is Resync, keeping the held transitions the rescan contradicts when keep.
func (t *Tracker) resync(seqnum uint64, readAt time.Time, keep bool) ([]notify.Notification, error) {
	active, err := t.read()
	if err != nil {
		return nil, err
	}
	now := make(map[key]notify.Interface, len(active))
	for _, i := range active {
		now[keyOf(i)] = i
	}
	for k, h := range t.held {
		if _, on := now[k]; keep && (h.Action == "online") != on {
			continue
		}
		delete(t.held, k)
		t.reject(RejectUnconfirmed)
	}
	t.onlineRead = false // not older than this rescan: a batch reads cpu/online again
	if seqnum == 0 {
		t.startSeq()
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

// Outcome is what one uevent did.
type Outcome struct {
	// Notes are the notifications the event causes, in order: valid until the next Handle, which
	// reuses their array.
	Notes []notify.Notification
	// Gap reports that the event's SEQNUM skipped numbers since the previous event: events may
	// have been lost, and the caller should Resync (a hint, not proof: SEQNUM also counts
	// uevents sent to other network namespaces). A sysfs read that failed sets it too.
	Gap bool
	// HotAdd is true for the kernel's add of a CPU or memory block that sysfs shows and that
	// was not present before; HotRemove for its remove of one that was present, whether or not
	// sysfs still shows it (the kernel removes the directory after it sends the uevent). An add
	// of something already present (a replay) is neither.
	HotAdd, HotRemove bool
}

// Handle applies one uevent and returns what it does.
//
// Only the kernel's own transitions change the record: "online" of a CPU or block not announced
// is an arrival; "offline" or "remove" of an announced one is a removal. Each is confirmed
// against sysfs before it is announced: the device must be online (arrival), or offline or gone
// (removal). A transition sysfs does not show is held, one per device: a quick offline and
// online read late looks like that, and the kernel's next uevent of the device, the reverse
// transition, then confirms both, which are announced in order, each with the SEQNUM of the
// uevent that caused it. Any other next uevent (the same transition again) or a Resync drops
// the held one as unconfirmed. So a single uevent that sysfs contradicts is never announced,
// and the record agrees with sysfs once each device's uevents are handled; two forged uevents,
// a transition and its reverse, would pass for a real quick one, which is why udev refuses
// every uevent the kernel did not originate. An offline of a CPU that cannot go offline (no
// online file) is refused outright. Synthetic uevents (written to a uevent file, they carry
// SYNTH_UUID) change nothing and announce nothing; neither do change, bind, unbind and move. A
// hot-added CPU or block arrives with its "online". A SEQNUM beyond the kernel's counter is not
// believed: the event is dropped. Lost events are repaired by Resync, not guessed at here.
func (t *Tracker) Handle(ev *udev.Event) (out Outcome) {
	// The numbers of datagrams the listener dropped (ev.Skipped) are not lost uevents.
	if ev.Seqnum > t.lastSeq+1+ev.Skipped {
		// Read the kernel's counter only when numbers were skipped: it cannot be lower than
		// the SEQNUM of a uevent the kernel has sent.
		if k, err := t.fs.UeventSeqnum(); err == nil && ev.Seqnum > k {
			t.reject(RejectSeqnum)
			return out
		}
		out.Gap = t.lastSeq != 0
	}
	if ev.Seqnum > t.lastSeq {
		t.lastSeq = ev.Seqnum
	}
	if ev.Synthetic() {
		return out
	}
	kind, n := Classify(ev.Subsystem, ev.DevPath)
	if kind == KindNone {
		return out
	}
	k := key{kind, n}
	if kind == KindCPU && (ev.Action == "add" || ev.Action == "remove") {
		delete(t.cpus, n) // a CPU added again may be another node's
	}
	switch ev.Action {
	case "add":
		if _, ok := t.present[k]; !ok {
			if _, _, err := t.observe(k, false); err == nil {
				t.present[k] = struct{}{}
				t.snapshotPresent()
				out.HotAdd = true
			}
		}
		if kind == KindCPU {
			// The kernel links cpuN to its node after it sends the add: what was read now may
			// lack the node, and the CPU's first transition reads it whole.
			delete(t.cpus, n)
		}
		return out
	case "online", "offline", "remove":
	default:
		return out
	}
	up := ev.Action == "online"
	if h, ok := t.held[k]; ok {
		delete(t.held, k)
		if (h.Action == "online") != up {
			// The kernel's reverse transition: the held one was real, and sysfs had moved on.
			var iface notify.Interface
			if h.Action == "online" {
				iface, _, _ = t.observe(k, false) // the details as they are now: a fallback on error
			}
			out.Notes = t.apply(k, &h, iface, out.Notes)
		} else {
			t.reject(RejectUnconfirmed)
		}
	}
	if _, announced := t.known[k]; announced != up {
		iface, s, err := t.observe(k, up)
		switch {
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			out.Gap = true // sysfs could not say: a rescan will
		case s.online == up:
			out.Notes = t.apply(k, ev, iface, out.Notes)
		case s.exists && !s.hotpluggable:
			t.reject(RejectUnconfirmed) // a CPU without an online file cannot go offline
		case s.exists || t.isPresent(k) || announced:
			t.held[k] = *ev
			if kind == KindCPU && t.batch && t.onlineRead {
				t.batchHeld = append(t.batchHeld, k)
			}
		default:
			t.reject(RejectUnconfirmed) // a device that is not there and never was
		}
	}
	if ev.Action == "remove" && t.isPresent(k) {
		// The kernel's own remove (a write to the device's uevent file carries SYNTH_UUID, and
		// stopped above) is believed even while sysfs shows the device: the kernel sends it
		// before it deletes the directory, and a burst is read after an add of the device again
		// may have made a new one. Were the device kept present, that add would not be a hot-add.
		delete(t.present, k)
		t.snapshotPresent()
		out.HotRemove = true
	}
	return out
}

func (t *Tracker) isPresent(k key) bool { _, ok := t.present[k]; return ok }

// cpuFacts is what the tracker keeps of a present CPU: what sysfs showed of it that does not
// change while it is present.
type cpuFacts struct {
	node         int
	hotpluggable bool
}

// onlineReader is implemented by sysfs.FS: a CPU's online state from its online file alone,
// with fs.ErrNotExist when there is no such file. A scripted Sysfs without it is read whole.
type onlineReader interface {
	CPUOnline(n int) (bool, error)
}

// errWholeRead is cpuOnline's answer when fs offers no read of the online state alone.
var errWholeRead = fmt.Errorf("no read of the online state alone: %w", fs.ErrNotExist)

// cpuOnline reports whether CPU n, a hot-pluggable CPU sysfs showed, is online: from the batch's
// read of cpu/online, or else from its own online file. An error wrapping fs.ErrNotExist says
// that the file is gone (or, errWholeRead, that fs cannot read it alone): CPU n is to be read
// whole.
func (t *Tracker) cpuOnline(n int) (bool, error) {
	if on, ok := t.batchOnline(n); ok {
		return on, nil
	}
	if r, ok := t.fs.(onlineReader); ok {
		return r.CPUOnline(n)
	}
	return false, errWholeRead
}

// deviceState is what sysfs shows of a CPU or block. hotpluggable is false for a CPU without
// an online file (such as cpu0 on most x86 machines), which never goes offline.
type deviceState struct{ exists, online, hotpluggable bool }

// observe reads k from sysfs, once: its interface and its state. A device that is not there is
// the zero state with an error wrapping fs.ErrNotExist. A memory block's zones are read only with
// zones (for an arrival): never while it may still be being added (see sysfs.MemoryBlock).
func (t *Tracker) observe(k key, zones bool) (notify.Interface, deviceState, error) {
	if k.kind == KindCPU {
		if f, ok := t.cpus[k.n]; ok && f.hotpluggable {
			on, err := t.cpuOnline(k.n)
			if err == nil {
				c := sysfs.CPU{Number: k.n, Node: f.node, Online: on, Hotpluggable: true}
				return cpuInterface(c, t.link(k)), deviceState{true, on, true}, nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return notify.Interface{}, deviceState{}, err
			}
			if err != errWholeRead {
				delete(t.cpus, k.n) // gone, or changed: the whole read says which
			}
		}
		c, err := t.fs.CPU(k.n)
		if err != nil {
			return notify.Interface{}, deviceState{}, err
		}
		t.cpus[k.n] = cpuFacts{c.Node, c.Hotpluggable}
		return cpuInterface(c, t.link(k)), deviceState{true, c.Online, c.Hotpluggable}, nil
	}
	read := t.fs.MemoryBlockBasics
	if zones {
		read = t.fs.MemoryBlock
	}
	b, err := read(k.n)
	if err != nil {
		return notify.Interface{}, deviceState{}, err
	}
	return memoryInterface(b, t.link(k)), deviceState{true, b.Online(), true}, nil
}

// link returns the symbolic link of k, without building it again for a device the tracker has
// seen.
func (t *Tracker) link(k key) string {
	if i, ok := t.known[k]; ok {
		return i.SymbolicLink
	}
	if l, ok := t.links[k]; ok {
		return l
	}
	var l string
	if k.kind == KindCPU {
		l = CPULink(k.n)
	} else {
		l = MemoryBlockLink(k.n)
	}
	t.links[k] = l
	return l
}

// apply announces the transition of ev for k, an online (with iface as sysfs showed it; its zero
// value when it could not be read) or an offline/remove that changes the record, appending its
// notification to out; a nil out starts on the array of the last Outcome's Notes.
func (t *Tracker) apply(k key, ev *udev.Event, iface notify.Interface, out []notify.Notification) []notify.Notification {
	if out == nil {
		out = t.notes[:0]
	}
	if ev.Action == "online" {
		out = append(out, t.arrive(k, iface, ev))
	} else {
		out = append(out, t.remove(k, ev))
	}
	t.notes = out
	return out
}

// arrive records and announces the arrival of k, with iface as sysfs showed it.
func (t *Tracker) arrive(k key, iface notify.Interface, ev *udev.Event) notify.Notification {
	if iface.SymbolicLink == "" { // not read: the device's number is all that is known
		if k.kind == KindCPU {
			iface = CPUInterface(sysfs.CPU{Number: k.n, Node: -1})
		} else {
			iface = MemoryInterface(sysfs.MemoryBlock{Index: k.n, Node: -1})
		}
	}
	iface.State = "online"
	t.known[k] = iface
	return notify.NewNotification(notify.GUIDDeviceInterfaceArrival, iface, ev.Seqnum, ev.ReadAt, notify.CauseUevent)
}

// remove forgets and announces the removal of the interface of k.
func (t *Tracker) remove(k key, ev *udev.Event) notify.Notification {
	iface := t.known[k]
	delete(t.known, k)
	if iface.SymbolicLink != "" {
		t.links[k] = iface.SymbolicLink
	}
	iface.State = "offline"
	return notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, iface, ev.Seqnum, ev.ReadAt, notify.CauseUevent)
}

// CPUInterface is the interface of CPU c.
func CPUInterface(c sysfs.CPU) notify.Interface { return cpuInterface(c, CPULink(c.Number)) }

// cpuInterface is the interface of CPU c, whose symbolic link is link.
func cpuInterface(c sysfs.CPU, link string) notify.Interface {
	state := "offline"
	if c.Online {
		state = "online"
	}
	return notify.Interface{
		ClassGUID:    notify.GUIDDeviceProcessor,
		SymbolicLink: link,
		Number:       c.Number,
		Node:         c.Node,
		State:        state,
	}
}

// MemoryInterface is the interface of memory block b.
func MemoryInterface(b sysfs.MemoryBlock) notify.Interface {
	return memoryInterface(b, MemoryBlockLink(b.Index))
}

// memoryInterface is the interface of memory block b, whose symbolic link is link.
func memoryInterface(b sysfs.MemoryBlock, link string) notify.Interface {
	return notify.Interface{
		ClassGUID:    notify.GUIDDeviceMemory,
		SymbolicLink: link,
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
