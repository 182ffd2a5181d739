// Package headroom computes how much memory this machine can take in one hot-add now without
// running out of kernel memory for the hot-add itself.
//
// When memory is hot-added, Linux allocates its memmap (one struct page, 64 bytes on x86-64, per
// 4 KiB page: 1/64 of the memory added) and its page tables at once, from the kernel memory the
// machine already has, before any uevent and before the new memory can be onlined: a 64 GiB
// DIMM needs 1 GiB of it. The memmap comes out of the added memory itself only where
// memmap_on_memory applies (the memory_hotplug.memmap_on_memory parameter is set and the kernel,
// 6.8 or later, adds the range block by block; 6.1 adds an ACPI DIMM as one range). A hot-add
// whose cost exceeds what the kernel zones hold above their watermarks empties them, and the
// kernel's other allocations send the OOM killer after the machine's processes.
//
// [Compute] is the model, a pure function of parsed inputs ([ParseZoneinfo], [ParseMeminfo], the
// block size, sizeof(struct page), whether memmap_on_memory applies); an [Estimator] reads those
// inputs under a procfs and a sysfs root and computes them at most once a second.
package headroom

import (
	"errors"
	"fmt"
	"math/bits"
)

// DefaultReserve is the kernel memory a hot-add should leave free above the zones' high
// watermarks, for the agent and the rest of the system while the memory is added and onlined.
const DefaultReserve = 64 << 20

// DefaultStructPage is sizeof(struct page) when the kernel does not say (/proc/kcore unreadable):
// 64 bytes on 64-bit kernels without debugging options, on x86-64, arm64 and others.
const DefaultStructPage = 64

// BlockOverhead is the kernel memory a memory block costs at add time besides its memmap and
// page tables: its struct memory_block and sysfs directory, its sections' usage maps, the uevent
// of its add. Measured in QEMU guests (Linux 6.1, 128 MiB blocks, DIMMs of 1 to 20 GiB): see
// TestIntegrationHeadroom and the README's "Memory headroom".
const BlockOverhead = 16 << 10

// AddOverhead is the kernel memory one hot-add costs whatever its size: the resource, the
// firmware memory map entry, the ACPI device, page-table pages at the edges of its range.
const AddOverhead = 1 << 20

// MemmapOnMemory says whether the memmap of hot-added memory comes out of that memory itself.
type MemmapOnMemory struct {
	// Parameter is /sys/module/memory_hotplug/parameters/memmap_on_memory as read: "Y", "N",
	// "force", or "" when the kernel has none.
	Parameter string `json:"parameter"`
	// Applies reports whether the kernel takes the memmap of a hot-added DIMM from the DIMM.
	Applies bool `json:"applies"`
	// Reason says why, in a sentence.
	Reason string `json:"reason"`
}

// Inputs are what the model needs, read by an Estimator or given by a test.
type Inputs struct {
	Zones   []Zone
	Meminfo Meminfo
	// PageSize is the base page size; BlockSize the memory block size (block_size_bytes).
	PageSize, BlockSize uint64
	// StructPage is sizeof(struct page); StructPageSource says where it comes from: "vmcoreinfo"
	// (the kernel's VMCOREINFO note in /proc/kcore) or "assumed" (DefaultStructPage).
	StructPage       uint64
	StructPageSource string
	MemmapOnMemory   MemmapOnMemory
	// Reserve is the kernel memory to leave free for the agent and the system.
	Reserve uint64
	// KernelRelease is /proc/sys/kernel/osrelease, reported as is.
	KernelRelease string
}

// ZoneUse is what one zone can give to a hot-add's kernel allocations.
type ZoneUse struct {
	Zone
	// Kernel reports whether kernel allocations (GFP_KERNEL) may use the zone: every zone but
	// Movable, Device and HighMem.
	Kernel bool `json:"kernel"`
	// FreeBytes is the zone's free memory less its free CMA pages (kernel allocations cannot
	// take those); MinBytes and HighBytes its watermarks; ProtectionBytes the lowmem reserve it
	// keeps from allocations that could use its node's Normal zone.
	FreeBytes       uint64 `json:"free_bytes"`
	MinBytes        uint64 `json:"min_bytes"`
	HighBytes       uint64 `json:"high_bytes"`
	ProtectionBytes uint64 `json:"protection_bytes"`
	// UsableBytes is FreeBytes above HighBytes and ProtectionBytes: what a hot-add may take
	// without pushing the zone into reclaim; 0 for a zone that is not Kernel.
	UsableBytes uint64 `json:"usable_bytes"`
	// LimitBytes is FreeBytes above MinBytes and ProtectionBytes: what the kernel lets the
	// memmap allocations take before they fail and its other allocations call the OOM killer.
	LimitBytes uint64 `json:"limit_bytes"`
}

