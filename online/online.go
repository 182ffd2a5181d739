// Package online brings hot-added CPUs and memory blocks online, by policy, so that a machine
// needs no udev rules for it. It acts only on the kernel's own "add" of a device, writes only
// paths it builds from a validated CPU number or block index, checks the state before each write
// (never onlining twice, nor fighting the kernel's own auto-online), onlines the blocks of one
// hot-add in ascending order, and retries a failed online a bounded number of times.
//
// Because the agent is then the one that onlines, it can run the Windows two-phase model around
// the write: AddStart to the two-phase registrations before it (any may veto: the resource stays
// offline), AddComplete or AddFailure after it, and the ordinary arrival only then (the Gate
// holds it back). Under the policy "none", or where the kernel onlines memory itself, the agent
// does not online, and there is no AddStart. The same package takes CPUs and blocks offline or
// online on request (the control socket): a removal asks the target-device registrations first
// (query-remove), then tells them remove-complete or remove-cancelled.
package online

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// The policy values.
const (
	None          = "none"           // leave hot-added resources as the kernel left them
	Online        = "online"         // CPUs: online; memory: online, the kernel picks the zone
	OnlineKernel  = "online_kernel"  // memory: online in ZONE_NORMAL
	OnlineMovable = "online_movable" // memory: online in ZONE_MOVABLE (can be hot-removed again)
	Auto          = "auto"           // memory: follow the kernel's auto_online_blocks
	Planned       = "planned"        // memory: the zone planner decides MOVABLE or KERNEL per device
	Kernel        = "kernel"         // memory: configure the kernel's own onlining (KernelSettings)
)

// The values of Policy.KernelOnline: what the kernel does with hot-added memory under the policy
// Kernel.
const (
	// KernelAutoMovable: auto_online_blocks "online" with the kernel's auto-movable online policy
	// (Linux 5.15 and newer) at Policy.MovableRatio: the planner's rule, applied by the kernel.
	KernelAutoMovable = "auto-movable"
)

// Who onlined a memory block, as Onlined tells it.
const (
	// ByAgent: the agent wrote the block's state (the online policy, or a request).
	ByAgent = "agent"
	// ByKernel: the kernel's auto-online was on (auto_online_blocks not "offline").
	ByKernel = "kernel"
	// ByOther: someone else: a udev rule, daxctl, an administrator.
	ByOther = "other"
)

// Policy says what to do with hot-added resources.
type Policy struct {
	// CPU is None or Online.
	CPU string
	// Memory is None, Online, OnlineKernel, OnlineMovable, Auto, Planned or Kernel. With Auto the
	// agent onlines (as "online") only when the kernel's auto_online_blocks is "offline"; with
	// the others that online, where the kernel onlines blocks itself the agent leaves them to it
	// too, and says so once. With Planned the zone planner decides each block's zone (Plan).
	// With Kernel the agent onlines nothing: it configures the kernel to (KernelSettings).
	Memory string
	// MovableRatio is the planner's MOVABLE:KERNEL ratio in percent, per NUMA node and for the
	// whole machine (Planned, and Kernel with KernelAutoMovable): 0 to MaxMovableRatio.
	MovableRatio int
	// KernelOnline is what the kernel is configured to do under Kernel: KernelAutoMovable,
	// Online, OnlineKernel or OnlineMovable ("" means KernelAutoMovable).
	KernelOnline string
	// Retries bounds the further attempts after a failed online: 0 to MaxRetries.
	Retries int
	// Backoff is the wait before the first retry; it doubles for each further one, up to
	// MaxBackoff. Zero: DefaultBackoff.
	Backoff time.Duration
}

// The bounds of the retries of a failed online. With them, the retries of one resource hold the
// onliner for at most about 21 s (50 ms, 100 ms, ... 3.2 s, then 5 s three times), plus the
// writes themselves.
const (
	// MaxRetries is the most further attempts a Policy may ask for.
	MaxRetries = 10
	// MaxBackoff is the longest wait between two attempts.
	MaxBackoff = 5 * time.Second
	// DefaultBackoff is the wait before the first retry when Policy.Backoff is zero.
	DefaultBackoff = 50 * time.Millisecond
)

