package sysfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fixture is what a test expects to read from a fixture tree under testdata.
type fixture struct {
	root       string
	cpus       []CPU
	sets       CPUSets
	blockSize  uint64
	blocks     []MemoryBlock
	autoOnline string
}

const mib128 = 128 << 20

var fixtures = []fixture{
	{
		// This machine: cpu0 cannot be offlined (no online file), cpu1 can; one NUMA node; the
		// usual x86 hole below 4 GiB leaves no memory24..memory31.
		root: "testdata/vm/sys",
		cpus: []CPU{
			{Number: 0, Online: true, Hotpluggable: false, Node: 0},
			{Number: 1, Online: true, Hotpluggable: true, Node: 0},
		},
		sets:      CPUSets{Possible: []int{0, 1}, Present: []int{0, 1}, Online: []int{0, 1}},
		blockSize: mib128,
		blocks: []MemoryBlock{
			{Index: 0, State: "online", PhysIndex: 0, PhysStart: 0, Size: mib128, ValidZones: "none", Node: 0},
			{Index: 1, State: "online", PhysIndex: 1, PhysStart: 0x8000000, Size: mib128, ValidZones: "DMA32", Node: 0},
			{Index: 23, State: "online", PhysIndex: 0x17, PhysStart: 0xb8000000, Size: mib128, ValidZones: "DMA32", Node: 0},
			{Index: 32, State: "online", PhysIndex: 0x20, PhysStart: 0x100000000, Size: mib128, ValidZones: "Normal", Node: 0},
			{Index: 33, State: "online", PhysIndex: 0x21, PhysStart: 0x108000000, Size: mib128, ValidZones: "Normal", Node: 0},
		},
		autoOnline: "offline",
	},
	{
		// Two nodes; cpu3 possible but not present, cpu2 present but offline; sparse memory
		// numbering; memory0 without valid_zones and removable (older kernels); memory33 going
		// offline; memory40 hot-added, offline, without a node link.
		root: "testdata/numa/sys",
		cpus: []CPU{
			{Number: 0, Online: true, Hotpluggable: false, Node: 0},
			{Number: 1, Online: true, Hotpluggable: true, Node: 0},
			{Number: 2, Online: false, Hotpluggable: true, Node: 1},
		},
		sets:      CPUSets{Possible: []int{0, 1, 2, 3}, Present: []int{0, 1, 2}, Online: []int{0, 1}},
		blockSize: mib128,
		blocks: []MemoryBlock{
			{Index: 0, State: "online", PhysIndex: 0, PhysStart: 0, Size: mib128, ValidZones: "", Node: 0},
			{Index: 1, State: "online", PhysIndex: 1, PhysStart: 0x8000000, Size: mib128, ValidZones: "DMA32", Node: 0},
			{Index: 32, State: "online", PhysIndex: 0x20, PhysStart: 0x100000000, Size: mib128, ValidZones: "Normal", Node: 1},
			{Index: 33, State: "going-offline", PhysIndex: 0x21, PhysStart: 0x108000000, Size: mib128, ValidZones: "", Node: 1},
			{Index: 40, State: "offline", PhysIndex: 0x28, PhysStart: 0x140000000, Size: mib128, ValidZones: "", Node: -1},
		},
		autoOnline: "online_movable",
	},
}

