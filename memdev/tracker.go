package memdev

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// Options configure a Tracker. Reader and Publish are required.
type Options struct {
	// Reader reads the layout; only the Tracker's goroutine uses it once Run has started.
	Reader *Reader
	// Publish delivers a memory-device notification (normally to the agent's memory-device
	// registry). It is called in order, with the Tracker's lock held: it must not block.
	Publish func(notify.Notification) bool
	Logger  *slog.Logger
	// Settle is how long the blocks of a virtio-mem device must stay unchanged before the device
	// is announced: it plugs memory block by block as its requested size changes, and one
	// arrival for the whole plug is the point. Default 250 ms.
	Settle time.Duration
	// Shrink is Settle for the blocks a virtio-mem device keeps after it shrank: the driver
	// unplugs a block at a time, each after a round trip to the hypervisor, and on a busy host
	// those can be seconds apart; a shrink to nothing should be one removal, not a removal, an
	// arrival of what is left so far and another removal. Default 2 s.
	Shrink time.Duration
	// Pending is how long a block the kernel added is waited for to show its device (an ACPI
	// memory device links its blocks only once all are added) before it is taken for memory of
	// no device. Default 5 s.
	Pending time.Duration
	// Poll is how often the layout is read again while a pending block is online. Default 10 ms.
	Poll time.Duration
}

// blockEvent is what produced a block's last notification.
type blockEvent struct {
	seqnum uint64
	readAt time.Time
	cause  notify.Cause
}

// Tracker turns memory-block notifications into memory-device notifications: an arrival once
// all of a device's blocks are online, a removal as soon as one of them is not. Feed it with
// Added and Removed (the kernel's add and remove of a block) and Changed (every block
// notification the agent publishes), and run Run. Its methods are safe for concurrent use; only Run and Seed block, on
// sysfs reads.
type Tracker struct {
	o   Options
	log *slog.Logger

	kick chan struct{} // capacity 1: "something changed"

	mu        sync.Mutex
	online    map[int]notify.Interface // the online blocks, as last announced
	events    map[int]blockEvent       // what announced each online block, or took it away
	pending   map[int]time.Time        // blocks added by the kernel whose device is not known yet
	added     map[int]bool             // blocks added by the kernel, not yet seen with a device nor waited for online
	changed   map[int]time.Time        // when each recently changed block changed (virtio-mem settle)
	announced map[string]notify.Interface
	blocksOf  map[string][]int  // the blocks of each announced device, as announced
	shrunk    map[string][2]int // devices removed as they lost a block, not announced since: the span of blocks they had
	layout    Layout
	// stale says the layout must be read again: a block was added or removed, went offline, or
	// came online without a known device since it was read. A block of a known device coming
	// online changes no device's blocks, so a hot-add's onlining, block after block, reads the
	// layout (every device's links: a cost that grows with the blocks) only while its blocks
	// are being added.
	stale bool
}

// New returns a Tracker with no blocks; call Seed, then Run.
func New(o Options) *Tracker {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Settle <= 0 {
		o.Settle = 250 * time.Millisecond
	}
	if o.Shrink <= 0 {
		o.Shrink = 2 * time.Second
	}
	if o.Pending <= 0 {
		o.Pending = 5 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 10 * time.Millisecond
	}
	return &Tracker{
		o: o, log: o.Logger, kick: make(chan struct{}, 1),
		online: map[int]notify.Interface{}, events: map[int]blockEvent{}, pending: map[int]time.Time{}, added: map[int]bool{},
		changed: map[int]time.Time{}, announced: map[string]notify.Interface{}, blocksOf: map[string][]int{},
		shrunk: map[string][2]int{},
		stale:  true,
	}
}

// Seed sets the online blocks (the memory interfaces among active; others are ignored) and
// returns the devices they make whole, without publishing anything: the starting state, for
// the memory-device registry's Seed. Call it before Run. It blocks on sysfs reads.
func (t *Tracker) Seed(active []notify.Interface) ([]notify.Interface, error) {
	t.mu.Lock()
	if len(t.online) == 0 {
		t.online = make(map[int]notify.Interface, len(active)) // grown once, not block by block
	}
	for _, i := range active {
		if i.ClassGUID == notify.GUIDDeviceMemory && !i.IsMemoryDevice() {
			t.online[i.Number] = i
		}
	}
	t.mu.Unlock()
	var seeded []notify.Interface
	if _, err := t.evaluate(func(n notify.Notification) { seeded = append(seeded, n.Interface) }); err != nil {
		return nil, err
	}
	return seeded, nil
}