// ErrBusy is wrapped by the error of a Request that arrived while the online policy was retrying
// a failed online: it is answered at once rather than after the retries.
var ErrBusy = errors.New("busy")

// retryWait returns the wait after failed attempt number attempt (0 for the first) before the
// next one: base doubled attempt times, at most MaxBackoff, and never negative, however large
// attempt is. A base that is not positive means DefaultBackoff. It does not block.
func retryWait(base time.Duration, attempt int) time.Duration {
	if base <= 0 {
		base = DefaultBackoff
	}
	d := min(base, MaxBackoff)
	for range attempt {
		if d >= MaxBackoff/2 {
			return MaxBackoff
		}
		d *= 2
	}
	return d
}

// Validate reports a policy value that is not one of the above, naming the field.
func (p Policy) Validate() error {
	if p.CPU != "" && p.CPU != None && p.CPU != Online {
		return fmt.Errorf("cpu: %q: want online or none", p.CPU)
	}
	switch p.Memory {
	case "", None, Online, OnlineKernel, OnlineMovable, Auto, Planned, Kernel:
	default:
		return fmt.Errorf("memory: %q: want online, online_kernel, online_movable, auto, planned, kernel or none", p.Memory)
	}
	if p.MovableRatio < 0 || p.MovableRatio > MaxMovableRatio {
		return fmt.Errorf("movable_ratio: %d: want a percentage from 0 to %d (the kernel's default is %d)", p.MovableRatio, MaxMovableRatio, DefaultMovableRatio)
	}
	switch p.KernelOnline {
	case "", KernelAutoMovable, Online, OnlineKernel, OnlineMovable:
	default:
		return fmt.Errorf("kernel_online: %q: want auto-movable, online, online_kernel or online_movable", p.KernelOnline)
	}
	if p.KernelOnline != "" && p.Memory != Kernel {
		return fmt.Errorf("kernel_online: only with memory: kernel")
	}
	if p.Retries < 0 || p.Retries > MaxRetries {
		return fmt.Errorf("retries: %d: want 0 to %d", p.Retries, MaxRetries)
	}
	return nil
}

// Enabled reports whether the policy onlines anything.
func (p Policy) Enabled() bool {
	return p.CPU == Online || p.onlinesMemory()
}

// onlinesMemory reports whether the agent itself onlines hot-added memory blocks.
func (p Policy) onlinesMemory() bool {
	return p.Memory != "" && p.Memory != None && p.Memory != Kernel
}

// Sysfs is what the onliner reads and writes: the subset of sysfs.FS it needs, and a read of a
// memory block without valid_zones (the agent adds it to sysfs.FS).
type Sysfs interface {
	CPU(n int) (sysfs.CPU, error)
	// MemoryBlock reads block n with its valid_zones (read for an online block only): the zone
	// planner counts the zones of the blocks that are online.
	MemoryBlock(n int) (sysfs.MemoryBlock, error)
	// MemoryBlocks reads every block so: the planner's count of the zones without zoneinfo.
	MemoryBlocks() ([]sysfs.MemoryBlock, error)
	// BlockSize is the memory block size in bytes.
	BlockSize() uint64
	// MemoryBlockBasics reads memory block n without its valid_zones (Zones stays ""): Linux
	// 6.1 dereferences a null node in valid_zones_show for a block that is being hot-added
	// (its node is set after the add uevent) and kills the reading thread, so the onliner, which
	// reads a block right after its add, must not read valid_zones.
	MemoryBlockBasics(n int) (sysfs.MemoryBlock, error)
	AutoOnlineBlocks() (string, error)
	SetCPUOnline(n int, online bool) error
	SetMemoryState(n int, state string) error
	// OfflineMemoryBlock takes memory block n offline, as SetMemoryState(n, "offline") does,
	// and stops when ctx ends (sysfs.FS.OfflineMemoryBlock).
	OfflineMemoryBlock(ctx context.Context, n int) error
}

