package online

// The zone planner: the decision of the kernel's "auto-movable" online policy
// (mm/memory_hotplug.c, auto_movable_zone_for_pfn; Documentation/admin-guide/mm/memory-hotplug.rst),
// made by the agent, which knows the memory devices as the kernel's memory groups do.
//
// Memory in ZONE_MOVABLE can be offlined, so unplugged, again; memory in a kernel zone (DMA,
// DMA32, Normal) mostly cannot, but only the kernel zones serve unmovable allocations (the memory
// map, 1/64 of all memory, page tables, slab). Too much MOVABLE for the KERNEL beside it is a zone
// imbalance, and the kernel runs out of memory with MOVABLE memory free. The planner onlines
// memory MOVABLE as long as MOVABLE stays within a ratio of KERNEL, per NUMA node and for the
// whole machine, and KERNEL otherwise:
//
//   - KERNEL is the kernel zones' present pages that were there at boot (the kernel's
//     KERNEL_EARLY): memory hot-added into a kernel zone may be unplugged again, so it does not
//     allow more MOVABLE memory, except within its own dynamic device (below).
//   - A static device (an ACPI DIMM, all of whose blocks come and go together) goes all one way:
//     MOVABLE only when all of it fits, and KERNEL for the rest once any of it is KERNEL.
//   - A dynamic device (virtio-mem, which plugs and unplugs block by block) is decided block by
//     block, and its own KERNEL blocks allow more MOVABLE blocks within it: KERNEL, then ratio
//     times as much MOVABLE, and so on. What the other dynamic devices' MOVABLE memory needs
//     beyond their own KERNEL memory is taken from the boot KERNEL before anything else is
//     decided, and their MOVABLE pages are not counted.
//   - A block of no known device is decided alone.

// Zone is where the planner puts a memory block.
type Zone int

// The zones the planner chooses between.
const (
	// ZoneKernel is the kernel zone the kernel picks for the block (written as online_kernel).
	ZoneKernel Zone = iota
	// ZoneMovable is ZONE_MOVABLE (written as online_movable).
	ZoneMovable
)

// String returns "kernel" or "movable", the label values of the planner's metrics.
func (z Zone) String() string {
	if z == ZoneMovable {
		return "movable"
	}
	return "kernel"
}

// State returns what is written to a block's state file to online it in z.
func (z Zone) State() string {
	if z == ZoneMovable {
		return OnlineMovable
	}
	return OnlineKernel
}

// DefaultMovableRatio is the MOVABLE:KERNEL ratio, in percent, of the planner when the
// configuration gives none: the kernel's default auto_movable_ratio (3:1, and 1% for the pages
// firmware keeps).
const DefaultMovableRatio = 301

// MaxMovableRatio bounds the ratio a configuration may ask for: the memory map alone takes 1/64
// of all memory from the kernel zones, so a ratio of 63:1 cannot work, and anything near it
// fails under any load.
const MaxMovableRatio = 3000

// DevicePages are the present (online) pages of one memory device in each kind of zone.
type DevicePages struct {
	Movable, Kernel uint64
}

// Scope is the memory of the whole machine or of one NUMA node, as the planner counts it.
type Scope struct {
	// EarlyKernel is the present pages of the kernel zones that were there at boot: the kernel
	// zones' present pages minus those of hot-added blocks onlined into them.
	EarlyKernel uint64
	// Movable is the present pages of ZONE_MOVABLE.
	Movable uint64
	// Dynamic are the dynamic devices (virtio-mem) with memory in the scope, by device id.
	Dynamic map[string]DevicePages
}

// DeviceKind says how a device's memory is decided.
type DeviceKind int

// The kinds of device the planner knows.
const (
	// NoDevice is a block that belongs to no known device: decided alone.
	NoDevice DeviceKind = iota
	// StaticDevice is an ACPI memory device (a DIMM): decided whole.
	StaticDevice
	// DynamicDevice is a virtio-mem device: decided block by block.
	DynamicDevice
)

// Target is what is to be onlined: a block, and the device it belongs to.
type Target struct {
	Kind DeviceKind
	// ID is the device's id (memdev.Device.ID); for a dynamic device, its key in Scope.Dynamic.
	ID string
	// Online are the device's pages online now.
	Online DevicePages
	// Size is a static device's pages, online or not.
	Size uint64
	// Block is the pages of the block to online.
	Block uint64
}

// Plan returns the zone for t's block, given the ratio (MOVABLE:KERNEL in percent; 0 or less:
// always KERNEL) and the scopes whose ratio it must keep: the whole machine and the block's node.
// It is the kernel's auto_movable_zone_for_pfn in integer page arithmetic as the kernel does it,
// so that on the same machine it decides as the kernel's auto-movable policy would. It does not
// block and is safe for concurrent use.
func Plan(ratio int, t Target, scopes ...Scope) Zone {
	if ratio <= 0 {
		return ZoneKernel
	}
	nr := t.Block
	if t.Kind == StaticDevice {
		// If anything of the device is KERNEL, the rest is KERNEL: it cannot be unplugged anyway.
		if t.Online.Kernel > 0 {
			return ZoneKernel
		}
		// Online MOVABLE if all of the device that is not online yet could be.
		nr = 0
		if t.Size > t.Online.Movable {
			nr = t.Size - t.Online.Movable
		}
	}
	for _, s := range scopes {
		if !canOnlineMovable(uint64(ratio), s, t, nr) {
			return ZoneKernel
		}
	}
	return ZoneMovable
}

// canOnlineMovable reports whether nr more MOVABLE pages keep s within ratio (the kernel's
// auto_movable_can_online_movable).
func canOnlineMovable(ratio uint64, s Scope, t Target, nr uint64) bool {
	kernel, movable := s.EarlyKernel, s.Movable
	// The other dynamic devices: what their MOVABLE memory needs beyond their own KERNEL memory
	// comes off the boot KERNEL, and their MOVABLE memory is theirs.
	var req, theirs uint64
	for id, d := range s.Dynamic {
		if t.Kind == DynamicDevice && id == t.ID {
			continue
		}
		if need := d.Movable * 100 / ratio; need > d.Kernel {
			req += need - d.Kernel
		}
		theirs += d.Movable
	}
	if kernel <= req {
		return false
	}
	kernel -= req
	movable -= min(theirs, movable)
	if t.Kind == DynamicDevice {
		// Its own KERNEL memory allows more MOVABLE memory within it.
		kernel += t.Online.Kernel
	}
	return movable+nr <= ratio*kernel/100
}