// Estimate is the headroom and how it was reached; its JSON is the agent's /memory.
type Estimate struct {
	// Headroom is the largest hot-add, in whole memory blocks, whose kernel memory fits in
	// Available: what the machine can take now and keep Reserve free.
	Headroom uint64 `json:"headroom_bytes"`
	// Limit is the largest hot-add whose kernel memory fits in what the kernel zones hold above
	// their min watermarks: a larger one runs the machine out of kernel memory (OOM).
	Limit uint64 `json:"limit_bytes"`
	// BlockSize is the memory block size; hot-adds are whole blocks.
	BlockSize uint64 `json:"block_size_bytes"`
	// BlockCost is the kernel memory one block of hot-added memory takes at add time.
	BlockCost uint64 `json:"kernel_bytes_per_block"`
	// AddCost is the kernel memory a hot-add takes whatever its size (AddOverhead).
	AddCost uint64 `json:"kernel_bytes_per_add"`
	// Usable is the sum of the kernel zones' UsableBytes (above their high watermarks);
	// Available is Usable less Reserve (0 if negative); KernelFree the sum of their LimitBytes
	// (above their min watermarks).
	Usable     uint64 `json:"usable_bytes"`
	Available  uint64 `json:"available_bytes"`
	KernelFree uint64 `json:"kernel_free_bytes"`
	Reserve    uint64 `json:"reserve_bytes"`
	// PageSize, StructPage and StructPageSource: see Inputs.
	PageSize         uint64         `json:"page_size_bytes"`
	StructPage       uint64         `json:"struct_page_bytes"`
	StructPageSource string         `json:"struct_page_source"`
	MemmapOnMemory   MemmapOnMemory `json:"memmap_on_memory"`
	KernelRelease    string         `json:"kernel_release"`
	Meminfo          Meminfo        `json:"meminfo"`
	Zones            []ZoneUse      `json:"zones"`
}

// BlockCost returns the kernel memory one memory block of hot-added memory takes at add time,
// in bytes: its memmap (BlockSize/PageSize struct pages) unless memmap_on_memory applies; the
// page tables that map the memmap, counted as 4 KiB pages (one 8-byte entry per page: the kernel
// maps it with 2 MiB pages when it finds them, else with base pages, which a fragmented machine
// gets); the page tables of the direct map (one entry per 2 MiB, or per 1 GiB where the kernel
// maps memory with 1 GiB pages); and BlockOverhead. It does not block and is safe for concurrent
// use.
func BlockCost(in Inputs) uint64 {
	memmap := in.BlockSize / in.PageSize * in.StructPage
	cost := uint64(BlockOverhead)
	if !in.MemmapOnMemory.Applies {
		cost += memmap
	}
	cost += ceilDiv(memmap, in.PageSize) * 8
	pmd := in.PageSize * (in.PageSize / 8) // what one page-table page maps with base pages: 2 MiB
	if in.Meminfo.DirectMap1G {
		cost += ceilDiv(in.BlockSize, pmd*(in.PageSize/8)) * 8
	} else {
		cost += ceilDiv(in.BlockSize, pmd) * 8
	}
	return cost
}