// Observer receives each attempt's outcome: class "processor" or "memory", result "success" or
// "failure", and for a success the time from the add uevent to the resource being online.
type Observer func(class, result string, sinceAdd time.Duration)

// Onliner applies a Policy, and takes CPUs and memory blocks online or offline on request. Add
// queues work and never blocks; Run does it. With Participants, each online it makes is a
// two-phase add (AddStart, which may veto, then AddComplete or AddFailure) and each offline on
// request a target-device removal (query-remove, which may veto, then remove-complete or
// remove-cancelled). One change is made at a time; a request that finds the policy waiting to
// retry a failed online is answered at once with ErrBusy. Safe for concurrent use.
type Onliner struct {
	p       atomic.Pointer[Policy] // replaced whole by SetPolicy
	fs      Sysfs
	log     *slog.Logger
	observe Observer

	changes *notify.ChangeRegistry // nil: no two-phase participants
	targets *notify.TargetRegistry // nil: no target-device participants
	gate    *Gate                  // nil: notifications are not held back

	op chan struct{} // capacity 1: held while one change is made

	releaseAfter time.Duration // see the const releaseAfter; tests lengthen it

	planner PlannerSources // the zone planner's sources (Planned); set before Run
	viewMu  sync.Mutex     // held while the planner reads the machine (Run and requests)

	mu      sync.Mutex
	pending []item
	wake    chan struct{}
	// hotAdded are the blocks the kernel added since it booted, as far as the agent knows (while
	// it ran, and before: SetMemoryOrigin): not boot memory, for the planner, however long they
	// have been online. lastAdd is when the last of them was added. unclaimed are those the
	// kernel added while the agent ran whose first arrival Onlined has not attributed yet:
	// another onliner that brings one online does what the policy would have. A block leaves
	// both when the kernel removes it (RemovedMemoryBlock).
	hotAdded  map[int]bool
	lastAdd   time.Time
	unclaimed map[int]bool
	// boot are the blocks counted as boot memory (SetMemoryOrigin), sorted, less those removed or
	// added again since: for the state file, which tells the next start of the same boot.
	boot []int
	// ours are the blocks the agent onlined whose arrival Onlined has not attributed yet.
	ours map[int]bool
	// conflicts are the other onliners already logged as onlining memory the policy would have.
	conflicts map[string]bool
	// viewFailed: the planner could not read the machine last time (logged once until it can).
	viewFailed bool
	// zoneinfoMissing: the planner counted blocks for want of /proc/zoneinfo (logged once).
	zoneinfoMissing bool
	// retrying describes the retry the change in progress waits for ("" when it waits for
	// none); retryBegan is closed, and replaced, each time such a wait begins. Both change only
	// while op is held.
	retrying   string
	retryBegan chan struct{}
}

type item struct {
	memory bool
	n      int
	seqnum uint64
	added  time.Time
}

