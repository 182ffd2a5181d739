package sysfs

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// OfflineError is the kernel's refusal to take a memory block offline with EBUSY: it found a
// page in the block that it could not move out. It says what can be known of why, in one line:
// the block's zone (ZONE_NORMAL and the DMA zones hold kernel allocations, which cannot move;
// ZONE_MOVABLE should only hold pages that can), and the kernel's own report of the page from its
// log, when the log is readable. Err is the write's error: errors.Is(err, syscall.EBUSY) holds.
type OfflineError struct {
	// Block is the memory block's index.
	Block int
	// Zone is the block's zone as valid_zones shows it for an online block ("Normal",
	// "Movable", "DMA32"); "" when it could not be read.
	Zone string
	// Kernel is what the kernel logged about a page of the block while refusing, such as
	// "unmovable page at pfn 0x100400"; "" when its log was not readable (no CAP_SYSLOG, or
	// systemd's ProtectKernelLogs=) or said nothing about this block.
	Kernel string
	// Err is the error of the write to the block's state file.
	Err error
}

// Error returns the write's error followed by the explanation, such as
// `sysfs: write "offline" to .../memory32/state: device or resource busy: the kernel could not
// move every page out (memory32 is in zone Normal, which holds kernel allocations that cannot
// move; kernel: unmovable page at pfn 0x100400)`.
func (e *OfflineError) Error() string {
	var why []string
	switch {
	case e.Zone == "Movable":
		why = append(why, fmt.Sprintf("memory%d is in zone Movable: a page was pinned or could not be migrated", e.Block))
	case e.Zone == "Normal" || strings.HasPrefix(e.Zone, "DMA"):
		why = append(why, fmt.Sprintf("memory%d is in zone %s, which holds kernel allocations that cannot move", e.Block, e.Zone))
	case e.Zone != "":
		why = append(why, fmt.Sprintf("memory%d is in zone %s", e.Block, e.Zone))
	}
	if e.Kernel != "" {
		why = append(why, "kernel: "+e.Kernel)
	}
	s := e.Err.Error() + ": the kernel could not move every page out"
	if len(why) > 0 {
		s += " (" + strings.Join(why, "; ") + ")"
	}
	return s
}

// Unwrap returns the write's error.
func (e *OfflineError) Unwrap() error { return e.Err }

// OfflineMemoryBlock writes "offline" to memoryN/state, as SetMemoryState does. When the kernel
// refuses with EBUSY, the error is an *OfflineError that says why as far as it can be known: the
// block's zone, and the kernel's own lines about the block, read from the kernel log (see
// WithKernelLog) from just before the write. Any other error is the write's.
//
// It blocks until the kernel is done, or ctx ends. A block of pages in use takes a while (their
// pages are migrated first), and the kernel retries a migration that fails (a page held by a
// pipe, by I/O in flight) until it succeeds or the writing thread has a signal pending; only an
// unmovable page fails at once. When ctx ends during the write, the writing thread is signalled
// until the kernel gives up (it then leaves the block online, its pages where they went); the
// error then wraps syscall.EINTR and context.Cause(ctx). It is safe for concurrent use.
func (fsys FS) OfflineMemoryBlock(ctx context.Context, n int) error {
	if n < 0 {
		return fmt.Errorf("sysfs: invalid memory block %d", n)
	}
	p := fsys.MemoryBlockPath(n) + "/state"
	return fsys.offline(n, func() error { return writeInterruptible(ctx, p, "offline") })
}

// offline runs write, the offline of block n, and explains its EBUSY from the block's zone and
// the kernel log's records from just before write.
func (fsys FS) offline(n int, write func() error) error {
	log := openKernelLog(fsys.kmsg) // nil when there is none or it is not readable
	defer log.close()
	err := write()
	if err == nil || !errors.Is(err, syscall.EBUSY) {
		return err
	}
	oe := &OfflineError{Block: n, Err: err}
	if b, rerr := fsys.MemoryBlock(n); rerr == nil {
		oe.Zone = b.ValidZones
	}
	if fsys.blockSize != 0 {
		first := uint64(n) * fsys.blockSize / pageSize
		oe.Kernel = kernelReason(log.records(), first, first+fsys.blockSize/pageSize)
	}
	return oe
}

// maxReasonLine bounds a kernel line quoted in an OfflineError.
const maxReasonLine = 160

// pageSize is the page size the kernel's page frame numbers count in (x86, arm64 with 4 KiB
// pages).
const pageSize = 4096

var (
	// pfnRE finds a page frame number in a kernel line: dump_page's "pfn:0x100400", or
	// "failed to isolate pfn 100400" and "migrating pfn 100400 failed ret:-16" from
	// mm/memory_hotplug.c (hex, without 0x).
	pfnRE = regexp.MustCompile(`\bpfn[: ](?:0x)?([0-9a-f]+)\b`)
	// offliningRE is offline_pages's own line (pr_debug on recent kernels, so rarely seen):
	// "memory offlining [mem 0x100000000-0x107ffffff] failed due to unmovable page".
	offliningRE = regexp.MustCompile(`^memory offlining \[mem (0x[0-9a-f]+)-0x[0-9a-f]+\] failed due to (.+)$`)
)

// kernelReason returns what the kernel log's records say about a page frame in [first, end):
// "unmovable page at pfn 0x100400" from dump_page's "page dumped because: unmovable page"
// after its "page:... pfn:0x100400" line, or else a line naming such a page frame, or else
// offline_pages's "failed due to" reason for a range starting at first; "" when none does.
func kernelReason(records []string, first, end uint64) string {
	inBlock := func(s string) (uint64, bool) {
		m := pfnRE.FindStringSubmatch(s)
		if m == nil {
			return 0, false
		}
		pfn, err := strconv.ParseUint(m[1], 16, 64)
		return pfn, err == nil && pfn >= first && pfn < end
	}
	var pfn uint64
	var seen bool   // the last line that named a page frame named one of this block
	var line string // the first line that names a page frame of this block
	var dueTo string
	for _, r := range records {
		switch because, ok := strings.CutPrefix(r, "page dumped because: "); {
		case ok && seen:
			return fmt.Sprintf("%s at pfn %#x", because, pfn)
		case pfnRE.MatchString(r):
			pfn, seen = inBlock(r)
			if seen && line == "" {
				line = r
			}
		default:
			if m := offliningRE.FindStringSubmatch(r); m != nil && dueTo == "" {
				if start, err := strconv.ParseUint(m[1], 0, 64); err == nil && start/pageSize == first {
					dueTo = "offlining failed due to " + m[2]
				}
			}
		}
	}
	if line != "" {
		if len(line) > maxReasonLine {
			line = line[:maxReasonLine] + "..."
		}
		return line
	}
	return dueTo
}
