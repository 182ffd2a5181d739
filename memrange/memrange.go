// Package memrange summarises the CPUs and memory blocks present the way lscpu and lsmem print
// them: memory blocks merged into ranges, zone names and sizes as lsmem writes them, CPU lists
// as lscpu writes them. `hotplug-agent list` and the status page share it.
//
// Its functions do not block and are safe for concurrent use: they only read their arguments.
package memrange

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// Range is a run of memory blocks with consecutive indexes and the same state, node, zones and
// memory device: one line of `lsmem -o RANGE,SIZE,STATE,BLOCK,NODE,ZONES`, split further by
// memory device.
type Range struct {
	// Start and End are the first and the last byte of the range.
	Start, End uint64
	// First and Last are the indexes of the first and the last block.
	First, Last int
	// State is the blocks' state: "online", "offline" or "going-offline".
	State string
	// Node is the blocks' NUMA node, or -1 when the kernel does not say.
	Node int
	// Zones names the blocks' zones as lsmem does: "Normal", "DMA32", "Normal/Movable" for an
	// offline block that may go to either.
	Zones string
	// Device is the memory device the blocks belong to ("" for none).
	Device string
}

// Size is the range's size in bytes.
func (r Range) Size() uint64 { return r.End - r.Start + 1 }

// Blocks is the number of blocks in the range.
func (r Range) Blocks() int { return r.Last - r.First + 1 }

// BlockList is the range's blocks as lsmem prints them: "0", "32-199".
func (r Range) BlockList() string {
	if r.First == r.Last {
		return strconv.Itoa(r.First)
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// zoneNames are the kernel's zone names as lsmem spells them.
var zoneNames = []string{"None", "DMA", "DMA32", "Normal", "Highmem", "Movable", "Device"}

// ZoneNames turns a memory block's valid_zones ("Normal Movable", "none") into lsmem's
// spelling ("Normal/Movable", "None"); "" stays "".
func ZoneNames(validZones string) string {
	f := strings.Fields(validZones)
	for k, z := range f {
		for _, n := range zoneNames {
			if strings.EqualFold(z, n) {
				f[k] = n
			}
		}
	}
	return strings.Join(f, "/")
}

// Merge returns the memory blocks among ifaces (other interfaces are ignored) merged into
// ranges, in block order. Blocks merge when their indexes follow each other and they agree in
// state, node, zones and device.
func Merge(ifaces []notify.Interface) []Range {
	var blocks []notify.Interface
	for _, i := range ifaces {
		if i.ClassGUID == notify.GUIDDeviceMemory && !i.IsMemoryDevice() {
			blocks = append(blocks, i)
		}
	}
	slices.SortFunc(blocks, func(a, b notify.Interface) int { return a.Number - b.Number })
	var out []Range
	for _, b := range blocks {
		r := Range{Start: b.PhysStart, End: b.PhysStart + b.Size - 1, First: b.Number, Last: b.Number,
			State: b.State, Node: b.Node, Zones: ZoneNames(b.Zones), Device: b.Device}
		if n := len(out); n > 0 {
			p := &out[n-1]
			if p.Last+1 == r.First && p.State == r.State && p.Node == r.Node && p.Zones == r.Zones && p.Device == r.Device {
				p.Last, p.End = r.Last, r.End
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// HumanSize writes a size as lsmem does: a power-of-1024 letter and one decimal where there is
// a fraction ("128M", "2.9G", "21G", "0B").
func HumanSize(bytes uint64) string {
	exp := 0
	for shift := 10; shift <= 60; shift += 10 {
		if bytes < 1<<shift {
			break
		}
		exp = shift
	}
	letter := "BKMGTPE"[exp/10]
	if exp == 0 {
		return fmt.Sprintf("%d%c", bytes, letter)
	}
	dec, frac := bytes>>exp, bytes&(1<<exp-1)
	if frac != 0 {
		frac = (frac/(1<<(exp-10)) + 50) / 100
		if frac == 10 {
			dec, frac = dec+1, 0
		}
	}
	if frac != 0 {
		return fmt.Sprintf("%d.%d%c", dec, frac, letter)
	}
	return fmt.Sprintf("%d%c", dec, letter)
}

// CPUList writes CPU numbers as lscpu does: "0-3,8", and a run of two as "0,1". Empty is "".
func CPUList(cpus []int) string {
	s := slices.Clone(cpus)
	slices.Sort(s)
	var parts []string
	for k := 0; k < len(s); {
		j := k
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		switch j - k {
		case 0:
			parts = append(parts, strconv.Itoa(s[k]))
		case 1:
			parts = append(parts, strconv.Itoa(s[k]), strconv.Itoa(s[j]))
		default:
			parts = append(parts, fmt.Sprintf("%d-%d", s[k], s[j]))
		}
		k = j + 1
	}
	return strings.Join(parts, ",")
}

// Summary counts what is present.
type Summary struct {
	// CPUsPresent, Online and Offline are CPU numbers.
	CPUsPresent, CPUsOnline, CPUsOffline []int
	// NodeCPUs are the online CPUs of each NUMA node, as lscpu's "NUMA nodeN CPU(s)" (an
	// offline CPU leaves its node's list).
	NodeCPUs map[int][]int
	// Nodes are the NUMA nodes of the CPUs present, offline ones included, sorted.
	Nodes []int
	// MemoryOnline and MemoryOffline are bytes; BlocksOnline and BlocksOffline count blocks
	// (going-offline counts as online).
	MemoryOnline, MemoryOffline uint64
	BlocksOnline, BlocksOffline int
	// BlockSize is the size of a memory block (0 without blocks).
	BlockSize uint64
	// Devices are the memory devices the blocks belong to, sorted.
	Devices []string
}

// Summarise counts the CPUs and memory blocks among ifaces.
func Summarise(ifaces []notify.Interface) Summary {
	s := Summary{NodeCPUs: map[int][]int{}}
	devices := map[string]bool{}
	nodes := map[int]bool{}
	for _, i := range ifaces {
		switch {
		case i.ClassGUID == notify.GUIDDeviceProcessor:
			s.CPUsPresent = append(s.CPUsPresent, i.Number)
			if i.Node >= 0 {
				nodes[i.Node] = true
			}
			if i.State == "offline" {
				s.CPUsOffline = append(s.CPUsOffline, i.Number)
				continue
			}
			s.CPUsOnline = append(s.CPUsOnline, i.Number)
			if i.Node >= 0 {
				s.NodeCPUs[i.Node] = append(s.NodeCPUs[i.Node], i.Number)
			}
		case i.ClassGUID == notify.GUIDDeviceMemory && !i.IsMemoryDevice():
			s.BlockSize = i.Size
			if i.State == "offline" {
				s.MemoryOffline += i.Size
				s.BlocksOffline++
			} else {
				s.MemoryOnline += i.Size
				s.BlocksOnline++
			}
			if i.Device != "" {
				devices[i.Device] = true
			}
		}
	}
	for d := range devices {
		s.Devices = append(s.Devices, d)
	}
	slices.Sort(s.Devices)
	for n := range nodes {
		s.Nodes = append(s.Nodes, n)
	}
	slices.Sort(s.Nodes)
	for _, l := range [][]int{s.CPUsPresent, s.CPUsOnline, s.CPUsOffline} {
		slices.Sort(l)
	}
	return s
}
