package headroom

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	mib   = 1 << 20
	block = 128 * mib
)

func TestBlockCost(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   Inputs
		want uint64
	}{
		// memmap 2 MiB, its page tables at worst 512 PTEs, the direct map 64 PMD entries.
		{"x86-64, 128 MiB blocks, 2 MiB direct map", Inputs{PageSize: 4096, BlockSize: block, StructPage: 64}, 2*mib + BlockOverhead + 4096 + 512},
		{"1 GiB direct map", Inputs{PageSize: 4096, BlockSize: block, StructPage: 64, Meminfo: Meminfo{DirectMap1G: true}}, 2*mib + BlockOverhead + 4096 + 8},
		{"memmap on memory", Inputs{PageSize: 4096, BlockSize: block, StructPage: 64, MemmapOnMemory: MemmapOnMemory{Applies: true}}, BlockOverhead + 4096 + 512},
		{"struct page of 56 bytes", Inputs{PageSize: 4096, BlockSize: block, StructPage: 56}, 1835008 + BlockOverhead + 3584 + 512},
		{"2 GiB blocks", Inputs{PageSize: 4096, BlockSize: 2 << 30, StructPage: 64}, 32*mib + BlockOverhead + 65536 + 8192},
		{"64 KiB pages, 512 MiB blocks", Inputs{PageSize: 64 << 10, BlockSize: 512 * mib, StructPage: 64}, 512<<10 + BlockOverhead + 64 + 8},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := BlockCost(tt.in); got != tt.want {
				t.Errorf("BlockCost = %d; want %d", got, tt.want)
			}
		})
	}
}

// TestComputeCaptures: the headroom of real machines, against figures worked out apart from
// the code (kernel zones' free pages above high (min) and the Normal lowmem reserve, less the
// reserve, less AddOverhead, over BlockCost, in whole blocks).
func TestComputeCaptures(t *testing.T) {
	for _, tt := range []struct {
		capture                                string
		headroom, limit, available, kernelFree uint64
	}{
		// 7.0 GiB free in DMA32 and Normal; DMA keeps its 15 MiB from Normal allocations.
		{"host", 374870114304, 381312565248, 5983354880 - DefaultReserve, 6017892352},
		// The guest at boot: 345 MiB of DMA32, 17.2 GiB of headroom.
		{"guest-512M-boot", 18522046464, 22817013760, 361668608 - DefaultReserve, 362913792},
		// Halfway through the memmap of a 17 GiB DIMM.
		{"guest-512M-adding", 4563402752, 8858370048, 140193792 - DefaultReserve, 141438976},
		// Once it is online (movable): the new memory counts for nothing, one block is left.
		{"guest-512M-after-17G", 134217728, 4563402752, 72306688 - DefaultReserve, 73117696},
	} {
		t.Run(tt.capture, func(t *testing.T) {
			zones, err := ParseZoneinfo(readTestdata(t, "zoneinfo-"+tt.capture))
			if err != nil {
				t.Fatal(err)
			}
			mem, err := ParseMeminfo(readTestdata(t, "meminfo-"+tt.capture))
			if err != nil {
				t.Fatal(err)
			}
			e, err := Compute(Inputs{Zones: zones, Meminfo: mem, PageSize: 4096, BlockSize: block, StructPage: 64, Reserve: DefaultReserve})
			if err != nil {
				t.Fatal(err)
			}
			got := [4]uint64{e.Headroom, e.Limit, e.Available, e.KernelFree}
			want := [4]uint64{tt.headroom, tt.limit, tt.available, tt.kernelFree}
			if got != want {
				t.Errorf("headroom, limit, available, kernel free = %d; want %d", got, want)
			}
			for _, z := range e.Zones {
				if !z.Kernel && (z.UsableBytes != 0 || z.LimitBytes != 0) {
					t.Errorf("zone %s is not for the kernel but counts %d usable bytes", z.Name, z.UsableBytes)
				}
			}
		})
	}
}

// zone is a zone of n free pages with watermarks min, min+1, min+2 and a protection list.
func zone(node, index int, name string, free, min uint64, protection ...uint64) Zone {
	if protection == nil {
		protection = []uint64{0, 0, 0, 0, 0}
	}
	return Zone{Node: node, Index: index, Name: name, Free: free, Min: min, Low: min + 1, High: min + 2, Protection: protection}
}

