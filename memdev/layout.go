// Package memdev groups memory blocks into the memory devices they came from: an ACPI memory
// device (a DIMM; a pc-dimm in QEMU), found through its physical_node links to its blocks, or a
// virtio-mem device, found through its region in /proc/iomem. A [Tracker] turns the blocks'
// arrivals and removals into one arrival per device, sent when all its blocks are online, and
// one removal, sent when the first of them goes.
package memdev

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// The kinds of memory device.
const (
	KindACPI      = "acpi"       // an ACPI memory device (_HID PNP0C80)
	KindVirtioMem = "virtio-mem" // a virtio-mem device's plugged memory
)

// acpiMemoryHID is the ACPI hardware id of a memory device; its sysfs name is PNP0C80:NN.
const acpiMemoryHID = "PNP0C80:"

// virtioMemRAM is the name virtio_mem gives the System RAM resources it adds, under a parent
// resource named after the virtio device ("virtio5").
const virtioMemRAM = "System RAM (virtio_mem)"

// maxDeviceBlocks bounds the blocks one iomem range may stand for (128 TiB of 128 MiB blocks),
// so that a corrupt file cannot make the reader allocate without end.
const maxDeviceBlocks = 1 << 20

var virtioName = regexp.MustCompile(`^virtio[0-9]+$`)

// Device is one memory device and the memory blocks it is made of.
type Device struct {
	// ID is the device's name in sysfs: "PNP0C80:00" or "virtio5". `hotplug-agent offline
	// memory-device ID` takes it.
	ID string
	// Kind is KindACPI or KindVirtioMem.
	Kind string
	// Path is the device's sysfs directory as /sys/..., its symbolic link.
	Path string
	// Blocks are the indexes of its memory blocks, sorted: for an ACPI device those its
	// physical_node links name, for virtio-mem those its plugged System RAM covers.
	Blocks []int
	// First and Last are the first and last block of a virtio-mem device's whole region,
	// plugged or not.
	First, Last int
}

// Layout says which device each memory block belongs to. It is a plain value once built.
type Layout struct {
	Devices map[string]*Device
	device  map[int]string // block -> device id
}

// DeviceOf returns the id of the device block n belongs to, or "" when it belongs to none (boot
// memory on most machines) or is not known yet.
func (l Layout) DeviceOf(n int) string { return l.device[n] }

// Reader reads layouts. It is not safe for concurrent use.
type Reader struct {
	fs        sysfs.FS
	iomemPath string
	warned    bool
	reads     atomic.Int64 // Reads so far
}

// NewReader returns a Reader of the sysfs tree fsys and the iomem file at iomemPath (normally
// /proc/iomem; "" leaves virtio-mem devices out).
func NewReader(fsys sysfs.FS, iomemPath string) *Reader {
	return &Reader{fs: fsys, iomemPath: iomemPath}
}

// Read builds the layout of the memory devices present. The ACPI ones come from
// bus/acpi/devices: each PNP0C80:NN device's physical_node links name its blocks (the kernel
// makes them, with each block's firmware_node, once it has added all the device's memory), which
// costs a few system calls per device and none per block of memory that belongs to no device.
// The virtio-mem ones come from one read of /proc/iomem. A device or block that vanishes in
// between is simply left out. A /proc/iomem that cannot be read or parsed, or that shows no
// addresses (read without CAP_SYS_ADMIN), leaves virtio-mem devices out and is returned as warn,
// once per Reader; err is for a failure of sysfs itself. Read blocks on file reads.
func (r *Reader) Read() (l Layout, warn, err error) {
	r.reads.Add(1)
	l = Layout{Devices: map[string]*Device{}, device: map[int]string{}}
	acpi, err := r.acpiDevices()
	if err != nil {
		return Layout{}, nil, err
	}
	var vws []*Device
	if r.iomemPath != "" {
		vws, warn = r.virtioMem()
		if warn != nil && r.warned {
			warn = nil
		}
		r.warned = r.warned || warn != nil
	}
	for _, d := range append(acpi, vws...) {
		slices.Sort(d.Blocks)
		d.Blocks = slices.Compact(d.Blocks)
		l.Devices[d.ID] = d
		for _, n := range d.Blocks {
			l.device[n] = d.ID
		}
	}
	return l, warn, nil
}

// acpiBus is where the kernel lists ACPI devices, as links to their directories.
const acpiBus = "bus/acpi/devices"

