package sysfs

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// CPU is one logical CPU as sysfs shows it under devices/system/cpu/cpuN.
type CPU struct {
	// Number is N in cpuN.
	Number int
	// Online reports whether the CPU runs: cpuN/online reads 1, or, when there is no online file
	// (often cpu0), the CPU is in the cpu/online list.
	Online bool
	// Hotpluggable reports whether cpuN/online exists, that is, whether the CPU can be taken
	// offline.
	Hotpluggable bool
	// Node is M from a cpuN/nodeM link (the lowest M if there are several); -1 when there is none.
	Node int
}

// CPUSets holds the kernel's CPU lists from devices/system/cpu, each sorted.
type CPUSets struct {
	Possible []int // possible: CPUs the kernel has room for, hotpluggable or not
	Present  []int // present: CPUs in the machine now
	Online   []int // online: CPUs that run now
}

// CPUSets reads the possible, present and online lists. Each must exist (a missing list is an
// error wrapping fs.ErrNotExist); an empty file is an empty list. CPUSets blocks on file reads; it
// is safe for concurrent use.
func (fsys FS) CPUSets() (CPUSets, error) {
	var sets CPUSets
	for _, l := range []struct {
		name string
		dst  *[]int
	}{
		{"possible", &sets.Possible},
		{"present", &sets.Present},
		{"online", &sets.Online},
	} {
		cpus, err := fsys.cpuList(l.name)
		if err != nil {
			return CPUSets{}, err
		}
		*l.dst = cpus
	}
	return sets, nil
}

// cpuList reads and parses the list devices/system/cpu/<name>.
func (fsys FS) cpuList(name string) ([]int, error) {
	p := fsys.Path(cpuDir, name)
	s, err := readString(p)
	if err != nil {
		return nil, fmt.Errorf("sysfs: read %s: %w", p, err)
	}
	cpus, err := parseCPUList(s)
	if err != nil {
		return nil, fmt.Errorf("sysfs: parse %s: %w", p, err)
	}
	return cpus, nil
}