func TestCompute(t *testing.T) {
	const pages = mib / 4096 // pages per MiB
	base := Inputs{PageSize: 4096, BlockSize: block, StructPage: 64}
	cost := BlockCost(base)
	blocksFor := func(avail uint64) uint64 { return (avail - AddOverhead) / cost * block }
	for _, tt := range []struct {
		name            string
		zones           []Zone
		reserve         uint64
		memmapOnMemory  bool
		headroom, limit uint64
	}{
		{"one Normal zone", []Zone{zone(0, 0, "Normal", 1001*pages, 1*pages)}, 0, false,
			blocksFor(1001*mib - 1*mib - 8192), blocksFor(1000 * mib)},
		{"the reserve comes off the headroom, not the limit", []Zone{zone(0, 0, "Normal", 1001*pages, 1*pages)}, 100 * mib, false,
			blocksFor(1001*mib - 1*mib - 8192 - 100*mib), blocksFor(1000 * mib)},
		{"a reserve above the free memory", []Zone{zone(0, 0, "Normal", 101*pages, 1*pages)}, 200 * mib, false, 0, blocksFor(100 * mib)},
		{"Movable and Device do not count", []Zone{
			zone(0, 0, "DMA32", 501*pages, 1*pages), zone(0, 1, "Normal", 0, 0),
			zone(0, 2, "Movable", 1<<30, 10), zone(0, 3, "Device", 1<<20, 0),
		}, 0, false, blocksFor(501*mib - 1*mib - 8192), blocksFor(500 * mib)},
		{"lowmem reserve for Normal allocations", []Zone{
			zone(0, 0, "DMA", 16*pages, 0, 0, 8*pages, 12*pages, 12*pages), zone(0, 1, "DMA32", 300*pages, 0, 0, 0, 100*pages, 100*pages),
			zone(0, 2, "Normal", 200*pages, 0), zone(0, 3, "Movable", 0, 0),
		}, 0, false, blocksFor(4*mib - 8192 + 200*mib - 8192 + 200*mib - 8192), blocksFor(4*mib + 200*mib + 200*mib)},
		{"a node without a Normal zone takes its highest kernel zone's reserve", []Zone{
			zone(0, 0, "DMA", 16*pages, 0, 0, 10*pages), zone(0, 1, "DMA32", 100*pages, 0, 0, 0),
		}, 0, false, blocksFor(6*mib - 8192 + 100*mib - 8192), blocksFor(106 * mib)},
		{"two nodes add up", []Zone{
			zone(0, 0, "Normal", 300*pages, 0), zone(0, 1, "Movable", 5000*pages, 0),
			zone(1, 0, "Normal", 400*pages, 0), zone(1, 1, "Movable", 0, 0),
		}, 0, false, blocksFor(700*mib - 2*8192), blocksFor(700 * mib)},
		{"memmap on memory", []Zone{zone(0, 0, "Normal", 101*pages, 1*pages)}, 0, true,
			(100*mib - 8192 - AddOverhead) / (BlockOverhead + 4096 + 512) * block, (100*mib - AddOverhead) / (BlockOverhead + 4096 + 512) * block},
		{"nothing free", []Zone{zone(0, 0, "Normal", 10, 20)}, 0, false, 0, 0},
		{"less than one add", []Zone{zone(0, 0, "Normal", pages/2, 0)}, 0, false, 0, 0},
		{"too much to count", []Zone{zone(0, 0, "Normal", 1<<62, 0)}, 0, true,
			^uint64(0) / block * block, ^uint64(0) / block * block},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := base
			in.Zones, in.Reserve = tt.zones, tt.reserve
			in.MemmapOnMemory.Applies = tt.memmapOnMemory
			e, err := Compute(in)
			if err != nil {
				t.Fatal(err)
			}
			if e.Headroom != tt.headroom || e.Limit != tt.limit {
				t.Errorf("headroom %d, limit %d; want %d, %d", e.Headroom, e.Limit, tt.headroom, tt.limit)
			}
			if e.Headroom > e.Limit {
				t.Errorf("headroom %d above the limit %d", e.Headroom, e.Limit)
			}
		})
	}
}

// TestComputeCMA: free CMA pages are not for kernel allocations.
func TestComputeCMA(t *testing.T) {
	z := zone(0, 0, "Normal", 1000*256, 0)
	z.FreeCMA = 400 * 256
	e, err := Compute(Inputs{Zones: []Zone{z}, PageSize: 4096, BlockSize: block, StructPage: 64})
	if err != nil {
		t.Fatal(err)
	}
	if e.KernelFree != 600*mib {
		t.Errorf("kernel free %d; want %d", e.KernelFree, 600*mib)
	}
}

