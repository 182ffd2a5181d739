package sysfs

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
)

// nodeDir holds a directory nodeM per NUMA node, which links every CPU (cpuN) and memory block
// (memoryN) of the node, as each cpuN and memoryN directory links its node back.
const nodeDir = "devices/system/node"

// nodeLinks lists the node directories once and returns, by number, the node of each device
// whose name is prefix followed by the number ("cpu", "memory"): the lowest M of the nodeM
// directories that link it. A scan of thousands of devices takes their nodes from here rather
// than listing each device's directory, which costs more than reading its attributes. nil when
// there are no node directories (a kernel without NUMA) or they cannot be read: the caller then
// lists the device's directory, as it does for a device no node directory links (one added
// since, or a tree that links only one way).
func (fsys FS) nodeLinks(prefix string) map[int]int {
	buf := make([]byte, 64<<10) // node0 of a large machine holds some ten thousand entries
	names, err := readDirNames(fsys.Path(nodeDir), buf)
	if err != nil {
		return nil
	}
	var links map[int]int
	for _, name := range names {
		m, ok := numbered(name, "node")
		if !ok {
			continue
		}
		entries, err := readDirNames(fsys.Path(nodeDir, name), buf)
		if err != nil {
			return nil
		}
		for _, e := range entries {
			n, ok := numbered(e, prefix)
			if !ok {
				continue
			}
			if links == nil {
				links = make(map[int]int, len(entries))
			}
			if old, ok := links[n]; !ok || m < old {
				links[n] = m
			}
		}
	}
	return links
}

// linkedDir opens p, the directory of a subsystem whose devices links (from nodeLinks) tells the
// nodes of, and returns it with links; links is nil when there are none or p cannot be opened
// (the devices are then read by listing their directories), and then the directory is not open.
func linkedDir(p string, links map[int]int) (dir, map[int]int) {
	if links == nil {
		return dir{}, nil
	}
	d, err := openDir(p)
	if err != nil {
		return dir{}, nil
	}
	return d, links
}

// readIn reads the attribute attr of the device named name (such as "memory12") in d, the
// directory of its subsystem. absent reports that the device exists without the attribute; a
// device that vanished during the read is the error, wrapping fs.ErrNotExist, with dir as its
// directory for vanished.
func readIn(d dir, name, attr string, buf []byte, devDir func() string) (b []byte, absent bool, err error) {
	b, err = d.read(name+"/"+attr, buf)
	if err == nil {
		return b, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	if _, serr := os.Lstat(devDir()); serr != nil {
		return nil, false, err // the device is gone: the caller's vanished tells
	}
	return nil, true, nil
}

// deviceName is prefix followed by n in decimal, as sysfs names a device's directory.
func deviceName(prefix string, n int) string { return prefix + strconv.Itoa(n) }

// attrString returns the attribute value b as a string, without allocating for the values that
// every memory block repeats.
func attrString(b []byte) string {
	switch string(b) {
	case "online":
		return "online"
	case "offline":
		return "offline"
	case "going-offline":
		return "going-offline"
	case "Normal":
		return "Normal"
	case "Movable":
		return "Movable"
	case "none":
		return "none"
	case "DMA32":
		return "DMA32"
	case "DMA":
		return "DMA"
	}
	return string(b)
}
