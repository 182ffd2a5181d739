package headroom

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// Options configure an Estimator.
type Options struct {
	// ProcPath is the procfs mount point (default /proc): meminfo, zoneinfo,
	// sys/kernel/osrelease and kcore are read under it.
	ProcPath string
	// SysPath is the sysfs mount point (default /sys): the memory block size and the
	// memmap_on_memory parameter are read under it.
	SysPath string
	// Reserve is the kernel memory the headroom leaves free for the agent and the system
	// (DefaultReserve is the agent's default; 0 keeps none).
	Reserve uint64
	// PageSize is the kernel's base page size; 0 means the running kernel's (os.Getpagesize).
	PageSize uint64
	// MaxAge is how long an estimate is reused before meminfo and zoneinfo are read again;
	// 0 means one second. Reading zoneinfo locks each zone briefly: scrapes and requests that
	// come together share one reading.
	MaxAge time.Duration
}

// Estimator computes the headroom from the files of the running kernel. The facts that do not
// change while the kernel runs (the block size, sizeof(struct page), memmap_on_memory, the
// kernel release) are read once by New; meminfo and zoneinfo at most once per MaxAge. It is safe
// for concurrent use.
type Estimator struct {
	o      Options
	static Inputs // every field but Zones and Meminfo
	err    error  // what makes every estimate fail (no memory hotplug)

	mu   sync.Mutex
	at   time.Time
	last Estimate
}

// New returns an Estimator for the kernel under o's roots, after reading what does not change
// while the kernel runs. It never fails: what it cannot read is assumed (sizeof(struct page))
// or makes every Estimate fail with the reason (no memory block size: no memory hotplug). New
// blocks on a few small file reads and is safe for concurrent use.
func New(o Options) *Estimator {
	if o.ProcPath == "" {
		o.ProcPath = "/proc"
	}
	if o.SysPath == "" {
		o.SysPath = "/sys"
	}
	if o.MaxAge <= 0 {
		o.MaxAge = time.Second
	}
	e := &Estimator{o: o}
	in := &e.static
	in.Reserve = o.Reserve
	in.PageSize = o.PageSize
	if in.PageSize == 0 {
		in.PageSize = uint64(os.Getpagesize())
	}
	in.StructPage, in.StructPageSource = DefaultStructPage, "assumed"
	if sp, ps, err := StructPageFromKcore(filepath.Join(o.ProcPath, "kcore")); err == nil && ps == in.PageSize && sp <= ps {
		in.StructPage, in.StructPageSource = sp, "vmcoreinfo"
	}
	if b, err := readSmall(filepath.Join(o.ProcPath, "sys", "kernel", "osrelease")); err == nil {
		in.KernelRelease = b
	}
	fs, err := sysfs.NewFS(o.SysPath)
	switch {
	case err != nil:
		e.err = fmt.Errorf("headroom: %w", err)
	case !fs.HasMemory():
		e.err = fmt.Errorf("headroom: no %s: the kernel has no memory hotplug", fs.Path("devices", "system", "memory"))
	default:
		in.BlockSize = fs.BlockSize()
	}
	param, _ := readSmall(filepath.Join(o.SysPath, "module", "memory_hotplug", "parameters", "memmap_on_memory"))
	in.MemmapOnMemory = DecideMemmapOnMemory(param, in.KernelRelease, in.BlockSize, in.PageSize, in.StructPage)
	return e
}