func TestComputeErrors(t *testing.T) {
	zones := []Zone{zone(0, 0, "Normal", 100, 0)}
	for _, tt := range []struct {
		in   Inputs
		want string
	}{
		{Inputs{Zones: zones, PageSize: 0, BlockSize: block, StructPage: 64}, "headroom: page size 0 is not a power of two"},
		{Inputs{Zones: zones, PageSize: 4000, BlockSize: block, StructPage: 64}, "headroom: page size 4000 is not a power of two"},
		{Inputs{Zones: zones, PageSize: 4096, BlockSize: 0, StructPage: 64}, "headroom: block size 0 is not a multiple of the page size 4096"},
		{Inputs{Zones: zones, PageSize: 4096, BlockSize: block + 1, StructPage: 64}, "headroom: block size 134217729 is not a multiple of the page size 4096"},
		{Inputs{Zones: zones, PageSize: 4096, BlockSize: block, StructPage: 0}, "headroom: struct page of 0 bytes for pages of 4096"},
		{Inputs{PageSize: 4096, BlockSize: block, StructPage: 64}, "headroom: no zones"},
	} {
		if _, err := Compute(tt.in); err == nil || err.Error() != tt.want {
			t.Errorf("Compute(%+v): %v; want %s", tt.in, err, tt.want)
		}
	}
}

func TestDecideMemmapOnMemory(t *testing.T) {
	for _, tt := range []struct {
		param, release string
		pageSize       uint64
		blockSize      uint64
		applies        bool
		reason         string // a part of it
	}{
		{"", "6.12.0", 4096, block, false, "has no memory_hotplug.memmap_on_memory"},
		{"N", "6.12.0", 4096, block, false, "is off"},
		{"Y", "6.1.0-57-amd64", 4096, block, false, "Linux 6.1 adds a hot-added DIMM as one range"},
		{"Y", "5.14.0-427.13.1.el9_4.x86_64", 4096, block, false, "Linux 5.14 adds"},
		{"force", "6.7.12", 4096, block, false, "Linux 6.7 adds"},
		{"Y", "6.8.0-31-generic", 4096, block, true, "Linux 6.8 adds hot-added memory block by block"},
		{"Y", "6.18.44-fc-v1272", 4096, block, true, "Linux 6.18"},
		{"Y", "10.0-rc1", 4096, block, true, "Linux 10.0"},
		{"Y", "6.12.0", 4096, 2 << 30, true, "block by block"},
		// 64 KiB pages, 512 MiB blocks: a 512 KiB memmap, not a whole 512 MiB PMD.
		{"Y", "6.12.0", 64 << 10, 512 * mib, false, "does not fill whole PMD-mapped pages"},
		{"force", "6.12.0", 64 << 10, 512 * mib, true, "block by block"},
		{"Y", "", 4096, block, false, `kernel release "" not understood`},
		{"Y", "linux", 4096, block, false, `kernel release "linux" not understood`},
		{"maybe", "6.12.0", 4096, block, false, `"maybe", not understood`},
	} {
		t.Run(tt.param+" "+tt.release, func(t *testing.T) {
			m := DecideMemmapOnMemory(tt.param, tt.release, tt.blockSize, tt.pageSize, 64)
			if m.Applies != tt.applies || !strings.Contains(m.Reason, tt.reason) || m.Parameter != tt.param {
				t.Errorf("DecideMemmapOnMemory = %+v; want applies %v, a reason with %q", m, tt.applies, tt.reason)
			}
		})
	}
}

func TestParseRelease(t *testing.T) {
	for r, want := range map[string][3]int{
		"6.1.0-57-amd64": {6, 1, 1}, "6.18.44-fc-v1272": {6, 18, 1}, "5.14.0-427.el9.x86_64": {5, 14, 1},
		"6.8": {6, 8, 1}, "6.8-rc1": {6, 8, 1}, "6": {0, 0, 0}, "": {0, 0, 0}, "a.b": {0, 0, 0}, "6.x": {0, 0, 0},
	} {
		maj, min, ok := parseRelease(r)
		got := [3]int{maj, min, 0}
		if ok {
			got[2] = 1
		}
		if !ok {
			got[0], got[1] = 0, 0
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("parseRelease(%q) (-want +got):\n%s", r, diff)
		}
	}
}