// Compute returns the headroom of in: the largest hot-add, rounded down to whole blocks, whose
// kernel memory (AddOverhead and BlockCost per block) fits in the kernel zones' memory above
// their high watermarks and lowmem reserves, less in.Reserve; and the limit, the same with the
// min watermarks and no reserve. Zones that kernel allocations cannot use (Movable, Device,
// HighMem) count for neither. The error says which input is unusable. Compute does not block
// and is safe for concurrent use.
func Compute(in Inputs) (Estimate, error) {
	switch {
	case in.PageSize == 0 || in.PageSize&(in.PageSize-1) != 0 || in.PageSize < 8:
		return Estimate{}, fmt.Errorf("headroom: page size %d is not a power of two", in.PageSize)
	case in.BlockSize == 0 || in.BlockSize%in.PageSize != 0:
		return Estimate{}, fmt.Errorf("headroom: block size %d is not a multiple of the page size %d", in.BlockSize, in.PageSize)
	case in.StructPage == 0 || in.StructPage > in.PageSize:
		return Estimate{}, fmt.Errorf("headroom: struct page of %d bytes for pages of %d", in.StructPage, in.PageSize)
	case len(in.Zones) == 0:
		return Estimate{}, errors.New("headroom: no zones")
	}
	e := Estimate{
		BlockSize: in.BlockSize, BlockCost: BlockCost(in), AddCost: AddOverhead, Reserve: in.Reserve,
		PageSize: in.PageSize, StructPage: in.StructPage, StructPageSource: in.StructPageSource,
		MemmapOnMemory: in.MemmapOnMemory, KernelRelease: in.KernelRelease, Meminfo: in.Meminfo,
		Zones: make([]ZoneUse, 0, len(in.Zones)),
	}
	classzone := normalIndexes(in.Zones)
	var usable, limit uint64
	for _, z := range in.Zones {
		u := ZoneUse{Zone: z, Kernel: kernelZone(z.Name)}
		u.FreeBytes = pagesToBytes(z.Free-min(z.FreeCMA, z.Free), in.PageSize)
		u.MinBytes = pagesToBytes(z.Min, in.PageSize)
		u.HighBytes = pagesToBytes(z.High, in.PageSize)
		if i := classzone[z.Node]; i >= 0 && i < len(z.Protection) {
			u.ProtectionBytes = pagesToBytes(z.Protection[i], in.PageSize)
		}
		if u.Kernel {
			u.UsableBytes = subFloor(u.FreeBytes, satAdd(u.HighBytes, u.ProtectionBytes))
			u.LimitBytes = subFloor(u.FreeBytes, satAdd(u.MinBytes, u.ProtectionBytes))
			usable = satAdd(usable, u.UsableBytes)
			limit = satAdd(limit, u.LimitBytes)
		}
		e.Zones = append(e.Zones, u)
	}
	e.Usable = usable
	e.Available = subFloor(usable, in.Reserve)
	e.KernelFree = limit
	e.Headroom = fit(e.Available, e.BlockCost, in.BlockSize)
	e.Limit = fit(e.KernelFree, e.BlockCost, in.BlockSize)
	return e, nil
}

// fit returns the bytes of the most whole blocks of blockSize whose cost, AddOverhead and
// blockCost each, fits in avail.
func fit(avail, blockCost, blockSize uint64) uint64 {
	if avail <= AddOverhead {
		return 0
	}
	blocks := (avail - AddOverhead) / blockCost
	hi, lo := bits.Mul64(blocks, blockSize)
	if hi != 0 {
		return ^uint64(0) / blockSize * blockSize
	}
	return lo
}

// normalIndexes returns, for each node, the index of the zone that kernel allocations start
// from (their highest zone, whose index selects the lowmem reserve that applies): its Normal
// zone, or its highest kernel zone where it has no Normal one; -1 for none.
func normalIndexes(zones []Zone) map[int]int {
	idx := map[int]int{}
	hasNormal := map[int]bool{}
	for _, z := range zones {
		if _, ok := idx[z.Node]; !ok {
			idx[z.Node] = -1
		}
		switch {
		case z.Name == "Normal":
			idx[z.Node], hasNormal[z.Node] = z.Index, true
		case kernelZone(z.Name) && !hasNormal[z.Node] && z.Index > idx[z.Node]:
			idx[z.Node] = z.Index
		}
	}
	return idx
}

// kernelZone reports whether kernel allocations may use a zone of that name.
func kernelZone(name string) bool {
	switch name {
	case "Movable", "Device", "HighMem":
		return false
	}
	return true
}

func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }

func subFloor(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

func satAdd(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return ^uint64(0)
	}
	return s
}

func pagesToBytes(pages, pageSize uint64) uint64 {
	hi, lo := bits.Mul64(pages, pageSize)
	if hi != 0 {
		return ^uint64(0)
	}
	return lo
}