// New returns an Onliner for p (which must be valid). observe may be nil.
func New(p Policy, fs Sysfs, log *slog.Logger, observe Observer) *Onliner {
	if p.Backoff <= 0 {
		p.Backoff = DefaultBackoff
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if observe == nil {
		observe = func(string, string, time.Duration) {}
	}
	o := &Onliner{fs: fs, log: log, observe: observe, wake: make(chan struct{}, 1), op: make(chan struct{}, 1),
		releaseAfter: releaseAfter, retryBegan: make(chan struct{}), hotAdded: map[int]bool{}, unclaimed: map[int]bool{}, ours: map[int]bool{}, conflicts: map[string]bool{}}
	o.p.Store(&p)
	return o
}

// SetPolicy makes p (which must be valid) the policy for what is queued from now on, and for
// the attempts of changes already under way from their next one (a configuration reload). It
// does not block and is safe for concurrent use.
func (o *Onliner) SetPolicy(p Policy) {
	if p.Backoff <= 0 {
		p.Backoff = DefaultBackoff
	}
	o.p.Store(&p)
}

// Policy returns the policy in force. It does not block and is safe for concurrent use.
func (o *Onliner) Policy() Policy { return *o.p.Load() }

// Participants are who takes part in the changes the onliner makes. Each field may be nil.
type Participants struct {
	// Changes holds the two-phase registrations: an online is begun and ended through it.
	Changes *notify.ChangeRegistry
	// Targets holds the target-device registrations: an offline on request is queried and ended
	// through it.
	Targets *notify.TargetRegistry
	// Gate holds back the notifications of the interface being changed until the participants
	// have been told the outcome.
	Gate *Gate
}

// SetParticipants sets who takes part in the changes. Call it before Run and before any
// Request; it does not block.
func (o *Onliner) SetParticipants(p Participants) {
	o.changes, o.targets, o.gate = p.Changes, p.Targets, p.Gate
}

// SetPlanner sets what the zone planner reads (the policy Planned). Call it before Run; it does
// not block.
func (o *Onliner) SetPlanner(p PlannerSources) {
	if p.DeviceWait <= 0 {
		p.DeviceWait = DefaultDeviceWait
	}
	o.planner = p
}

// AddCPU queues CPU n, reported added by the kernel's add uevent seqnum, read at time added. It
// never blocks. Under the policy "none" it does nothing: the agent does not online the CPU, so no
// two-phase add happens either.
func (o *Onliner) AddCPU(n int, seqnum uint64, added time.Time) {
	if o.p.Load().CPU == Online {
		o.push(item{n: n, seqnum: seqnum, added: added})
	}
}

// AddMemoryBlock queues memory block n, reported added by the kernel's add uevent seqnum, read
// at time added. It never blocks. Under the policies "none" and "kernel" it only notes that the
// block is hot-added memory.
func (o *Onliner) AddMemoryBlock(n int, seqnum uint64, added time.Time) {
	o.mu.Lock()
	o.hotAdded[n] = true
	o.unclaimed[n] = true
	o.lastAdd = time.Now()
	o.boot = without(o.boot, n)
	o.mu.Unlock()
	if o.p.Load().onlinesMemory() {
		o.push(item{memory: true, n: n, seqnum: seqnum, added: added})
	}
}

// RemovedMemoryBlock notes that the kernel removed memory block n. It never blocks.
func (o *Onliner) RemovedMemoryBlock(n int) {
	o.mu.Lock()
	delete(o.hotAdded, n)
	delete(o.unclaimed, n)
	delete(o.ours, n)
	o.boot = without(o.boot, n)
	o.mu.Unlock()
}

// SetMemoryOrigin tells where the memory blocks present at the agent's start come from: boot
// are boot memory, hotAdded were hot-added since the kernel booted, before the agent started (a
// restart within one boot: the state file says which). The planner counts hotAdded as hot-added
// memory, as the blocks AddMemoryBlock is told of, but does not queue them: they are not
// onlined. Call it before Run; it does not block.
func (o *Onliner) SetMemoryOrigin(boot, hotAdded []int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, n := range hotAdded {
		o.hotAdded[n] = true
	}
	o.boot = slices.Compact(slices.Sorted(slices.Values(boot)))
}

// BootMemory returns the memory blocks counted as boot memory, sorted: those SetMemoryOrigin
// named, less those removed or hot-added again since. It does not block and is safe for
// concurrent use.
func (o *Onliner) BootMemory() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.boot)
}

// without returns sorted with n removed, in place.
func without(sorted []int, n int) []int {
	if i, found := slices.BinarySearch(sorted, n); found {
		return slices.Delete(sorted, i, i+1)
	}
	return sorted
}

