package online

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/hotplug-agent/hotplug-agent/memdev"
)

// PlannerSources are what the zone planner reads besides sysfs.
type PlannerSources struct {
	// Zoneinfo is the path of /proc/zoneinfo (under --path.procfs): the present pages per zone
	// and node.
	Zoneinfo string
	// Layout reads which memory blocks form which devices (memdev.Reader's Read). nil: every
	// block is decided alone.
	Layout func() (memdev.Layout, error)
	// DeviceWait is how long after the last memory block the kernel added a block that belongs to
	// no device yet is held back: the kernel links a DIMM's blocks to it only once it has added
	// them all. Default DefaultDeviceWait.
	DeviceWait time.Duration
	// PageSize is the size of a page in bytes. Default os.Getpagesize().
	PageSize uint64
	// Decided, when set, is told each block the planner decides: the kind of its device
	// (memdev.KindACPI, memdev.KindVirtioMem, or "none") and the zone. It must not block.
	Decided func(device string, z Zone)
}

// DefaultDeviceWait is PlannerSources.DeviceWait when unset: the kernel links a DIMM's blocks to
// the DIMM tens of milliseconds after the last of them (measured in QEMU), and adds the blocks of
// a large DIMM one after the other, each in milliseconds.
const DefaultDeviceWait = time.Second

// planView is the machine as the planner counts it at one moment: the scopes (the whole machine
// and each node) and the devices with their online pages. It is built by readView and kept up to
// date with the planner's own onlines until the next read.
type planView struct {
	ppb     uint64 // pages per memory block
	machine Scope
	nodes   map[int]*Scope
	devices map[string]*planDevice
	layout  memdev.Layout
	owner   map[int]string // block -> device id, from layout.Devices
}

// deviceOf returns the id of the device block n belongs to, "" for none.
func (v *planView) deviceOf(n int) string { return v.owner[n] }

// planDevice is one memory device in a planView.
type planDevice struct {
	kind   DeviceKind
	name   string // memdev.KindACPI or memdev.KindVirtioMem
	node   int
	online DevicePages
	size   uint64 // all its blocks' pages, online or not
}

// readView reads the zones, the layout and the devices' blocks. hotAdded are the blocks the
// kernel added since it booted, as far as the agent knows (those of no device are not boot memory
// either, however long they have been online). It blocks on file reads.
func (o *Onliner) readView(hotAdded map[int]bool) (*planView, error) {
	src := o.planner
	bs := o.fs.BlockSize()
	if bs == 0 {
		return nil, errors.New("zone planner: no memory block size")
	}
	ps := src.PageSize
	if ps == 0 {
		ps = uint64(os.Getpagesize())
	}
	v := &planView{ppb: bs / ps, nodes: map[int]*Scope{}, devices: map[string]*planDevice{}, owner: map[int]string{}}
	v.machine.Dynamic = map[string]DevicePages{}
	node := func(n int) *Scope {
		s := v.nodes[n]
		if s == nil {
			s = &Scope{Dynamic: map[string]DevicePages{}}
			v.nodes[n] = s
		}
		return s
	}
	zones, err := o.readZones(src.Zoneinfo, v.ppb)
	if err != nil {
		return nil, err
	}
	// hot is the kernel-zone pages of hot-added blocks, per node: not early.
	hot := map[int]uint64{}
	for _, z := range zones {
		s := node(z.Node)
		switch {
		case z.Movable():
			s.Movable += z.Present
		case z.Kernel():
			// CMA behaves as ZONE_MOVABLE.
			s.EarlyKernel += z.Present - min(z.CMA, z.Present)
			s.Movable += min(z.CMA, z.Present)
		}
	}
	if src.Layout != nil {
		if v.layout, err = src.Layout(); err != nil {
			return nil, fmt.Errorf("zone planner: %w", err)
		}
	}
	seen := map[int]bool{}
	// account reads block n; an online one adds to d (when d is not nil) and, in a kernel zone,
	// to the hot-added kernel pages of its node. It returns the block's node (-1: not known).
	account := func(n int, d *planDevice) (int, error) {
		seen[n] = true
		b, err := o.fs.MemoryBlock(n)
		if errors.Is(err, fs.ErrNotExist) {
			return -1, nil // removed meanwhile
		}
		if err != nil {
			return -1, err
		}
		if !b.Online() {
			return b.Node, nil
		}
		movable := b.ValidZones == "Movable"
		if d != nil {
			if movable {
				d.online.Movable += v.ppb
			} else {
				d.online.Kernel += v.ppb
			}
		}
		if !movable {
			hot[b.Node] += v.ppb
		}
		return b.Node, nil
	}
	for id, md := range v.layout.Devices {
		d := &planDevice{name: md.Kind, kind: StaticDevice, node: -1, size: uint64(len(md.Blocks)) * v.ppb}
		if md.Kind == memdev.KindVirtioMem {
			d.kind = DynamicDevice
		}
		for _, n := range md.Blocks {
			v.owner[n] = id
			nd, err := account(n, d)
			if err != nil {
				return nil, fmt.Errorf("zone planner: %w", err)
			}
			if d.node < 0 {
				d.node = nd
			}
		}
		v.devices[id] = d
		if d.kind == DynamicDevice {
			v.machine.Dynamic[id] = d.online
			if d.node >= 0 {
				node(d.node).Dynamic[id] = d.online
			}
		}
	}
	for n := range hotAdded {
		if !seen[n] {
			if _, err := account(n, nil); err != nil {
				return nil, fmt.Errorf("zone planner: %w", err)
			}
		}
	}
	for n, s := range v.nodes {
		s.EarlyKernel -= min(hot[n], s.EarlyKernel)
		v.machine.EarlyKernel += s.EarlyKernel
		v.machine.Movable += s.Movable
	}
	return v, nil
}

