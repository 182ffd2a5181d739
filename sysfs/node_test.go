package sysfs

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestScanThroughNodeLinks: a scan takes the node of a CPU or block that a node directory links
// from there, without listing its directory, and reads the same as a scan that lists each; a
// device no node directory links is read by listing its directory, and one linked but gone is
// left out.
func TestScanThroughNodeLinks(t *testing.T) {
	t.Parallel()
	tr := minimalTree().withMemory()
	tr["devices/system/cpu/possible"] = "0-3\n"
	tr["devices/system/cpu/present"] = "0-3\n"
	tr["devices/system/cpu/online"] = "0,2\n"
	tr["devices/system/cpu/cpu0/node0"] = "-> ../../node/node0" // no online file: not hotpluggable
	tr["devices/system/cpu/cpu1/online"] = "0\n"
	tr["devices/system/cpu/cpu1/node1"] = "-> ../../node/node1"
	tr["devices/system/cpu/cpu2/online"] = "1\n"
	tr["devices/system/cpu/cpu2/node1"] = "-> ../../node/node1"
	tr["devices/system/cpu/cpu3/online"] = "1\n" // no node link either way
	tr.block("0", "00000000", "online").block("1", "00000001", "offline").block("2", "00000002", "online").block("3", "00000003", "online")
	delete(tr, "devices/system/memory/memory2/valid_zones") // an older kernel's block
	tr["devices/system/memory/memory3/node0"] = "-> ../../node/node2"
	tr["devices/system/memory/memory3/node2"] = "-> ../../node/node2"
	for _, l := range []string{"node0/cpu0", "node1/cpu1", "node1/cpu2", "node0/memory0", "node0/memory1", "node0/memory2",
		"node2/memory3", "node0/memory3", "node3/memory9", "node3/cpu9"} {
		tr["devices/system/node/"+l] = "-> ../../whatever"
	}
	tr["devices/system/node/node3/cpulist"] = "\n"
	fsys := tr.mustFS(t)

	cpus, err := fsys.CPUs()
	if err != nil {
		t.Fatal(err)
	}
	wantCPUs := []CPU{
		{Number: 0, Online: true, Hotpluggable: false, Node: 0},
		{Number: 1, Online: false, Hotpluggable: true, Node: 1},
		{Number: 2, Online: true, Hotpluggable: true, Node: 1},
		{Number: 3, Online: true, Hotpluggable: true, Node: -1},
	}
	if diff := cmp.Diff(wantCPUs, cpus); diff != "" {
		t.Errorf("CPUs() (-want +got):\n%s", diff)
	}
	blocks, err := fsys.MemoryBlocks()
	if err != nil {
		t.Fatal(err)
	}
	const mib128 = 128 << 20
	wantBlocks := []MemoryBlock{
		{Index: 0, State: "online", PhysIndex: 0, PhysStart: 0, Size: mib128, ValidZones: "Normal", Node: 0},
		{Index: 1, State: "offline", PhysIndex: 1, PhysStart: mib128, Size: mib128, Node: 0},
		{Index: 2, State: "online", PhysIndex: 2, PhysStart: 2 * mib128, Size: mib128, Node: 0},
		{Index: 3, State: "online", PhysIndex: 3, PhysStart: 3 * mib128, Size: mib128, ValidZones: "Normal", Node: 0},
	}
	if diff := cmp.Diff(wantBlocks, blocks); diff != "" {
		t.Errorf("MemoryBlocks() (-want +got):\n%s", diff)
	}
	// Each read on its own lists the device's directory: the same answers.
	for _, want := range wantCPUs {
		if got, err := fsys.CPU(want.Number); err != nil || got != want {
			t.Errorf("CPU(%d) = %+v, %v; want %+v", want.Number, got, err, want)
		}
	}
	for _, want := range wantBlocks {
		if got, err := fsys.MemoryBlock(want.Index); err != nil || got != want {
			t.Errorf("MemoryBlock(%d) = %+v, %v; want %+v", want.Index, got, err, want)
		}
	}
}