// acpiDevices returns the ACPI memory devices that have memory blocks bound to them.
func (r *Reader) acpiDevices() ([]*Device, error) {
	bus := r.fs.Path(acpiBus)
	entries, err := os.ReadDir(bus)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil // no ACPI
	case err != nil:
		return nil, fmt.Errorf("memdev: %w", err)
	}
	var out []*Device
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), acpiMemoryHID) {
			continue
		}
		dir, err := filepath.EvalSymlinks(filepath.Join(bus, e.Name()))
		if err != nil || !within(r.fs.Root(), dir) {
			continue // gone since the listing, or not a device of this tree
		}
		nodes, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		d := &Device{ID: e.Name(), Kind: KindACPI, Path: r.sysPath(dir)}
		for _, nd := range nodes {
			if !isPhysicalNode(nd.Name()) {
				continue
			}
			link, err := os.Readlink(filepath.Join(dir, nd.Name()))
			if err != nil {
				continue
			}
			if n, ok := memoryBlockOf(link); ok {
				d.Blocks = append(d.Blocks, n)
			}
		}
		if len(d.Blocks) > 0 {
			out = append(out, d)
		}
	}
	return out, nil
}

// isPhysicalNode reports whether name is one of an ACPI device's links to the devices it stands
// for: physical_node, physical_node1, physical_node2, ...
func isPhysicalNode(name string) bool {
	rest, ok := strings.CutPrefix(name, "physical_node")
	if !ok {
		return false
	}
	for _, c := range []byte(rest) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// memoryBlockOf returns N when link ends in system/memory/memoryN.
func memoryBlockOf(link string) (int, bool) {
	dir, base := path.Split(filepath.ToSlash(link))
	if !strings.HasSuffix(dir, "system/memory/") {
		return 0, false
	}
	digits, ok := strings.CutPrefix(base, "memory")
	if !ok || digits == "" || len(digits) > 9 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil && n >= 0
}

// virtioMem returns the virtio-mem devices /proc/iomem shows: a top-level resource named like
// virtio5 with System RAM (virtio_mem) children; the blocks those children cover are the
// device's.
func (r *Reader) virtioMem() ([]*Device, error) {
	bs := r.fs.BlockSize()
	if bs == 0 {
		return nil, nil
	}
	data, err := os.ReadFile(r.iomemPath)
	if err != nil {
		return nil, fmt.Errorf("memdev: virtio-mem devices unknown: %w", err)
	}
	rs, err := ParseIOMem(data)
	if err != nil {
		return nil, fmt.Errorf("memdev: virtio-mem devices unknown: %s: %w", r.iomemPath, err)
	}
	var out []*Device
	zeros := len(rs) > 0
	for _, res := range rs {
		zeros = zeros && res.Start == 0 && res.End == 0
	}
	if zeros {
		return nil, fmt.Errorf("memdev: virtio-mem devices unknown: %s shows no addresses (it needs CAP_SYS_ADMIN)", r.iomemPath)
	}
	for _, res := range rs {
		if res.Parent < 0 || res.Name != virtioMemRAM {
			continue
		}
		parent := rs[res.Parent]
		if parent.Depth != 0 || !virtioName.MatchString(parent.Name) {
			continue
		}
		var d *Device
		for _, o := range out {
			if o.ID == parent.Name {
				d = o
			}
		}
		if d == nil {
			d = &Device{ID: parent.Name, Kind: KindVirtioMem, Path: r.virtioPath(parent.Name),
				First: int(min(parent.Start/bs, 1<<31)), Last: int(min(parent.End/bs, 1<<31))}
			out = append(out, d)
		}
		if first, last := res.Start/bs, res.End/bs; last-first >= maxDeviceBlocks || last >= 1<<31 {
			return nil, fmt.Errorf("memdev: virtio-mem devices unknown: %s: %s range %x-%x is not plausible", r.iomemPath, parent.Name, res.Start, res.End)
		}
		for b := res.Start / bs; b <= res.End/bs; b++ {
			d.Blocks = append(d.Blocks, int(b))
		}
	}
	return out, nil
}

// virtioPath returns the sysfs directory of virtio device name as /sys/...: where
// bus/virtio/devices/name points, or that link's own path when it cannot be read.
func (r *Reader) virtioPath(name string) string {
	link := r.fs.Path("bus/virtio/devices", name)
	if target, err := filepath.EvalSymlinks(link); err == nil && within(r.fs.Root(), target) {
		return r.sysPath(target)
	}
	return r.sysPath(link)
}

// sysPath turns a path under the root into the /sys path it names on the machine.
func (r *Reader) sysPath(p string) string {
	rel, err := filepath.Rel(r.fs.Root(), p)
	if err != nil {
		return p
	}
	return "/sys/" + filepath.ToSlash(rel)
}

// within reports whether p (cleaned) lies under root.
func within(root, p string) bool {
	rel, err := filepath.Rel(root, filepath.Clean(p))
	return err == nil && rel != "." && !strings.HasPrefix(rel, "..")
}
