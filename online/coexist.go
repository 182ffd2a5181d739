package online

import (
	"maps"
	"strings"
	"time"
)

// planRound is what one round of the onliner reads once and keeps: the planner's view of the
// machine (read at the round's first planned block, then kept up to date with the round's
// onlines), the kernel's auto_online_blocks, and the arrivals it still holds back.
type planRound struct {
	view *planView
	read bool // view was read (it may be nil: the read failed)
	// onlined are the memory blocks the round brought online, by the state written, for the
	// round's one log line (a hot-add of 32 GiB is 256 blocks: a line each would cost the
	// journal more than the writes cost the kernel).
	onlined map[string][]int

	// auto and autoErr are auto_online_blocks as the round's first memory block read it
	// (autoRead): a round is one hot-add, read once rather than once per block.
	auto     string
	autoErr  error
	autoRead bool

	// locked: the round holds the change lock (o.op) for the memory blocks it wrote and whose
	// notifications the gate still holds back (owed, the first owed since owedSince). See settle.
	locked    bool
	owed      []owedRelease
	owedSince time.Time
}

// owedRelease is a memory block's gate hold that the round ends later (see Onliner.settle).
type owedRelease struct {
	link    string
	changed bool
}

// autoOnline returns auto_online_blocks, read at the round's first call.
func (r *planRound) autoOnline(read func() (string, error)) (string, error) {
	if !r.autoRead {
		r.auto, r.autoErr = read()
		r.autoRead = true
	}
	return r.auto, r.autoErr
}

// brought records that the round brought memory block n online by writing state.
func (r *planRound) brought(state string, n int) {
	if r.onlined == nil {
		r.onlined = map[string][]int{}
	}
	r.onlined[state] = append(r.onlined[state], n)
}

// planned is one decision of the planner, for the log line of the online and its metrics.
type planned struct {
	round *planRound
	n     int
	node  int
	zone  Zone
	kind  string // the device's kind, "none" for a block of no device
	id    string
}

// viewFor returns the round's view, reading it the first time.
func (o *Onliner) viewFor(round *planRound) *planView {
	if round.read {
		return round.view
	}
	round.read = true
	o.mu.Lock()
	hot := maps.Clone(o.hotAdded)
	o.mu.Unlock()
	o.viewMu.Lock() // the layout's reader is not safe for concurrent use
	v, err := o.readView(hot)
	o.viewMu.Unlock()
	o.mu.Lock()
	failed := o.viewFailed
	o.viewFailed = err != nil
	o.mu.Unlock()
	switch {
	case err != nil && !failed:
		o.log.Warn("zone planner: cannot read the machine's memory; onlining into the kernel zones until it can", "err", err)
	case err == nil && failed:
		o.log.Info("zone planner: reads the machine's memory again")
	}
	round.view = v
	return v
}

// waitForDevice reports whether block n must wait for the kernel to link it to its device: it
// belongs to no device the planner knows, and the kernel added a block less than DeviceWait ago.
func (o *Onliner) waitForDevice(n int, round *planRound) bool {
	if o.planner.Layout == nil {
		return false
	}
	v := o.viewFor(round)
	if v == nil || v.deviceOf(n) != "" {
		return false
	}
	o.mu.Lock()
	last := o.lastAdd
	o.mu.Unlock()
	return time.Since(last) < o.planner.DeviceWait
}

// plan decides the zone of block n on node (-1: not known) under ratio. Without a view of the
// machine it is KERNEL: never a zone imbalance.
func (o *Onliner) plan(round *planRound, ratio, n, node int) *planned {
	p := &planned{round: round, n: n, node: node, zone: ZoneKernel, kind: "none"}
	if v := o.viewFor(round); v != nil {
		p.zone, p.kind = v.decide(ratio, n, node)
		p.id = v.deviceOf(n)
	}
	return p
}

// planDone records that the planned block went online as decided, and returns the attributes
// that describe the decision in the online's log line.
func (o *Onliner) planDone(p *planned) []any {
	if v := p.round.view; v != nil {
		v.onlined(p.n, p.node, p.zone)
	}
	if o.planner.Decided != nil {
		o.planner.Decided(p.kind, p.zone)
	}
	attrs := []any{"zone", p.zone.String(), "memory_device", p.id}
	if v := p.round.view; v != nil {
		attrs = append(attrs, "movable_pages", v.machine.Movable, "early_kernel_pages", v.machine.EarlyKernel)
	}
	return attrs
}

// onlinedByUs notes that the agent brought memory block n online.
func (o *Onliner) onlinedByUs(n int) {
	o.mu.Lock()
	o.ours[n] = true
	o.mu.Unlock()
}

// Onlined tells who brought memory block n online, for its arrival: ByAgent when the agent wrote
// its state, ByKernel when the kernel's auto-online is on (auto_online_blocks is not "offline"),
// ByOther otherwise (a udev rule, daxctl, an administrator). When the block was hot-added and the
// memory policy would have onlined it itself, another onliner is a conflict, logged once per
// onliner: the agent never fights it. Onlined reads auto_online_blocks (one small sysfs file) and
// is safe for concurrent use.
func (o *Onliner) Onlined(n int) string {
	o.mu.Lock()
	ours, hot := o.ours[n], o.unclaimed[n]
	delete(o.ours, n)
	delete(o.unclaimed, n) // still hot-added memory for the planner (hotAdded), until removed
	o.mu.Unlock()
	if ours {
		return ByAgent
	}
	by, auto := ByOther, ""
	if a, err := o.fs.AutoOnlineBlocks(); err == nil && strings.TrimSpace(a) != "offline" {
		by, auto = ByKernel, strings.TrimSpace(a)
	}
	if p := o.p.Load(); hot && p.onlinesMemory() && !(by == ByKernel && p.Memory == Auto) {
		if by == ByKernel {
			o.conflict(by, n, "auto_online_blocks", auto)
		} else {
			o.conflict(by, n)
		}
	}
	return by
}

// conflict logs, once per onliner, that another onliner brought hot-added memory online (or
// would), which the policy would have onlined: the agent leaves such blocks to it.
func (o *Onliner) conflict(by string, n int, attrs ...any) {
	o.mu.Lock()
	seen := o.conflicts[by]
	o.conflicts[by] = true
	o.mu.Unlock()
	if seen {
		return
	}
	hint := "a udev rule, daxctl or an administrator onlines hot-added memory: remove that rule, or set online.memory: none"
	if by == ByKernel {
		hint = "set auto_online_blocks to offline (memhp_default_state=offline), or online.memory: auto or kernel"
	}
	all := []any{"onliner", by}
	if n >= 0 {
		all = append(all, "block", n)
	}
	all = append(append(all, attrs...), "policy", o.p.Load().Memory, "hint", hint)
	o.log.Warn("online policy: another onliner brings hot-added memory online; the agent leaves it those blocks", all...)
}

// CheckOthers logs, once, when the kernel onlines hot-added memory itself although the memory
// policy would online it: the agent will leave memory to the kernel. Call it at start and after
// a reload. It reads auto_online_blocks and is safe for concurrent use.
func (o *Onliner) CheckOthers() {
	if !o.p.Load().onlinesMemory() || o.p.Load().Memory == Auto {
		return
	}
	if a, err := o.fs.AutoOnlineBlocks(); err == nil && strings.TrimSpace(a) != "offline" {
		o.conflict(ByKernel, -1, "auto_online_blocks", strings.TrimSpace(a))
	}
}
