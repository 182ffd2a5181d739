package sysfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMemoryBlockOnline(t *testing.T) {
	t.Parallel()
	tests := []struct {
		state string
		want  bool
	}{
		{"online", true},
		{"going-offline", true},
		{"offline", false},
		{"", false},
		{"online_movable", false}, // written to state, never read back
	}
	for _, tt := range tests {
		t.Run(tt.state, func(t *testing.T) {
			if got := (MemoryBlock{State: tt.state}).Online(); got != tt.want {
				t.Errorf("MemoryBlock{State: %q}.Online() = %v, want %v", tt.state, got, tt.want)
			}
		})
	}
}

func TestMemoryBlocks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		tree tree
		want []MemoryBlock
	}{
		{
			name: "no blocks",
			tree: minimalTree().withMemory(),
			want: []MemoryBlock{},
		},
		{
			name: "numeric order, noise ignored",
			tree: func() tree {
				tr := minimalTree().withMemory().block("10", "0000000a", "online").block("9", "00000009", "offline").block("100", "00000064", "online")
				tr["devices/system/memory/memory/"] = ""
				tr["devices/system/memory/memory_failure/"] = ""
				tr["devices/system/memory/memory9a/"] = ""
				tr["devices/system/memory/probe"] = ""
				tr["devices/system/memory/power/"] = ""
				return tr
			}(),
			want: []MemoryBlock{
				{Index: 9, State: "offline", PhysIndex: 9, PhysStart: 9 * mib128, Size: mib128, ValidZones: "", Node: 0}, // valid_zones of an offline block is not read
				{Index: 10, State: "online", PhysIndex: 10, PhysStart: 10 * mib128, Size: mib128, ValidZones: "Normal", Node: 0},
				{Index: 100, State: "online", PhysIndex: 100, PhysStart: 100 * mib128, Size: mib128, ValidZones: "Normal", Node: 0},
			},
		},
		{
			name: "node links of every kind",
			tree: tree{
				"devices/system/cpu/possible":                 "0\n",
				"devices/system/memory/block_size_bytes":      "80000000\n", // 2 GiB blocks
				"devices/system/memory/memory0/state":         "online\n",
				"devices/system/memory/memory0/phys_index":    "00000000\n",
				"devices/system/memory/memory0/node2/":        "", // a plain empty directory
				"devices/system/memory/memory1/state":         "online\n",
				"devices/system/memory/memory1/phys_index":    "00000001\n",
				"devices/system/memory/memory1/node7":         "-> ../../node/node7", // dangling
				"devices/system/memory/memory1/node3":         "-> ../../node/node3", // the lowest counts
				"devices/system/memory/memory2/state":         "offline\n",
				"devices/system/memory/memory2/phys_index":    "00000002\n",
				"devices/system/memory/memory2/removable":     "0\n",
				"devices/system/memory/memory2/valid_zones":   "DMA32 Normal Movable\n",
				"devices/system/memory/memory2/nodes/":        "", // not nodeM
				"devices/system/node/node3/cpulist":           "\n",
				"devices/system/memory/memory2/power/control": "auto\n",
			},
			want: []MemoryBlock{
				{Index: 0, State: "online", PhysIndex: 0, PhysStart: 0, Size: 2 << 30, Node: 2},
				{Index: 1, State: "online", PhysIndex: 1, PhysStart: 2 << 30, Size: 2 << 30, Node: 3},
				{Index: 2, State: "offline", PhysIndex: 2, PhysStart: 4 << 30, Size: 2 << 30, ValidZones: "", Node: -1},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fsys := tt.tree.mustFS(t)
			got, err := fsys.MemoryBlocks()
			if err != nil {
				t.Fatalf("MemoryBlocks: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("MemoryBlocks() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNoMemory(t *testing.T) {
	t.Parallel()
	fsys := minimalTree().mustFS(t)
	if fsys.HasMemory() {
		t.Error("HasMemory() = true, want false")
	}
	if got := fsys.BlockSize(); got != 0 {
		t.Errorf("BlockSize() = %d, want 0", got)
	}
	blocks, err := fsys.MemoryBlocks()
	if blocks != nil || err != nil {
		t.Errorf("MemoryBlocks() = %v, %v; want nil, nil", blocks, err)
	}
	if _, err := fsys.MemoryBlock(0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("MemoryBlock(0) error = %v, want one wrapping fs.ErrNotExist", err)
	}
	if _, err := fsys.AutoOnlineBlocks(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("AutoOnlineBlocks() error = %v, want one wrapping fs.ErrNotExist", err)
	}
}

func TestMemoryBlockErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		edit    func(tree)
		n       int
		wantIs  error  // nil: any error
		wantMsg string // a part of the message
	}{
		{
			name:    "negative number",
			n:       -1,
			wantMsg: "sysfs: invalid memory block number -1",
		},
		{
			name:    "no such block",
			n:       99,
			wantIs:  fs.ErrNotExist,
			wantMsg: "devices/system/memory/memory99: no such file or directory",
		},
		{
			name:    "missing state",
			edit:    func(tr tree) { delete(tr, "devices/system/memory/memory1/state") },
			n:       1,
			wantIs:  fs.ErrNotExist,
			wantMsg: "memory1/state: no such file or directory",
		},
		{
			name:    "state too large",
			edit:    func(tr tree) { tr["devices/system/memory/memory1/state"] = strings.Repeat("online ", 1000) },
			n:       1,
			wantMsg: "memory1/state: larger than 4096 bytes",
		},
		{
			name: "valid_zones is a directory",
			edit: func(tr tree) {
				tr["devices/system/memory/memory1/valid_zones/"] = ""
				delete(tr, "devices/system/memory/memory1/valid_zones")
			},
			n:       1,
			wantMsg: "memory1/valid_zones: is a directory",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := minimalTree().withMemory().block("0", "00000000", "online").block("1", "00000001", "online")
			if tt.edit != nil {
				tt.edit(tr)
			}
			fsys := tr.mustFS(t)

			b, err := fsys.MemoryBlock(tt.n)
			if err == nil {
				t.Fatalf("MemoryBlock(%d) = %+v, want an error", tt.n, b)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("MemoryBlock(%d) error %q: errors.Is(err, %v) = false, want true", tt.n, err, tt.wantIs)
			}
			if !strings.HasPrefix(err.Error(), "sysfs: ") || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("MemoryBlock(%d) error = %q, want it to start with \"sysfs: \" and contain %q", tt.n, err, tt.wantMsg)
			}
			if tt.n < 0 || tt.n > 1 {
				return
			}
			// The scan must not hide a block that exists but cannot be read.
			if _, err := fsys.MemoryBlocks(); err == nil {
				t.Errorf("MemoryBlocks() = no error, want one for memory%d", tt.n)
			} else if !strings.Contains(err.Error(), fsys.MemoryBlockPath(tt.n)) {
				t.Errorf("MemoryBlocks() error = %q, want it to name %s", err, fsys.MemoryBlockPath(tt.n))
			}
		})
	}
}

// TestMemoryBlocksVanished checks that a block whose directory is gone by the time it is read,
// as when a hot-remove racing the scan, is left out rather than failing the scan, whether one
// goroutine reads the blocks or several share them.
func TestMemoryBlocksVanished(t *testing.T) {
	t.Parallel()
	tr := minimalTree().withMemory()
	var want []MemoryBlock
	for _, n := range []int{0, 2, 3, 5, 6, 8} {
		tr.block(strconv.Itoa(n), fmt.Sprintf("%08x", n), "online")
		want = append(want, MemoryBlock{Index: n, State: "online", PhysIndex: uint64(n), PhysStart: uint64(n) * mib128, Size: mib128, ValidZones: "Normal", Node: 0})
	}
	fsys := tr.mustFS(t)
	// As if memory1, memory4, memory7 and memory9 were listed, then removed.
	listed := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	for _, workers := range []int{0, 1, 3, 10, 20} {
		t.Run(fmt.Sprintf("%d goroutines", workers), func(t *testing.T) {
			t.Parallel()
			got, err := fsys.memoryBlocks(listed, workers)
			if err != nil {
				t.Fatalf("memoryBlocks: %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("memoryBlocks() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMemoryBlocksParallelError checks that a block that exists but cannot be read fails the
// scan when goroutines share it.
func TestMemoryBlocksParallelError(t *testing.T) {
	t.Parallel()
	tr := minimalTree().withMemory()
	for n := range 10 {
		tr.block(strconv.Itoa(n), fmt.Sprintf("%08x", n), "online")
	}
	tr["devices/system/memory/memory6/state"] = strings.Repeat("online ", 1000) // larger than an attribute can be
	fsys := tr.mustFS(t)
	for _, workers := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("%d goroutines", workers), func(t *testing.T) {
			t.Parallel()
			got, err := fsys.memoryBlocks([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, workers)
			if err == nil {
				t.Fatalf("memoryBlocks() = %d blocks, no error; want an error for memory6", len(got))
			}
			if want := "memory6/state"; !strings.Contains(err.Error(), want) {
				t.Errorf("memoryBlocks() error = %q, want it to name %s", err, want)
			}
		})
	}
}

func TestAutoOnlineBlocks(t *testing.T) {
	t.Parallel()
	for _, want := range []string{"online", "offline", "online_movable", "online_kernel"} {
		t.Run(want, func(t *testing.T) {
			t.Parallel()
			tr := minimalTree().withMemory()
			tr["devices/system/memory/auto_online_blocks"] = want + "\n"
			got, err := tr.mustFS(t).AutoOnlineBlocks()
			if err != nil {
				t.Fatalf("AutoOnlineBlocks: %v", err)
			}
			if got != want {
				t.Errorf("AutoOnlineBlocks() = %q, want %q", got, want)
			}
		})
	}
}

// genMemoryTree writes a sysfs tree with n memory blocks of 128 MiB, laid out as the kernel does
// (state, online, phys_index, valid_zones, removable, phys_device, uevent and a node0 link).
func genMemoryTree(tb testing.TB, n int) string {
	tb.Helper()
	root := minimalTree().build(tb)
	mem := filepath.Join(root, "devices/system/memory")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "devices/system/node/node0"), 0o755); err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		d := filepath.Join(mem, fmt.Sprintf("memory%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
		write(filepath.Join(d, "state"), "online\n")
		write(filepath.Join(d, "online"), "1\n")
		write(filepath.Join(d, "phys_index"), fmt.Sprintf("%08x\n", i))
		write(filepath.Join(d, "valid_zones"), "Normal\n")
		write(filepath.Join(d, "removable"), "1\n")
		write(filepath.Join(d, "phys_device"), "0\n")
		write(filepath.Join(d, "uevent"), "")
		if err := os.Symlink("../../node/node0", filepath.Join(d, "node0")); err != nil {
			tb.Fatal(err)
		}
	}
	write(filepath.Join(mem, "block_size_bytes"), "8000000\n")
	write(filepath.Join(mem, "auto_online_blocks"), "online\n")
	return root
}

// BenchmarkMemoryBlocks scans a generated tree of 8,192 blocks (1 TiB of 128 MiB blocks).
func BenchmarkMemoryBlocks(b *testing.B) {
	const blocks = 8192
	fsys, err := NewFS(genMemoryTree(b, blocks))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		got, err := fsys.MemoryBlocks()
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != blocks {
			b.Fatalf("MemoryBlocks() returned %d blocks, want %d", len(got), blocks)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/blocks, "ns/block")
}