// Restore sets the starting state saved before a restart: the memory blocks announced online
// (the memory interfaces among blocks) and the devices announced (devices, memory-device
// interfaces). Nothing is published; the block notifications the agent then publishes for what
// changed while it was down, and Run's first evaluation, announce what changed for the devices.
// Call it instead of Seed, before Run. It does not block.
func (t *Tracker) Restore(blocks, devices []notify.Interface) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, i := range blocks {
		if i.ClassGUID == notify.GUIDDeviceMemory && !i.IsMemoryDevice() {
			t.online[i.Number] = i
		}
	}
	for _, d := range devices {
		list, err := sysfs.ParseMemoryBlockList(d.Blocks, 0)
		if !d.IsMemoryDevice() || d.Device == "" || err != nil {
			continue
		}
		t.announced[d.Device] = d
		t.blocksOf[d.Device] = list
	}
}

// Added records that the kernel added memory block n (an add uevent, not a synthetic one): its
// device may show only after all the device's blocks are added. It does not block.
func (t *Tracker) Added(n int, at time.Time) {
	t.mu.Lock()
	t.pending[n] = at
	t.added[n] = true
	t.changed[n] = at
	t.stale = true
	t.mu.Unlock()
	t.poke()
}

// Removed records that the kernel removed memory block n (a remove uevent): the device it
// belonged to changed. It does not block.
func (t *Tracker) Removed(n int, at time.Time) {
	t.mu.Lock()
	delete(t.pending, n)
	delete(t.added, n)
	t.changed[n] = at
	t.stale = true
	t.mu.Unlock()
	t.poke()
}

// Changed records a published block notification (others are ignored). It does not block.
func (t *Tracker) Changed(n notify.Notification) {
	if n.InterfaceClassGUID != notify.GUIDDeviceMemory || n.Interface.IsMemoryDevice() {
		return
	}
	b := n.Interface.Number
	t.mu.Lock()
	if n.IsArrival() {
		t.online[b] = n.Interface
	} else {
		delete(t.online, b)
	}
	if !n.IsArrival() || t.layout.DeviceOf(b) == "" {
		t.stale = true
	}
	if n.IsArrival() && t.added[b] && t.layout.DeviceOf(b) == "" {
		// Added, and online, but not yet linked: with the kernel's auto-online a DIMM's blocks
		// are all added and onlined before the kernel links them to their device, which takes
		// longer than Pending for tens of GiB. Waiting starts again from its coming online.
		t.pending[b] = time.Now()
	}
	t.events[b] = blockEvent{n.Seqnum, n.ReadAt, n.Cause}
	t.changed[b] = time.Now()
	t.mu.Unlock()
	t.poke()
}

func (t *Tracker) poke() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// Run evaluates the devices whenever a block changes, and again while blocks are pending or a
// virtio-mem device settles, until ctx ends. It blocks.
func (t *Tracker) Run(ctx context.Context) {
	timer := time.NewTimer(0) // a first evaluation: Restore may have left work
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
			// Let what the same event made runnable go first: a kick comes from the event loop
			// just after it published the block's notification, whose delivery (the /events
			// stream, the callbacks) should not wait for a read of every device's links.
			runtime.Gosched()
		case <-timer.C:
		}
		wait, err := t.evaluate(nil)
		if err != nil {
			t.log.Warn("memory devices not evaluated; retrying", "err", err)
			wait = max(wait, 100*time.Millisecond)
		}
		if wait > 0 {
			timer.Reset(wait)
		}
	}
}

// DeviceOf returns the id of the device memory block n belongs to, "" when none is known. It
// does not block.
func (t *Tracker) DeviceOf(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.layout.DeviceOf(n)
}

// Device returns the device id as last read, with a copy of its blocks. It does not block.
func (t *Tracker) Device(id string) (Device, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, ok := t.layout.Devices[id]
	if !ok {
		return Device{}, false
	}
	c := *d
	c.Blocks = slices.Clone(d.Blocks)
	return c, true
}

// Announced returns the devices announced as present, sorted by first block. It does not block.
func (t *Tracker) Announced() []notify.Interface {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := slices.Collect(maps.Values(t.announced))
	slices.SortFunc(out, func(a, b notify.Interface) int { return cmp.Compare(a.Number, b.Number) })
	return out
}

