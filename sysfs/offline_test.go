package sysfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// dumpOf is what Linux 6.1 logged, record by record, when memory32 (ZONE_NORMAL, in a QEMU
// guest) refused to go offline: dump_page of the first unmovable page it found.
var dumpOf = []string{
	"page:(____ptrval____) refcount:1 mapcount:0 mapping:0000000000000000 index:0x0 pfn:0x100400",
	"flags: 0x17ffffc0000000(node=0|zone=2|lastcpupid=0x1fffff)",
	"raw: 0017ffffc0000000 0000000000000000 dead000000000122 0000000000000000",
	"raw: 0000000000000000 0000000000000000 00000001ffffffff 0000000000000000",
	"page dumped because: unmovable page",
}

func TestKernelReason(t *testing.T) {
	// memory32 with 128 MiB blocks: page frames 0x100000 to 0x108000.
	const first, end = 0x100000, 0x108000
	for _, tt := range []struct {
		name    string
		records []string
		want    string
	}{
		{"none", nil, ""},
		{"dump_page of a page of the block", dumpOf, "unmovable page at pfn 0x100400"},
		{"after unrelated lines", append([]string{"Built 1 zonelists, mobility grouping on.  Total pages: 132048", "Policy zone: Normal"}, dumpOf...),
			"unmovable page at pfn 0x100400"},
		{"dump_page of another block's page", []string{"page:(____ptrval____) refcount:1 mapcount:0 mapping:0000000000000000 index:0x0 pfn:0x108000",
			"page dumped because: unmovable page"}, ""},
		{"another block's dump, then this one's", append([]string{"page:(____ptrval____) refcount:1 pfn:0xfffff", "page dumped because: isolation failed"}, dumpOf...),
			"unmovable page at pfn 0x100400"},
		{"a page frame named in hex without 0x", []string{"migrating pfn 100abc failed ret:-16"}, "migrating pfn 100abc failed ret:-16"},
		{"a reason without a page frame of the block", []string{"page dumped because: unmovable page"}, ""},
		{"offline_pages's own line", []string{"memory offlining [mem 0x100000000-0x107ffffff] failed due to unmovable page"},
			"offlining failed due to unmovable page"},
		{"offline_pages's line for another block", []string{"memory offlining [mem 0x108000000-0x10fffffff] failed due to unmovable page"}, ""},
		{"a long line is cut", []string{"failed to isolate pfn 100001 " + strings.Repeat("x", 300)},
			"failed to isolate pfn 100001 " + strings.Repeat("x", maxReasonLine-len("failed to isolate pfn 100001 ")) + "..."},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := kernelReason(tt.records, first, end); got != tt.want {
				t.Errorf("kernelReason = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestOfflineErrorMessage(t *testing.T) {
	write := fmt.Errorf(`sysfs: write "offline" to /sys/devices/system/memory/memory32/state: %w`, syscall.EBUSY)
	const prefix = `sysfs: write "offline" to /sys/devices/system/memory/memory32/state: device or resource busy: the kernel could not move every page out`
	for _, tt := range []struct {
		e    OfflineError
		want string
	}{
		{OfflineError{Block: 32, Zone: "Normal", Kernel: "unmovable page at pfn 0x100400", Err: write},
			prefix + " (memory32 is in zone Normal, which holds kernel allocations that cannot move; kernel: unmovable page at pfn 0x100400)"},
		{OfflineError{Block: 32, Zone: "DMA32", Err: write}, prefix + " (memory32 is in zone DMA32, which holds kernel allocations that cannot move)"},
		{OfflineError{Block: 32, Zone: "Movable", Err: write}, prefix + " (memory32 is in zone Movable: a page was pinned or could not be migrated)"},
		{OfflineError{Block: 32, Zone: "Device", Err: write}, prefix + " (memory32 is in zone Device)"},
		{OfflineError{Block: 32, Kernel: "unmovable page at pfn 0x100400", Err: write}, prefix + " (kernel: unmovable page at pfn 0x100400)"},
		{OfflineError{Block: 32, Err: write}, prefix},
	} {
		e := tt.e
		if got := e.Error(); got != tt.want {
			t.Errorf("%+v:\n got %s\nwant %s", tt.e, got, tt.want)
		}
		if !errors.Is(&e, syscall.EBUSY) {
			t.Errorf("%+v does not wrap EBUSY", tt.e)
		}
	}
}

// TestOfflineExplained: a refusal with EBUSY is explained from the block's zone and the kernel
// log's records logged during the write (not those before it); other outcomes pass through.
func TestOfflineExplained(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the kernel log is Linux's")
	}
	fsys := minimalTree().withMemory().block("32", "32", "online").mustFS(t)
	kmsg := filepath.Join(t.TempDir(), "kmsg")
	// What was logged before the write is not about it.
	os.WriteFile(kmsg, []byte("4,380,5100000,-;page:(____ptrval____) refcount:1 mapcount:0 mapping:0000000000000000 index:0x0 pfn:0x100001\n4,381,5100001,-;page dumped because: old news\n"), 0o644)
	busy := fmt.Errorf("sysfs: write \"offline\" to memory32/state: %w", syscall.EBUSY)
	logDuringWrite := func(records ...string) func() error {
		return func() error {
			f, err := os.OpenFile(kmsg, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			for i, r := range records {
				fmt.Fprintf(f, "4,%d,5163086,-;%s\n SUBSYSTEM=memory\n", 389+i, r)
			}
			return busy
		}
	}
	for _, tt := range []struct {
		name   string
		fsys   FS
		write  func() error
		zone   string
		kernel string
	}{
		{"zone and kernel", fsys.WithKernelLog(kmsg), logDuringWrite(dumpOf...), "Normal", "unmovable page at pfn 0x100400"},
		{"zone only: no kernel log", fsys, logDuringWrite(dumpOf...), "Normal", ""},
		{"zone only: an unreadable kernel log", fsys.WithKernelLog(filepath.Join(t.TempDir(), "none")), logDuringWrite(dumpOf...), "Normal", ""},
		{"nothing logged during the write", fsys.WithKernelLog(kmsg), logDuringWrite(), "Normal", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.fsys.offline(32, tt.write)
			oe, ok := errors.AsType[*OfflineError](err)
			if !ok {
				t.Fatalf("offline = %v; want an *OfflineError", err)
			}
			if oe.Block != 32 || oe.Zone != tt.zone || oe.Kernel != tt.kernel || !errors.Is(err, syscall.EBUSY) {
				t.Errorf("offline = %+v; want block 32, zone %q, kernel %q, wrapping EBUSY", oe, tt.zone, tt.kernel)
			}
		})
	}
	other := fmt.Errorf("write: %w", syscall.EINVAL)
	if err := fsys.WithKernelLog(kmsg).offline(32, func() error { return other }); err != other {
		t.Errorf("offline of a write failing with EINVAL = %v; want the write's error as it is", err)
	}
	if err := fsys.offline(32, func() error { return nil }); err != nil {
		t.Errorf("offline of a write that succeeds = %v", err)
	}
	if got := (FS{root: "/sys"}).WithKernelLog("").kmsg; got != "" {
		t.Errorf("WithKernelLog(\"\") keeps %q", got)
	}
}

// TestDefaultKernelLog: only the real /sys reads the real kernel log.
func TestDefaultKernelLog(t *testing.T) {
	if fsys := minimalTree().mustFS(t); fsys.kmsg != "" {
		t.Errorf("a fixture tree reads the kernel log %q", fsys.kmsg)
	}
	if fsys, err := NewFS("/sys"); err == nil && fsys.kmsg != DefaultKernelLog {
		t.Errorf("NewFS(/sys) reads the kernel log %q; want %s", fsys.kmsg, DefaultKernelLog)
	}
}

// TestIntegrationKernelLog reads the real /dev/kmsg as OfflineMemoryBlock does: a record logged
// after the open is read (with its priority prefix removed), one logged before it is not, and
// reading stops, without waiting, when there is no more. It logs two lines of its own (root may
// write to /dev/kmsg).
func TestIntegrationKernelLog(t *testing.T) {
	if testing.Short() {
		t.Skip("writes to this machine's kernel log: an integration test, left out with -short")
	}
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "needs root: it writes to %s", DefaultKernelLog)
	}
	w, err := os.OpenFile(DefaultKernelLog, os.O_WRONLY, 0)
	if err != nil {
		testenv.Unavailable(t, "cannot write to %s: %v", DefaultKernelLog, err)
	}
	defer w.Close()
	tag := fmt.Sprintf("hotplug-agent sysfs test %d", os.Getpid())
	fmt.Fprintf(w, "<6>%s: before\n", tag)
	log := openKernelLog(DefaultKernelLog)
	if log == nil {
		t.Fatalf("openKernelLog(%s) = nil as root", DefaultKernelLog)
	}
	defer log.close()
	fmt.Fprintf(w, "<6>%s: after\n", tag)
	var mine []string
	for _, r := range log.records() {
		if strings.Contains(r, tag) {
			mine = append(mine, r)
		}
	}
	if want := []string{tag + ": after"}; !slices.Equal(mine, want) {
		t.Errorf("records of this test read after the open: %q; want %q", mine, want)
	}
}