func TestFixtures(t *testing.T) {
	t.Parallel()
	for _, fx := range fixtures {
		t.Run(fx.root, func(t *testing.T) {
			t.Parallel()
			fsys, err := NewFS(fx.root)
			if err != nil {
				t.Fatalf("NewFS(%q): %v", fx.root, err)
			}
			if got := fsys.Root(); got != fx.root {
				t.Errorf("Root() = %q, want %q", got, fx.root)
			}
			if !fsys.HasMemory() {
				t.Error("HasMemory() = false, want true")
			}
			if got := fsys.BlockSize(); got != fx.blockSize {
				t.Errorf("BlockSize() = %#x, want %#x", got, fx.blockSize)
			}

			sets, err := fsys.CPUSets()
			if err != nil {
				t.Fatalf("CPUSets: %v", err)
			}
			if diff := cmp.Diff(fx.sets, sets); diff != "" {
				t.Errorf("CPUSets() mismatch (-want +got):\n%s", diff)
			}

			cpus, err := fsys.CPUs()
			if err != nil {
				t.Fatalf("CPUs: %v", err)
			}
			if diff := cmp.Diff(fx.cpus, cpus); diff != "" {
				t.Errorf("CPUs() mismatch (-want +got):\n%s", diff)
			}
			for _, want := range fx.cpus {
				got, err := fsys.CPU(want.Number)
				if err != nil {
					t.Errorf("CPU(%d): %v", want.Number, err)
					continue
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("CPU(%d) mismatch (-want +got):\n%s", want.Number, diff)
				}
			}

			blocks, err := fsys.MemoryBlocks()
			if err != nil {
				t.Fatalf("MemoryBlocks: %v", err)
			}
			if diff := cmp.Diff(fx.blocks, blocks); diff != "" {
				t.Errorf("MemoryBlocks() mismatch (-want +got):\n%s", diff)
			}
			for _, want := range fx.blocks {
				got, err := fsys.MemoryBlock(want.Index)
				if err != nil {
					t.Errorf("MemoryBlock(%d): %v", want.Index, err)
					continue
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("MemoryBlock(%d) mismatch (-want +got):\n%s", want.Index, diff)
				}
			}

			auto, err := fsys.AutoOnlineBlocks()
			if err != nil {
				t.Fatalf("AutoOnlineBlocks: %v", err)
			}
			if auto != fx.autoOnline {
				t.Errorf("AutoOnlineBlocks() = %q, want %q", auto, fx.autoOnline)
			}
		})
	}
}

func TestNewFSErrors(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	cpuOnly := tree{"devices/system/cpu/": ""}.build(t)
	garbageLists := tree{"devices/system/cpu/present": "zero\n", "devices/system/cpu/possible": "all\n"}.build(t)
	garbagePresent := tree{"devices/system/cpu/present": "0-\n"}.build(t)

	tests := []struct {
		name    string
		root    string
		wantErr string // the whole message; "" to check only wantIs and the prefix
		wantIs  error
	}{
		{
			name:    "empty root",
			root:    "",
			wantErr: "sysfs: empty root",
		},
		{
			name:    "no such root",
			root:    filepath.Join(empty, "nothing"),
			wantErr: "sysfs: " + empty + "/nothing is not a sysfs tree: " + empty + "/nothing/devices/system/cpu: no such file or directory",
			wantIs:  fs.ErrNotExist,
		},
		{
			name:    "empty directory",
			root:    empty,
			wantErr: "sysfs: " + empty + " is not a sysfs tree: " + empty + "/devices/system/cpu: no such file or directory",
			wantIs:  fs.ErrNotExist,
		},
		{
			name:    "root is a file",
			root:    file,
			wantErr: "sysfs: " + file + " is not a sysfs tree: " + file + "/devices/system/cpu: not a directory",
			wantIs:  syscall.ENOTDIR,
		},
		{
			name:    "cpu is a file",
			root:    tree{"devices/system/cpu": "0\n"}.build(t),
			wantIs:  syscall.ENOTDIR,
			wantErr: "",
		},
		{
			name:    "no CPU lists",
			root:    cpuOnly,
			wantErr: "sysfs: " + cpuOnly + " is not a sysfs tree: " + cpuOnly + "/devices/system/cpu/possible: no such file or directory",
			wantIs:  fs.ErrNotExist,
		},
		{
			name:    "garbage lists",
			root:    garbageLists,
			wantErr: "sysfs: " + garbageLists + " is not a sysfs tree: " + garbageLists + `/devices/system/cpu/present: invalid CPU list "zero": item "zero": unexpected character 'z'`,
		},
		{
			name:    "garbage present, no possible",
			root:    garbagePresent,
			wantErr: "sysfs: " + garbagePresent + " is not a sysfs tree: " + garbagePresent + `/devices/system/cpu/present: invalid CPU list "0-": item "0-": missing number`,
		},
		{
			name: "memory without block size",
			root: tree{
				"devices/system/cpu/possible": "0\n",
				"devices/system/memory/":      "",
			}.build(t),
			wantIs: fs.ErrNotExist,
		},
		{
			name: "garbage block size",
			root: tree{
				"devices/system/cpu/possible":            "0\n",
				"devices/system/memory/block_size_bytes": "128M\n",
			}.build(t),
		},
		{
			name: "zero block size",
			root: tree{
				"devices/system/cpu/possible":            "0\n",
				"devices/system/memory/block_size_bytes": "0\n",
			}.build(t),
		},
		{
			name: "memory is a file",
			root: tree{
				"devices/system/cpu/possible": "0\n",
				"devices/system/memory":       "8000000\n",
			}.build(t),
			wantIs: syscall.ENOTDIR,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fsys, err := NewFS(tt.root)
			if err == nil {
				t.Fatalf("NewFS(%q) = %+v, want an error", tt.root, fsys)
			}
			if tt.wantErr != "" && err.Error() != tt.wantErr {
				t.Errorf("NewFS error:\n got %q\nwant %q", err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "sysfs: ") {
				t.Errorf("NewFS error %q does not start with %q", err, "sysfs: ")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("NewFS error %q: errors.Is(err, %v) = false, want true", err, tt.wantIs)
			}
			if fsys != (FS{}) {
				t.Errorf("NewFS returned %+v with its error, want the zero FS", fsys)
			}
		})
	}
}

func TestNewFSAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		tree tree
	}{
		{"possible only", tree{"devices/system/cpu/possible": "0-3\n"}},
		{"present only", tree{"devices/system/cpu/present": "0\n"}},
		{"garbage present, good possible", tree{
			"devices/system/cpu/present":  "zero\n",
			"devices/system/cpu/possible": "0\n",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fsys, err := NewFS(tt.tree.build(t))
			if err != nil {
				t.Fatalf("NewFS: %v", err)
			}
			if fsys.HasMemory() || fsys.BlockSize() != 0 {
				t.Errorf("HasMemory() = %v, BlockSize() = %d; want false, 0 for a tree without memory", fsys.HasMemory(), fsys.BlockSize())
			}
		})
	}
}

func TestPaths(t *testing.T) {
	t.Parallel()
	vm, err := NewFS("testdata/vm/sys/") // NewFS cleans the root
	if err != nil {
		t.Fatal(err)
	}
	slash := FS{root: "/"} // a root of / must not give paths starting with //

	tests := []struct {
		name string
		got  string
		want string
	}{
		{"Root", vm.Root(), "testdata/vm/sys"},
		{"Path", vm.Path("devices/system/cpu", "online"), "testdata/vm/sys/devices/system/cpu/online"},
		{"Path()", vm.Path(), "testdata/vm/sys"},
		{"CPUPath", vm.CPUPath(1), "testdata/vm/sys/devices/system/cpu/cpu1"},
		{"MemoryBlockPath", vm.MemoryBlockPath(40), "testdata/vm/sys/devices/system/memory/memory40"},
		{"slash Path", slash.Path("devices"), "/devices"},
		{"slash CPUPath", slash.CPUPath(255), "/devices/system/cpu/cpu255"},
		{"slash MemoryBlockPath", slash.MemoryBlockPath(0), "/devices/system/memory/memory0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestReadAttrTooLarge(t *testing.T) {
	t.Parallel()
	tr := minimalTree()
	tr["devices/system/cpu/online"] = strings.Repeat("0,", maxAttrSize/2) + "0\n"
	fsys := tr.mustFS(t)
	_, err := fsys.CPUSets()
	if err == nil || !strings.Contains(err.Error(), "larger than 4096 bytes") {
		t.Errorf("CPUSets() error = %v, want one saying the online list is larger than 4096 bytes", err)
	}
}

// TestNotExistIfVanished checks how a failed read is reported when the directory read from is
// gone: kernfs fails a read of an already open attribute with ENODEV when its device is removed,
// and callers must still see fs.ErrNotExist.
func TestNotExistIfVanished(t *testing.T) {
	t.Parallel()
	exists := t.TempDir()
	gone := filepath.Join(exists, "memory7")
	readErr := fmt.Errorf("sysfs: read %s/state: %w", gone, syscall.ENODEV)
	tests := []struct {
		name       string
		err        error
		dir        string
		wantNotExt bool
		wantIs     error
	}{
		{"no error", nil, gone, false, nil},
		{"ENODEV, directory gone", readErr, gone, true, syscall.ENODEV},
		{"ENODEV, directory still there", readErr, exists, false, syscall.ENODEV},
		{"ENOENT", fs.ErrNotExist, exists, true, fs.ErrNotExist},
		{"other error, directory gone", syscall.EIO, gone, false, syscall.EIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := notExistIfVanished(tt.err, tt.dir)
			if tt.err == nil {
				if err != nil {
					t.Fatalf("notExistIfVanished(nil) = %v, want nil", err)
				}
				return
			}
			if got := errors.Is(err, fs.ErrNotExist); got != tt.wantNotExt {
				t.Errorf("errors.Is(%q, fs.ErrNotExist) = %v, want %v", err, got, tt.wantNotExt)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("errors.Is(%q, %v) = false, want the cause kept", err, tt.wantIs)
			}
		})
	}
}