// CPUs returns every CPU with a cpuN directory (N decimal digits only: cpufreq, cpuidle and the
// like are not CPUs), sorted by number. A CPU whose directory vanishes between the listing and
// its read (a hot-remove racing the scan) is left out, not an error. CPUs blocks on file reads; it
// is safe for concurrent use.
func (fsys FS) CPUs() ([]CPU, error) {
	dir := fsys.Path(cpuDir)
	var buf [scratchSize]byte
	names, err := readDirNames(dir, buf[:])
	if err != nil {
		return nil, fmt.Errorf("sysfs: read %s: %w", dir, err)
	}
	var nums []int
	for _, name := range names {
		if n, ok := numbered(name, "cpu"); ok {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	return fsys.cpus(nums)
}

// cpus reads the CPUs numbered nums, in order, leaving out those whose directory is gone. The
// cpu/online list is read once, and only if some CPU has no online file. A CPU that a node
// directory links is read without listing its directory.
func (fsys FS) cpus(nums []int) ([]CPU, error) {
	out := make([]CPU, 0, len(nums))
	buf := make([]byte, scratchSize)
	cd, links := linkedDir(fsys.Path(cpuDir), fsys.nodeLinks("cpu"))
	if links != nil {
		defer cd.close()
	}
	var online []int
	onlineList := func() ([]int, error) {
		if online != nil {
			return online, nil
		}
		l, err := fsys.cpuList("online")
		if err == nil {
			online = l // never nil: parseCPUList returns an empty slice for an empty list
		}
		return l, err
	}
	for _, n := range nums {
		var c CPU
		var err error
		if node, ok := links[n]; ok {
			c, err = fsys.readLinkedCPU(cd, n, node, onlineList, buf)
		} else {
			c, err = fsys.readCPU(n, onlineList, buf)
		}
		if err != nil {
			if vanished(err, fsys.CPUPath(n)) {
				continue
			}
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// CPU returns CPU n. The error wraps fs.ErrNotExist when cpuN does not exist, also when it
// vanishes during the read (a hot-remove); a negative n is an error. CPU blocks on file reads; it is safe for concurrent use.
func (fsys FS) CPU(n int) (CPU, error) {
	if n < 0 {
		return CPU{}, fmt.Errorf("sysfs: invalid CPU number %d", n)
	}
	var buf [scratchSize]byte
	c, err := fsys.readCPU(n, func() ([]int, error) { return fsys.cpuList("online") }, buf[:])
	return c, notExistIfVanished(err, fsys.CPUPath(n))
}

// CPUOnline reports whether CPU n is online, from its online file alone: one open, read and
// close, with no allocation. The error wraps fs.ErrNotExist when there is no such file: CPU n
// is gone, or has no online file (see CPU.Hotpluggable). It blocks on the file read and is safe
// for concurrent use.
func (fsys FS) CPUOnline(n int) (bool, error) {
	if n < 0 {
		return false, fmt.Errorf("sysfs: invalid CPU number %d", n)
	}
	var pb [256]byte // the path, built without allocating while it fits, and its NUL
	p := append(pb[:0], strings.TrimSuffix(fsys.root, "/")...)
	p = append(p, "/"+cpuDir+"/cpu"...)
	p = strconv.AppendInt(p, int64(n), 10)
	p = append(p, "/online"...)
	var buf [maxAttrSize + 1]byte
	b, err := readAttrPath(p, buf[:])
	if err != nil {
		return false, fmt.Errorf("sysfs: read %s: %w", string(p), err)
	}
	on, err := parseBool(b)
	if err != nil {
		return false, fmt.Errorf("sysfs: parse %s: %w", string(p), err)
	}
	return on, nil
}

// OnlineCPUs is cpu/online, the list of the CPUs the kernel has online, held open: each Read
// reads it afresh (sysfs makes an attribute's content anew at every read from its start) with one
// system call, where opening it each time costs three. An event loop that reads it for every
// burst of uevents keeps one. Its methods are not safe for concurrent use.
type OnlineCPUs struct {
	f    attrFile
	path string
}

// OpenOnlineCPUs opens cpu/online; Close releases it. It blocks on the open.
func (fsys FS) OpenOnlineCPUs() (*OnlineCPUs, error) {
	p := filepath.Join(fsys.root, cpuDir, "online")
	f, err := openAttr(p)
	if err != nil {
		return nil, fmt.Errorf("sysfs: open %s: %w", p, err)
	}
	return &OnlineCPUs{f, p}, nil
}

// Read makes s the CPUs online now, with no allocation once s has room for the highest. On an
// error s is empty. It blocks on the read.
func (o *OnlineCPUs) Read(s *CPUSet) error {
	var buf [maxAttrSize + 1]byte
	b, err := o.f.read(buf[:])
	if err != nil {
		clear(s.bits)
		return fmt.Errorf("sysfs: read %s: %w", o.path, err)
	}
	if err := s.setList(b); err != nil {
		return fmt.Errorf("sysfs: parse %s: %w", o.path, err)
	}
	return nil
}

// Close releases the file. Later Reads fail.
func (o *OnlineCPUs) Close() error { return o.f.close() }

// readCPU reads CPU n, using buf as scratch space of scratchSize bytes. It lists cpuN once,
// which tells both whether an online file exists and which node link there is, and reads the
// online file or, without one, calls onlineList.
func (fsys FS) readCPU(n int, onlineList func() ([]int, error), buf []byte) (CPU, error) {
	p := fsys.CPUPath(n)
	d, err := openDir(p)
	if err != nil {
		return CPU{}, fmt.Errorf("sysfs: read %s: %w", p, err)
	}
	defer d.close()
	names, err := d.names(buf)
	if err != nil {
		return CPU{}, fmt.Errorf("sysfs: read %s: %w", p, err)
	}
	c := CPU{Number: n, Node: nodeOf(names)}
	if !has(names, "online") {
		return finishCPU(c, nil, true, onlineList, p)
	}
	b, err := d.read("online", buf)
	if err != nil {
		return CPU{}, fmt.Errorf("sysfs: read %s/online: %w", p, err)
	}
	return finishCPU(c, b, false, onlineList, p)
}

// finishCPU completes c, whose directory is p, from its online file's content b or, when it has
// none (absent), from the cpu/online list.
func finishCPU(c CPU, b []byte, absent bool, onlineList func() ([]int, error), p string) (CPU, error) {
	if absent {
		l, err := onlineList()
		if err != nil {
			return CPU{}, err
		}
		_, c.Online = slices.BinarySearch(l, c.Number)
		return c, nil
	}
	c.Hotpluggable = true
	var err error
	if c.Online, err = parseBool(b); err != nil {
		return CPU{}, fmt.Errorf("sysfs: parse %s/online: %w", p, err)
	}
	return c, nil
}

// readLinkedCPU is readCPU of CPU n, which a node directory links to node: it reads its online
// file through cd, the cpu directory, without listing the CPU's directory.
func (fsys FS) readLinkedCPU(cd dir, n, node int, onlineList func() ([]int, error), buf []byte) (CPU, error) {
	p := func() string { return fsys.CPUPath(n) }
	b, absent, err := readIn(cd, deviceName("cpu", n), "online", buf, p)
	if err != nil {
		return CPU{}, fmt.Errorf("sysfs: read %s/online: %w", p(), err)
	}
	return finishCPU(CPU{Number: n, Node: node}, b, absent, onlineList, p())
}