// readZones reads the zones' present pages from the zoneinfo file at path or, when it cannot be
// read (a service with ProcSubset=pid sees no /proc/zoneinfo), counts the online memory blocks
// of each zone instead, ppb pages each: holes in boot memory then count as present, so the
// ratio holds a little less exactly than the kernel's (its 1% above 300 is for such pages).
func (o *Onliner) readZones(path string, ppb uint64) ([]ZoneInfo, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		zones, err := ParseZoneinfo(data)
		if err != nil {
			return nil, fmt.Errorf("zone planner: %s: %w", path, err)
		}
		return zones, nil
	}
	blocks, berr := o.fs.MemoryBlocks()
	if berr != nil {
		return nil, fmt.Errorf("zone planner: %w; and %w", err, berr)
	}
	o.mu.Lock()
	said := o.zoneinfoMissing
	o.zoneinfoMissing = true
	o.mu.Unlock()
	if !said {
		o.log.Warn("zone planner: cannot read the zones' present pages; counting online memory blocks instead", "err", err)
	}
	count := map[[2]int]uint64{} // node, movable -> pages
	for _, b := range blocks {
		if b.Online() {
			k := [2]int{b.Node, 0}
			if b.ValidZones == "Movable" {
				k[1] = 1
			}
			count[k] += ppb
		}
	}
	var zones []ZoneInfo
	for k, pages := range count {
		z := ZoneInfo{Node: k[0], Zone: "Normal", Present: pages}
		if k[1] == 1 {
			z.Zone = "Movable"
		}
		zones = append(zones, z)
	}
	return zones, nil
}

// decide returns the zone for block n on node (-1: not known), and the kind of its device
// ("none" for a block of no device).
func (v *planView) decide(ratio, n, node int) (Zone, string) {
	t := Target{Kind: NoDevice, Block: v.ppb}
	kind := "none"
	id := v.deviceOf(n)
	if d := v.devices[id]; d != nil {
		t = Target{Kind: d.kind, ID: id, Online: d.online, Size: d.size, Block: v.ppb}
		kind = d.name
		if node < 0 {
			node = d.node
		}
	}
	scopes := []Scope{v.machine}
	if s := v.nodes[node]; s != nil {
		scopes = append(scopes, *s)
	}
	return Plan(ratio, t, scopes...), kind
}

// onlined records that block n on node went online in z.
func (v *planView) onlined(n, node int, z Zone) {
	id := v.deviceOf(n)
	d := v.devices[id]
	if d != nil && node < 0 {
		node = d.node
	}
	s := v.nodes[node]
	if z == ZoneMovable {
		v.machine.Movable += v.ppb
		if s != nil {
			s.Movable += v.ppb
		}
	}
	if d == nil {
		return
	}
	if z == ZoneMovable {
		d.online.Movable += v.ppb
	} else {
		d.online.Kernel += v.ppb
	}
	if d.kind == DynamicDevice {
		v.machine.Dynamic[id] = d.online
		if s != nil {
			s.Dynamic[id] = d.online
		}
	}
}