func (o *Onliner) push(it item) {
	o.mu.Lock()
	o.pending = append(o.pending, it)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// devicePoll is how often the planner looks again for the device of blocks that wait for it.
const devicePoll = 10 * time.Millisecond

// The arrivals of memory blocks the onliner wrote are held back (Gate) and released together:
// when the round ends, releaseAfter after the first of them was written, or at releaseBlocks of
// them, whichever comes first, and before a retry's wait. The writes of a hot-add then follow one
// another, and the work of announcing their arrivals (the event stream, the callbacks, the memory
// device's grouping) is done for several blocks at once rather than between two writes.
const (
	releaseAfter  = 100 * time.Millisecond
	releaseBlocks = 64
)

// Run onlines queued resources until ctx ends. Each round takes everything queued so far and
// handles it in ascending order, CPUs first, then memory blocks; under the policy Planned, a
// block whose device the kernel has not linked yet waits for it (PlannerSources.DeviceWait).
// The arrivals of the blocks it brought online are released as releaseAfter says. It blocks;
// call it once.
func (o *Onliner) Run(ctx context.Context) error {
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-o.wake:
		case <-retry:
		}
		retry = nil
		o.mu.Lock()
		batch := o.pending
		o.pending = nil
		o.mu.Unlock()
		slices.SortStableFunc(batch, func(a, b item) int {
			if a.memory != b.memory {
				if a.memory {
					return 1
				}
				return -1
			}
			return a.n - b.n
		})
		round := &planRound{}
		var later []item
		for _, it := range batch {
			if ctx.Err() != nil {
				break
			}
			if o.handle(ctx, it, round) {
				later = append(later, it)
			}
		}
		o.settle(round)
		o.logRound(round)
		if ctx.Err() != nil {
			return nil
		}
		if len(later) > 0 {
			o.mu.Lock()
			o.pending = append(later, o.pending...)
			o.mu.Unlock()
			retry = time.After(devicePoll)
		}
	}
}