// Estimate returns the headroom now: from meminfo and zoneinfo read at most MaxAge ago. It
// blocks on two file reads when they are due (zoneinfo grows with the CPUs: a few KiB here, MiB
// on machines of hundreds of CPUs) and is safe for concurrent use; callers that come while it
// reads wait for that reading.
func (e *Estimator) Estimate() (Estimate, error) {
	if e.err != nil {
		return Estimate{}, e.err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.at.IsZero() && time.Since(e.at) < e.o.MaxAge {
		return e.copyLast(), nil
	}
	in := e.static
	var err error
	if in.Meminfo, err = readParse(filepath.Join(e.o.ProcPath, "meminfo"), maxMeminfo, ParseMeminfo); err != nil {
		return Estimate{}, err
	}
	if in.Zones, err = readParse(filepath.Join(e.o.ProcPath, "zoneinfo"), maxZoneinfo, ParseZoneinfo); err != nil {
		return Estimate{}, err
	}
	est, err := Compute(in)
	if err != nil {
		return Estimate{}, err
	}
	e.last, e.at = est, time.Now()
	return e.copyLast(), nil
}

// copyLast returns the last estimate with zones of its own, so that callers may keep it.
func (e *Estimator) copyLast() Estimate {
	c := e.last
	c.Zones = slices.Clone(c.Zones)
	return c
}

// Headroom returns Estimate's headroom in bytes, for a gauge. It blocks and is safe for
// concurrent use as Estimate is.
func (e *Estimator) Headroom() (uint64, error) {
	est, err := e.Estimate()
	return est.Headroom, err
}

// readParse reads at most max bytes of path and parses them.
func readParse[T any](path string, max int64, parse func([]byte) (T, error)) (T, error) {
	var zero T
	f, err := os.Open(path)
	if err != nil {
		return zero, fmt.Errorf("headroom: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return zero, fmt.Errorf("headroom: read %s: %w", path, err)
	}
	v, err := parse(b)
	if err != nil {
		return zero, fmt.Errorf("headroom: %s: %w", path, err)
	}
	return v, nil
}

// readSmall reads a one-line file, trimmed.
func readSmall(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	return strings.TrimSpace(string(b)), err
}

// memmapPerBlockSince is the first Linux release that adds hot-added memory block by block
// when memmap_on_memory is set, each block with its own memmap on itself (commit "mm/memory_hotplug:
// split memmap_on_memory requests across memblocks"). Before it, memmap_on_memory applied only to
// a range of exactly one block, and an ACPI DIMM is added as one range.
var memmapPerBlockSince = [2]int{6, 8}

// DecideMemmapOnMemory says whether the kernel takes the memmap of a hot-added DIMM from the DIMM
// itself: param is the memory_hotplug.memmap_on_memory parameter as read ("Y", "N", "force";
// "" when absent), release the kernel release ("6.1.0-57-amd64"). It applies where the parameter
// is set, the kernel is 6.8 or later, and (unless "force") the memmap of a block fills whole
// PMD-mapped pages, as the kernel requires. An unknown release counts as an older kernel: the
// headroom is then lower than it could be, never higher. It does not block and is safe for
// concurrent use.
func DecideMemmapOnMemory(param, release string, blockSize, pageSize, structPage uint64) MemmapOnMemory {
	m := MemmapOnMemory{Parameter: param}
	switch param {
	case "":
		m.Reason = "the kernel has no memory_hotplug.memmap_on_memory parameter: the memmap comes from kernel memory"
		return m
	case "N", "n", "0":
		m.Reason = "memory_hotplug.memmap_on_memory is off: the memmap comes from kernel memory"
		return m
	case "Y", "y", "1", "force":
	default:
		m.Reason = fmt.Sprintf("memory_hotplug.memmap_on_memory is %q, not understood: the memmap is counted in kernel memory", param)
		return m
	}
	major, minor, ok := parseRelease(release)
	switch {
	case !ok:
		m.Reason = fmt.Sprintf("kernel release %q not understood: the memmap is counted in kernel memory", release)
	case major < memmapPerBlockSince[0] || (major == memmapPerBlockSince[0] && minor < memmapPerBlockSince[1]):
		m.Reason = fmt.Sprintf("Linux %d.%d adds a hot-added DIMM as one range, and memmap_on_memory applies only to ranges of one block before 6.8: the memmap comes from kernel memory", major, minor)
	case param != "force" && pageSize > 0 && (blockSize/pageSize*structPage)%(pageSize*(pageSize/8)) != 0:
		m.Reason = "the memmap of a memory block does not fill whole PMD-mapped pages, which memmap_on_memory needs (unless \"force\"): the memmap comes from kernel memory"
	default:
		m.Applies = true
		m.Reason = fmt.Sprintf("Linux %d.%d adds hot-added memory block by block, each with its memmap on itself", major, minor)
	}
	return m
}

// parseRelease returns the major and minor numbers of a kernel release such as
// "6.1.0-57-amd64" or "6.18.44-fc-v1272".
func parseRelease(r string) (major, minor int, ok bool) {
	a, rest, ok1 := strings.Cut(r, ".")
	end := strings.IndexFunc(rest, func(c rune) bool { return c < '0' || c > '9' })
	if end >= 0 {
		rest = rest[:end]
	}
	var err1, err2 error
	major, err1 = strconv.Atoi(a)
	minor, err2 = strconv.Atoi(rest)
	return major, minor, ok1 && err1 == nil && err2 == nil && major >= 0 && minor >= 0
}