// evaluate reads the layout and announces what changed: removals of devices that lost a block
// (or changed), then arrivals of devices whose blocks are all online. With seed non-nil it
// announces nothing and gives seed the devices present instead. It returns how soon it must run
// again (0: only when something changes).
func (t *Tracker) evaluate(seed func(notify.Notification)) (time.Duration, error) {
	t.mu.Lock()
	read := t.stale || len(t.pending) > 0
	t.stale = false // an Added or Changed from now on asks for another read
	t.mu.Unlock()
	if read {
		layout, warn, err := t.o.Reader.Read()
		if warn != nil {
			t.log.Warn("memory devices: virtio-mem devices are not tracked", "err", warn)
		}
		if err != nil {
			t.mu.Lock()
			t.stale = true
			t.mu.Unlock()
			return 0, err
		}
		t.mu.Lock()
		t.layout = layout
		t.mu.Unlock()
	}
	now := time.Now()

	t.mu.Lock()
	defer t.mu.Unlock()
	layout := t.layout
	for b, since := range t.pending {
		switch {
		case layout.DeviceOf(b) != "":
			delete(t.pending, b)
		case now.Sub(since) >= t.o.Pending:
			delete(t.pending, b)
			if _, online := t.online[b]; online {
				// Waited for since it came online too: no device claims it (memory added through
				// probe or a balloon driver), and coming online again will not make it wait.
				delete(t.added, b)
			}
		}
	}
	for b := range t.added {
		if layout.DeviceOf(b) != "" {
			delete(t.added, b)
		}
	}
	for b, at := range t.changed {
		if now.Sub(at) >= max(t.o.Settle, t.o.Shrink) {
			delete(t.changed, b)
		}
	}
	// What is published at the end, in the order of the block notifications that caused them (the
	// key: the causing SEQNUM), so that the devices change as their blocks did between two
	// evaluations (a device rolled back online before another was taken offline). A device's
	// arrival is keyed no earlier than its removal of the same evaluation, whose cause may be the
	// newer (a block lost after the one that completes what is left); of one key, removals come
	// first, as made.
	type pub struct {
		n   notify.Notification
		key uint64
	}
	var out []pub
	removedAt := map[string]uint64{} // device id: the key of its removal in this evaluation
	defer func() {
		slices.SortStableFunc(out, func(a, b pub) int { return cmp.Compare(a.key, b.key) })
		for _, p := range out {
			n := p.n
			if seed != nil {
				seed(n)
			} else if !t.o.Publish(n) {
				t.log.Warn("memory device notification refused", "event", notify.EventName(n.Event), "device", n.Interface.Device)
			}
		}
	}()

	var wait time.Duration
	soonest := func(d time.Duration) {
		if d > 0 && (wait == 0 || d < wait) {
			wait = d
		}
	}

	// Removals: a device goes as soon as one of its announced blocks is not online, or when its
	// blocks changed (a virtio-mem resize) and the new set is ready to be announced.
	for _, id := range sortedKeys(t.announced) {
		a := t.announced[id]
		lost := t.firstLost(t.blocksOf[id])
		resized := false
		if d := layout.Devices[id]; lost < 0 && d != nil && !slices.Equal(d.Blocks, t.blocksOf[id]) {
			w := t.ready(d, now)
			resized = w == 0
			soonest(w)
		}
		if lost < 0 && !resized {
			continue
		}
		ev, ok := t.events[lost]
		switch {
		case resized:
			ev = t.latest(layout.Devices[id].Blocks)
		case !ok: // restored from the state file and gone before any event said so
			ev = blockEvent{readAt: now, cause: notify.CauseResync}
		}
		out = append(out, pub{notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, a, ev.seqnum, ev.readAt, ev.cause), ev.seqnum})
		removedAt[id] = ev.seqnum
		if had := t.blocksOf[id]; lost >= 0 && len(had) > 0 {
			t.shrunk[id] = [2]int{slices.Min(had), slices.Max(had)}
		}
		delete(t.announced, id)
		delete(t.blocksOf, id)
	}
	for id := range t.shrunk {
		if layout.Devices[id] == nil {
			delete(t.shrunk, id)
		}
	}

	// Arrivals.
	ids := sortedKeys(layout.Devices)
	slices.SortFunc(ids, func(a, b string) int {
		return cmp.Compare(layout.Devices[a].Blocks[0], layout.Devices[b].Blocks[0])
	})
	for _, id := range ids {
		d := layout.Devices[id]
		if _, ok := t.announced[id]; ok {
			continue
		}
		if w := t.ready(d, now); w != 0 {
			soonest(w)
			continue
		}
		iface, ok := t.deviceInterface(d)
		if !ok {
			continue
		}
		ev := t.latest(d.Blocks)
		out = append(out, pub{notify.NewNotification(notify.GUIDDeviceInterfaceArrival, iface, ev.seqnum, ev.readAt, ev.cause),
			max(ev.seqnum, removedAt[id])})
		t.announced[id] = iface
		t.blocksOf[id] = slices.Clone(d.Blocks)
		delete(t.shrunk, id)
	}
	// A pending block is read again only once it is online: until then it cannot complete a
	// device, and its coming online (Changed) asks for a read anyway. Reading every device's
	// links every Poll meanwhile took the event loop's CPU while the kernel onlined the block.
	for b := range t.pending {
		if _, ok := t.online[b]; ok {
			soonest(t.o.Poll)
			break
		}
	}
	for b := range t.events {
		if _, ok := t.online[b]; !ok {
			delete(t.events, b) // a removal's event is needed only by the evaluation that follows it
		}
	}
	return wait, nil
}

