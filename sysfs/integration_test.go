package sysfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"

	"github.com/google/go-cmp/cmp"
)

// TestIntegrationRealSysfs reads this machine's /sys and checks the package against the kernel's
// own files, read here without the package. It only reads.
func TestIntegrationRealSysfs(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("reads this machine's /sys: an integration test, left out with -short")
	}
	const root = "/sys"
	cpuRoot := filepath.Join(root, cpuDir)
	if _, err := os.Stat(cpuRoot); err != nil {
		testenv.Unavailable(t, "no real sysfs to read: %v (not Linux, or /sys not mounted)", err)
	}
	fsys, err := NewFS(root)
	if err != nil {
		t.Fatalf("NewFS(%q): %v", root, err)
	}

	raw := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	// stable calls read between two reads of the kernel's online list, up to a few times until
	// the list is the same before and after, and returns that list: other tests on this machine
	// may take cpu1 offline and back while this one runs.
	stable := func(t *testing.T, read func()) []int {
		t.Helper()
		for range 5 {
			before := raw(filepath.Join(cpuRoot, "online"))
			read()
			if raw(filepath.Join(cpuRoot, "online")) == before {
				online, err := ParseCPUList(before)
				if err != nil {
					t.Fatalf("the kernel's online list: %v", err)
				}
				return online
			}
		}
		t.Skip("the online CPUs kept changing while the test read them")
		return nil
	}

	t.Run("CPUSets", func(t *testing.T) {
		var sets CPUSets
		var err error
		online := stable(t, func() { sets, err = fsys.CPUSets() })
		if err != nil {
			t.Fatalf("CPUSets: %v", err)
		}
		if diff := cmp.Diff(online, sets.Online); diff != "" {
			t.Errorf("CPUSets().Online differs from %s/online (-want +got):\n%s", cpuRoot, diff)
		}
		if got, want := FormatCPUList(sets.Possible), raw(filepath.Join(cpuRoot, "possible")); got != want {
			t.Errorf("FormatCPUList(CPUSets().Possible) = %q, the kernel prints %q", got, want)
		}
		if got, want := FormatCPUList(sets.Present), raw(filepath.Join(cpuRoot, "present")); got != want {
			t.Errorf("FormatCPUList(CPUSets().Present) = %q, the kernel prints %q", got, want)
		}
	})

	t.Run("CPUs", func(t *testing.T) {
		var cpus []CPU
		var err error
		online := stable(t, func() { cpus, err = fsys.CPUs() })
		if err != nil {
			t.Fatalf("CPUs: %v", err)
		}
		dirs, err := filepath.Glob(filepath.Join(cpuRoot, "cpu[0-9]*"))
		if err != nil {
			t.Fatal(err)
		}
		var wantNums []int
		for _, d := range dirs {
			if n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "cpu")); err == nil {
				wantNums = append(wantNums, n)
			}
		}
		slices.Sort(wantNums)
		var gotNums, gotOnline []int
		for _, c := range cpus {
			gotNums = append(gotNums, c.Number)
			if c.Online {
				gotOnline = append(gotOnline, c.Number)
			}
			_, err := os.Stat(filepath.Join(fsys.CPUPath(c.Number), "online"))
			if hot := err == nil; c.Hotpluggable != hot {
				t.Errorf("cpu%d: Hotpluggable = %v, but the online file exists: %v", c.Number, c.Hotpluggable, hot)
			}
		}
		if diff := cmp.Diff(wantNums, gotNums); diff != "" {
			t.Errorf("CPU numbers differ from the cpuN directories (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(online, gotOnline); diff != "" {
			t.Errorf("CPUs with Online set differ from %s/online (-want +got):\n%s", cpuRoot, diff)
		}
	})

	t.Run("MemoryBlocks", func(t *testing.T) {
		memRoot := filepath.Join(root, memoryDir)
		if _, err := os.Stat(memRoot); errors.Is(err, fs.ErrNotExist) {
			if fsys.HasMemory() {
				t.Errorf("HasMemory() = true, but %s does not exist", memRoot)
			}
			testenv.Unavailable(t, "the kernel has no memory hotplug support: %v", err)
		}
		if !fsys.HasMemory() {
			t.Fatalf("HasMemory() = false, but %s exists", memRoot)
		}
		wantSize, err := strconv.ParseUint(raw(filepath.Join(memRoot, "block_size_bytes")), 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if got := fsys.BlockSize(); got != wantSize {
			t.Errorf("BlockSize() = %#x, block_size_bytes says %#x", got, wantSize)
		}
		blocks, err := fsys.MemoryBlocks()
		if err != nil {
			t.Fatalf("MemoryBlocks: %v", err)
		}
		dirs, err := filepath.Glob(filepath.Join(memRoot, "memory[0-9]*"))
		if err != nil {
			t.Fatal(err)
		}
		if len(blocks) != len(dirs) {
			t.Errorf("MemoryBlocks() returned %d blocks, %s has %d memoryN directories", len(blocks), memRoot, len(dirs))
		}
		for _, b := range blocks {
			if b.PhysStart != b.PhysIndex*wantSize || b.Size != wantSize {
				t.Errorf("memory%d: PhysStart %#x, Size %#x; want %#x, %#x", b.Index, b.PhysStart, b.Size, b.PhysIndex*wantSize, wantSize)
			}
			// PhysIndex is not read but taken from the name: the kernel's phys_index must agree.
			if pi, err := strconv.ParseUint(raw(filepath.Join(fsys.MemoryBlockPath(b.Index), "phys_index")), 16, 64); err != nil || pi != b.PhysIndex {
				t.Errorf("memory%d: PhysIndex %d, the kernel's phys_index says %d (%v)", b.Index, b.PhysIndex, pi, err)
			}
			if state := raw(filepath.Join(fsys.MemoryBlockPath(b.Index), "state")); b.State != state {
				t.Errorf("memory%d: State = %q, the kernel says %q", b.Index, b.State, state)
			}
		}
		if _, err := fsys.AutoOnlineBlocks(); err != nil {
			t.Errorf("AutoOnlineBlocks: %v", err)
		}
	})

	t.Run("UeventSeqnum", func(t *testing.T) {
		before, err := strconv.ParseUint(raw(filepath.Join(root, "kernel/uevent_seqnum")), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fsys.UeventSeqnum()
		after, _ := strconv.ParseUint(raw(filepath.Join(root, "kernel/uevent_seqnum")), 10, 64)
		if err != nil || got < before || got > after {
			t.Errorf("UeventSeqnum() = %d, %v; the kernel's counter read %d before and %d after", got, err, before, after)
		}
	})
}

// BenchmarkMemoryBlocksRealSysfs scans this machine's memory blocks, for the cost per block of
// kernfs reads (compare BenchmarkMemoryBlocks on a generated tree).
func BenchmarkMemoryBlocksRealSysfs(b *testing.B) {
	fsys, err := NewFS("/sys")
	if err != nil || !fsys.HasMemory() {
		b.Skipf("no real sysfs with memory blocks to read (NewFS: %v)", err)
	}
	n := 0
	for b.Loop() {
		blocks, err := fsys.MemoryBlocks()
		if err != nil {
			b.Fatal(err)
		}
		n = len(blocks)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(max(n, 1)), "ns/block")
}

// The kernel's cpu/online held open reads what is online at each Read: a CPU taken offline and
// back is seen both ways through the one open file.
func TestIntegrationOnlineCPUsHeldOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a CPU of this machine offline: an integration test, left out with -short")
	}
	testenv.RequireRoot(t)
	testenv.LockCPUs(t)
	n := testenv.HotpluggableCPU(t)
	fsys, err := NewFS("/sys")
	if err != nil {
		t.Fatal(err)
	}
	o, err := fsys.OpenOnlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var set CPUSet
	for _, online := range []bool{false, true, false, true} {
		testenv.SetCPUOnline(t, n, online)
		if err := o.Read(&set); err != nil {
			t.Fatal(err)
		}
		if set.Contains(n) != online || !set.Contains(0) {
			t.Errorf("cpu%d online=%v: Read shows cpu%d %v, cpu0 %v", n, online, n, set.Contains(n), set.Contains(0))
		}
	}
}
