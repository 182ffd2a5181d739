package headroom

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// fixture writes a procfs and a sysfs tree under a temporary folder: the guest's captures at
// boot, its kernel release, 128 MiB blocks, memmap_on_memory as given ("" for none) and, when
// kcore is set, a /proc/kcore with a VMCOREINFO note.
func fixture(t *testing.T, memmapParam string, kcore bool) (proc, sys string) {
	t.Helper()
	root := t.TempDir()
	proc, sys = filepath.Join(root, "proc"), filepath.Join(root, "sys")
	write := func(path, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(proc, "zoneinfo"), string(readTestdata(t, "zoneinfo-guest-512M-boot")))
	write(filepath.Join(proc, "meminfo"), string(readTestdata(t, "meminfo-guest-512M-boot")))
	write(filepath.Join(proc, "sys/kernel/osrelease"), "6.1.0-57-amd64\n")
	write(filepath.Join(sys, "devices/system/cpu/present"), "0\n")
	write(filepath.Join(sys, "devices/system/memory/block_size_bytes"), "8000000\n")
	if memmapParam != "" {
		write(filepath.Join(sys, "module/memory_hotplug/parameters/memmap_on_memory"), memmapParam+"\n")
	}
	if kcore {
		writeCore(t, filepath.Join(proc, "kcore"), note(binary.LittleEndian, "VMCOREINFO", 0, "PAGESIZE=4096\nSIZE(page)=64\n"))
	}
	return proc, sys
}

func TestEstimator(t *testing.T) {
	for _, tt := range []struct {
		name     string
		release  string
		param    string
		kcore    bool
		source   string
		applies  bool
		headroom uint64
	}{
		{"no kcore, no memmap_on_memory", "", "", false, "assumed", false, 18522046464},
		{"kcore", "", "N", true, "vmcoreinfo", false, 18522046464},
		// 6.1 adds a DIMM as one range: the parameter changes nothing.
		{"memmap_on_memory on 6.1", "", "Y", true, "vmcoreinfo", false, 18522046464},
		// 6.8 and later put each block's memmap on the block: only page tables and the
		// blocks' structures (20,992 bytes a block) come from the 281 MiB available.
		{"memmap_on_memory on 6.8", "6.8.0-31-generic", "Y", true, "vmcoreinfo", true, 1876632272896},
	} {
		t.Run(tt.name, func(t *testing.T) {
			proc, sys := fixture(t, tt.param, tt.kcore)
			release := "6.1.0-57-amd64"
			if tt.release != "" {
				release = tt.release
				if err := os.WriteFile(filepath.Join(proc, "sys/kernel/osrelease"), []byte(release+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			e, err := New(Options{ProcPath: proc, SysPath: sys, Reserve: DefaultReserve, PageSize: 4096}).Estimate()
			if err != nil {
				t.Fatal(err)
			}
			if e.Headroom != tt.headroom || e.StructPageSource != tt.source || e.StructPage != 64 || e.MemmapOnMemory.Applies != tt.applies ||
				e.MemmapOnMemory.Parameter != tt.param || e.BlockSize != block || e.KernelRelease != release || e.Meminfo.MemTotal != 401460<<10 {
				t.Errorf("estimate %+v; want headroom %d, struct page 64 (%s), memmap_on_memory %q applies %v", e, tt.headroom, tt.source, tt.param, tt.applies)
			}
		})
	}
}

// TestEstimatorCaches: meminfo and zoneinfo are read again only once MaxAge has passed, and
// concurrent callers share a reading.
func TestEstimatorCaches(t *testing.T) {
	proc, sys := fixture(t, "", false)
	est := New(Options{ProcPath: proc, SysPath: sys, MaxAge: time.Hour, PageSize: 4096})
	first, err := est.Headroom()
	if err != nil {
		t.Fatal(err)
	}
	after := readTestdata(t, "zoneinfo-guest-512M-after-17G")
	if err := os.WriteFile(filepath.Join(proc, "zoneinfo"), after, 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if h, err := est.Headroom(); err != nil || h != first {
				t.Errorf("within MaxAge: %d, %v; want the first estimate %d", h, err, first)
			}
		})
	}
	wg.Wait()
	est.mu.Lock()
	est.at = time.Now().Add(-2 * time.Hour)
	est.mu.Unlock()
	if h, err := est.Headroom(); err != nil || h == first {
		t.Errorf("after MaxAge: %d, %v; want a new estimate", h, err)
	}
}

func TestEstimatorErrors(t *testing.T) {
	t.Run("no memory hotplug", func(t *testing.T) {
		proc, sys := fixture(t, "", false)
		os.RemoveAll(filepath.Join(sys, "devices/system/memory"))
		_, err := New(Options{ProcPath: proc, SysPath: sys}).Estimate()
		if err == nil || !strings.Contains(err.Error(), "the kernel has no memory hotplug") {
			t.Errorf("Estimate: %v; want one saying there is no memory hotplug", err)
		}
	})
	t.Run("no zoneinfo", func(t *testing.T) {
		proc, sys := fixture(t, "", false)
		os.Remove(filepath.Join(proc, "zoneinfo"))
		_, err := New(Options{ProcPath: proc, SysPath: sys}).Estimate()
		if !errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Estimate: %v; want a one-line error wrapping fs.ErrNotExist", err)
		}
	})
	t.Run("zoneinfo of another shape", func(t *testing.T) {
		proc, sys := fixture(t, "", false)
		os.WriteFile(filepath.Join(proc, "zoneinfo"), []byte("Node 0, zone DMA\n"), 0o644)
		_, err := New(Options{ProcPath: proc, SysPath: sys}).Estimate()
		if err == nil || !strings.Contains(err.Error(), "zoneinfo: node 0 zone DMA: no pages free line") || !strings.Contains(err.Error(), proc) {
			t.Errorf("Estimate: %v; want one naming the file and what is missing", err)
		}
	})
	t.Run("not a sysfs tree", func(t *testing.T) {
		proc, _ := fixture(t, "", false)
		_, err := New(Options{ProcPath: proc, SysPath: t.TempDir()}).Estimate()
		if err == nil || !strings.Contains(err.Error(), "is not a sysfs tree") {
			t.Errorf("Estimate: %v; want one saying it is not a sysfs tree", err)
		}
	})
}

// TestIntegrationThisMachine estimates the headroom of the machine the tests run on, from its
// own /proc and /sys: whatever it is, the estimate is whole blocks under the limit.
func TestIntegrationThisMachine(t *testing.T) {
	if _, err := os.Stat("/sys/devices/system/memory/block_size_bytes"); err != nil {
		testenv.Unavailable(t, "this kernel has no memory hotplug: %v", err)
	}
	e, err := New(Options{Reserve: DefaultReserve}).Estimate()
	if err != nil {
		t.Fatal(err)
	}
	if e.BlockSize == 0 || e.Headroom%e.BlockSize != 0 || e.Limit%e.BlockSize != 0 || e.Headroom > e.Limit || len(e.Zones) == 0 {
		t.Errorf("estimate %+v", e)
	}
	t.Logf("this machine (%s): headroom %d MiB, limit %d MiB, %d bytes of kernel memory per %d MiB block (struct page %d, %s; memmap_on_memory %q: %s)",
		e.KernelRelease, e.Headroom>>20, e.Limit>>20, e.BlockCost, e.BlockSize>>20, e.StructPage, e.StructPageSource, e.MemmapOnMemory.Parameter, e.MemmapOnMemory.Reason)
}