// TestOfflineMemoryBlockContext: a context that has ended before the write leaves the block
// alone and says why; a live one writes "offline" to the block's state file.
func TestOfflineMemoryBlockContext(t *testing.T) {
	fsys := minimalTree().withMemory().block("32", "32", "online").mustFS(t)
	state := filepath.Join(fsys.MemoryBlockPath(32), "state")
	ctx, cancel := context.WithCancelCause(t.Context())
	stop := errors.New("cancelled by the client")
	cancel(stop)
	err := fsys.OfflineMemoryBlock(ctx, 32)
	if !errors.Is(err, stop) || !strings.Contains(err.Error(), "not begun") {
		t.Errorf("OfflineMemoryBlock with an ended context = %v; want not begun, wrapping its cause", err)
	}
	if b, _ := os.ReadFile(state); string(b) != "online\n" && string(b) != "online" {
		t.Errorf("state after the ended context: %q; want it untouched", b)
	}
	if err := fsys.OfflineMemoryBlock(t.Context(), 32); err != nil {
		t.Fatalf("OfflineMemoryBlock = %v", err)
	}
	if b, _ := os.ReadFile(state); string(b) != "offline" {
		t.Errorf("state = %q; want offline written", b)
	}
	if err := fsys.OfflineMemoryBlock(t.Context(), -1); err == nil {
		t.Error("OfflineMemoryBlock(-1) succeeded")
	}
}