// lock takes the change lock, or returns ctx's error.
func (o *Onliner) lock(ctx context.Context) error {
	select {
	case o.op <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (o *Onliner) unlock() { <-o.op }

// lockForRequest takes the change lock for a request, or returns ctx's error, or an error
// wrapping ErrBusy as soon as the change in progress waits to retry a failed online: a request
// waits for a change, not for the policy's retries.
func (o *Onliner) lockForRequest(ctx context.Context) error {
	for {
		o.mu.Lock()
		retrying, began := o.retrying, o.retryBegan
		o.mu.Unlock()
		if retrying != "" {
			select {
			case o.op <- struct{}{}:
				return nil
			default:
				return fmt.Errorf("%w: the online policy is retrying %s; try again", ErrBusy, retrying)
			}
		}
		select {
		case o.op <- struct{}{}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-began:
		}
	}
}

// waitRetry waits d before the next attempt at what, telling requests meanwhile (see
// lockForRequest). It returns ctx's error if ctx ends first. o.op must be held.
func (o *Onliner) waitRetry(ctx context.Context, what string, attempt int, d time.Duration) error {
	o.mu.Lock()
	o.retrying = fmt.Sprintf("%s (attempt %d of %d failed; the next in %s)", what, attempt+1, o.p.Load().Retries+1, d)
	close(o.retryBegan)
	o.retryBegan = make(chan struct{})
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		o.retrying = ""
		o.mu.Unlock()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// handle onlines one resource unless it is online already or the policy leaves it to the kernel.
// It returns true when the block must wait for its device (the planner), having done nothing.
func (o *Onliner) handle(ctx context.Context, it item, round *planRound) (wait bool) {
	class, what := "processor", fmt.Sprintf("cpu%d", it.n)
	if it.memory {
		class, what = "memory", fmt.Sprintf("memory%d", it.n)
	}
	p := o.p.Load()
	if it.memory {
		if !p.onlinesMemory() {
			return false // the policy changed since the block was queued
		}
		auto, err := round.autoOnline(o.fs.AutoOnlineBlocks)
		switch {
		case err != nil && p.Memory == Auto:
			o.log.Warn("online policy: cannot read auto_online_blocks; leaving the block to the kernel", "block", it.n, "err", err)
			return false
		case err == nil && strings.TrimSpace(auto) != "offline":
			// The kernel onlines hot-added memory itself: never race it.
			if p.Memory == Auto {
				o.log.Debug("online policy: the kernel onlines hot-added memory itself", "block", it.n, "auto_online_blocks", auto)
			} else {
				o.conflict(ByKernel, it.n, "auto_online_blocks", strings.TrimSpace(auto))
			}
			return false
		}
		if p.Memory == Planned && o.waitForDevice(it.n, round) {
			return true
		}
	}
	if !it.memory {
		if o.lock(ctx) != nil {
			return false
		}
		defer o.unlock()
	} else if !round.locked {
		if o.lock(ctx) != nil {
			return false
		}
		round.locked = true // until settle
	}
	iface, online, err := o.read(it.memory, it.n)
	if err != nil {
		o.log.Warn("online policy: cannot read state; giving up", "device", what, "err", err)
		o.observe(class, "failure", 0)
		return false
	}
	if online {
		o.log.Debug("online policy: already online", "device", what)
		return false
	}
	var state string // what to write to a memory block's state file
	var plan *planned
	if it.memory {
		switch p.Memory {
		case Auto:
			state = Online
		case Planned:
			plan = o.plan(round, p.MovableRatio, it.n, iface.Node)
			state = plan.zone.State()
		default:
			state = p.Memory
		}
	}
	var add *notify.Add
	if o.changes != nil {
		if len(round.owed) > 0 && len(o.changes.Entries()) > 0 {
			o.releaseOwed(round) // AddStart may take a participant's time: the blocks before need not wait for it
		}
		if add, err = o.changes.Begin(ctx, iface, it.seqnum, it.added, notify.CauseUevent); err != nil {
			if _, vetoed := errors.AsType[*notify.VetoError](err); vetoed {
				o.log.Warn("online policy: add vetoed; leaving it offline", "device", what, "err", err)
			}
			return false
		}
	}
	// The gate holds the arrival back until the write has returned and AddComplete is out. A CPU's
	// is held only for the registrations that got AddStart: without one nothing is to come
	// first, and the arrival goes out as soon as its uevent is handled, not once the kernel has
	// finished the write and the onliner has run again. A memory block's arrivals are released
	// together with the round's (settle), whoever takes part.
	held := it.memory || add != nil && add.Participants() > 0
	if held {
		o.gate.hold(iface.SymbolicLink, true)
	}
	wrote, err := o.onlineWithRetries(ctx, it, class, what, state, plan, round)
	if add != nil {
		if err != nil {
			add.Fail(err)
		} else {
			add.Complete()
		}
	}
	if !it.memory {
		if held {
			o.gate.release(iface.SymbolicLink, err == nil)
		}
		// Logged once the arrival is on its way: it does not wait for the log's write (a serial
		// console, in a guest, takes milliseconds).
		if wrote > 0 {
			o.log.Info("online policy: brought online", "device", what, "state", state, "attempt", wrote)
		}
		return false
	}
	if len(round.owed) == 0 {
		round.owedSince = time.Now()
	}
	round.owed = append(round.owed, owedRelease{iface.SymbolicLink, err == nil})
	if len(round.owed) >= releaseBlocks || time.Since(round.owedSince) >= o.releaseAfter {
		o.settle(round)
	}
	return false
}

// releaseOwed releases the gate holds of the memory blocks round wrote, in the order of the
// writes: their arrivals are published. It does not block on callbacks.
func (o *Onliner) releaseOwed(round *planRound) {
	for _, r := range round.owed {
		o.gate.release(r.link, r.changed)
	}
	round.owed = round.owed[:0]
}

// settle releases what round owes (releaseOwed) and the change lock it holds for it, so that a
// request waits for at most releaseBlocks writes, or releaseAfter, not for a whole hot-add.
func (o *Onliner) settle(round *planRound) {
	o.releaseOwed(round)
	if round.locked {
		round.locked = false
		o.unlock()
	}
}

// onlineWithRetries writes the online state, retrying a failed write. It returns nil once the
// resource is online (by its write or anyone's), else the last error, and the attempt (from 1)
// whose write brought it online, 0 when none did. A write that fails because another onliner
// brought the block online meanwhile is not a failure: the block is left to it.
func (o *Onliner) onlineWithRetries(ctx context.Context, it item, class, what, state string, plan *planned, round *planRound) (int, error) {
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			online, err := o.isOnline(it)
			if err != nil {
				o.log.Warn("online policy: cannot read state; giving up", "device", what, "err", err)
				o.observe(class, "failure", 0)
				return 0, err
			}
			if online {
				o.log.Debug("online policy: already online", "device", what, "attempt", attempt+1)
				return 0, nil
			}
		}
		var err error
		if it.memory {
			err = o.fs.SetMemoryState(it.n, state)
		} else {
			err = o.fs.SetCPUOnline(it.n, true)
		}
		if err == nil {
			o.observe(class, "success", time.Since(it.added))
			if !it.memory {
				return attempt + 1, nil // logged by the caller, after the gate's release
			}
			o.onlinedByUs(it.n)
			var planAttrs []any
			if plan != nil {
				planAttrs = o.planDone(plan)
			}
			// A block's line is for debugging; the round's line (logRound) says what came online.
			// Guarded: its attributes cost allocations for each block of a hot-add.
			if o.log.Enabled(ctx, slog.LevelDebug) {
				o.log.Debug("online policy: brought online", append([]any{"device", what, "state", state, "attempt", attempt + 1}, planAttrs...)...)
			}
			round.brought(state, it.n)
			return attempt + 1, nil
		}
		// Another onliner (the kernel, a udev rule) may have won the race: leave it the block.
		if online, rerr := o.isOnline(it); rerr == nil && online {
			o.log.Debug("online policy: brought online by another meanwhile", "device", what, "err", err)
			return 0, nil
		}
		o.observe(class, "failure", 0)
		if attempt >= o.p.Load().Retries {
			o.log.Error("online policy: could not bring online", "device", what, "attempts", attempt+1, "err", err)
			return 0, err
		}
		wait := retryWait(o.p.Load().Backoff, attempt)
		o.releaseOwed(round) // the blocks written before do not wait for this one's retries
		o.log.Warn("online policy: online failed; retrying", "device", what, "attempt", attempt+1, "backoff", wait, "err", err)
		if werr := o.waitRetry(ctx, what, attempt, wait); werr != nil {
			return 0, fmt.Errorf("online %s: %w (after: %w)", what, werr, err)
		}
	}
}

// logRound logs, once per state written, the memory blocks round brought online: "online
// policy: brought memory online" with the blocks as a list of ranges and their count.
func (o *Onliner) logRound(round *planRound) {
	for _, state := range slices.Sorted(maps.Keys(round.onlined)) {
		blocks := slices.Sorted(slices.Values(round.onlined[state]))
		o.log.Info("online policy: brought memory online", "blocks", sysfs.FormatCPUList(blocks),
			"count", len(blocks), "state", state)
	}
}

// read returns the interface of CPU or memory block n as sysfs shows it, and whether it is online.
func (o *Onliner) read(memory bool, n int) (notify.Interface, bool, error) {
	if memory {
		b, err := o.fs.MemoryBlockBasics(n)
		if err != nil {
			return notify.Interface{}, false, err
		}
		return state.MemoryInterface(b), b.Online(), nil
	}
	c, err := o.fs.CPU(n)
	if err != nil {
		return notify.Interface{}, false, err
	}
	return state.CPUInterface(c), c.Online, nil
}

func (o *Onliner) isOnline(it item) (bool, error) {
	if it.memory {
		b, err := o.fs.MemoryBlockBasics(it.n)
		return b.Online(), err
	}
	c, err := o.fs.CPU(it.n)
	return c.Online, err
}