// ready returns 0 when d may be announced now: all its blocks online, and nothing that could
// still change it: for an ACPI device no block without a known device yet, for virtio-mem no
// block changed within Settle (Shrink after the device shrank). Otherwise it returns how soon
// to look again, or -1 when only a change will tell (a block is not online). t.mu must be held.
func (t *Tracker) ready(d *Device, now time.Time) time.Duration {
	for _, b := range d.Blocks {
		if _, ok := t.online[b]; !ok {
			return -1
		}
	}
	switch d.Kind {
	case KindACPI:
		if len(t.pending) > 0 {
			return t.o.Poll
		}
	case KindVirtioMem:
		// The last change anywhere in its region, blocks that left it included: after a shrink the
		// region is the one it had when it was last announced.
		first, lastBlock, settle := d.First, d.Last, t.o.Settle
		if span, ok := t.shrunk[d.ID]; ok {
			first, lastBlock, settle = min(first, span[0]), max(lastBlock, span[1]), t.o.Shrink
		}
		var last time.Time
		for b, at := range t.changed {
			if b >= first && b <= lastBlock && at.After(last) {
				last = at
			}
		}
		if left := settle - now.Sub(last); !last.IsZero() && left > 0 {
			return left
		}
	}
	return 0
}

// deviceInterface builds the interface of d from its online blocks. t.mu must be held.
func (t *Tracker) deviceInterface(d *Device) (notify.Interface, bool) {
	if len(d.Blocks) == 0 {
		return notify.Interface{}, false
	}
	first := t.online[d.Blocks[0]]
	iface := notify.Interface{
		ClassGUID:    notify.GUIDDeviceMemory,
		SymbolicLink: d.Path,
		Number:       d.Blocks[0],
		Node:         first.Node,
		PhysStart:    first.PhysStart,
		State:        "online",
		Device:       d.ID,
		Blocks:       sysfs.FormatCPUList(d.Blocks),
	}
	for _, b := range d.Blocks {
		iface.Size += t.online[b].Size
	}
	return iface, true
}

// firstLost returns the block among blocks that went first of those not online: one without an
// event (restored, and gone before any event said so: while the agent was down), else the one
// whose event is the oldest (a device's blocks may go in any order: an offline request takes the
// highest first); -1 when all are online. t.mu must be held.
func (t *Tracker) firstLost(blocks []int) int {
	lost := -1
	var first blockEvent
	for _, b := range blocks {
		if _, ok := t.online[b]; ok {
			continue
		}
		e, ok := t.events[b]
		if !ok {
			return b
		}
		if lost < 0 || e.readAt.Before(first.readAt) || (e.readAt.Equal(first.readAt) && e.seqnum < first.seqnum) {
			lost, first = b, e
		}
	}
	return lost
}

// latest returns the newest event among blocks. t.mu must be held.
func (t *Tracker) latest(blocks []int) blockEvent {
	var ev blockEvent
	for _, b := range blocks {
		if e, ok := t.events[b]; ok && e.readAt.After(ev.readAt) {
			ev = e
		}
	}
	if ev.readAt.IsZero() {
		ev = blockEvent{readAt: time.Now(), cause: notify.CauseUevent}
	}
	return ev
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
