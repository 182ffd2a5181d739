package memdev

import (
	"strings"
	"testing"
)

// guestIOMem is /proc/iomem of a QEMU q35 guest (Linux 6.1) with 1 GiB of boot memory, a
// 512 MiB pc-dimm and a virtio-mem device with 256 MiB plugged, trimmed.
const guestIOMem = `00000000-00000fff : Reserved
00001000-0009fbff : System RAM
00100000-3fffffff : System RAM
  1b000000-1bc01fff : Kernel code
fee00000-fee00fff : Local APIC
100000000-13fffffff : System RAM
140000000-15fffffff : System RAM
180000000-23fffffff : virtio5
  180000000-18fffffff : System RAM (virtio_mem)
`

func TestParseIOMem(t *testing.T) {
	rs, err := ParseIOMem([]byte(guestIOMem))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 9 {
		t.Fatalf("%d resources; want 9", len(rs))
	}
	want := []Resource{
		{Start: 0x100000, End: 0x3fffffff, Name: "System RAM", Depth: 0, Parent: -1},
		{Start: 0x1b000000, End: 0x1bc01fff, Name: "Kernel code", Depth: 1, Parent: 2},
		{Start: 0x180000000, End: 0x23fffffff, Name: "virtio5", Depth: 0, Parent: -1},
		{Start: 0x180000000, End: 0x18fffffff, Name: "System RAM (virtio_mem)", Depth: 1, Parent: 7},
	}
	for k, i := range []int{2, 3, 7, 8} {
		if rs[i] != want[k] {
			t.Errorf("resource %d = %+v; want %+v", i, rs[i], want[k])
		}
	}
}

func TestParseIOMemErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"00000000-00000fff Reserved\n", "line 1:"},
		{"0-f : a\n    1-2 : b\n", "line 2: indented 2 levels under 1 open ones"},
		{"0-f : a\n 1-2 : b\n", "odd indentation"},
		{"x-f : a\n", "not two hex numbers"},
		{"f-1 : a\n", "ends before it starts"},
		{"+1-2 : a\n", "not two hex numbers"},
		{"1-10000000000000000 : a\n", "not two hex numbers"},
		{strings.Repeat("0-f : a\n", maxIOMem/8+1), "bytes; want at most"},
	} {
		_, err := ParseIOMem([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseIOMem(%.40q) = %v; want an error containing %q", tc.in, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error %q is more than one line", err)
		}
	}
	if rs, err := ParseIOMem(nil); err != nil || len(rs) != 0 {
		t.Errorf("ParseIOMem(empty) = %v, %v; want nothing and no error", rs, err)
	}
}

func FuzzParseIOMem(f *testing.F) {
	f.Add([]byte(guestIOMem))
	f.Add([]byte("0-f : a\n  1-2 : b\n    1-1 : c\n  3-4 : d\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := ParseIOMem(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		for i, r := range rs {
			if r.End < r.Start {
				t.Fatalf("resource %d ends before it starts: %+v", i, r)
			}
			if (r.Depth == 0) != (r.Parent == -1) || r.Parent >= i || (r.Parent >= 0 && rs[r.Parent].Depth != r.Depth-1) {
				t.Fatalf("resource %d has a wrong parent: %+v", i, r)
			}
		}
	})
}

func TestPhysicalNodeLinks(t *testing.T) {
	for name, want := range map[string]bool{"physical_node": true, "physical_node1": true, "physical_node12": true,
		"physical_node_x": false, "physical_nodes": false, "firmware_node": false, "physical_node-1": false} {
		if got := isPhysicalNode(name); got != want {
			t.Errorf("isPhysicalNode(%q) = %v; want %v", name, got, want)
		}
	}
	for link, want := range map[string]int{
		"../../../system/memory/memory32":           32,
		"../../../../devices/system/memory/memory0": 0,
		"../../../system/memory/memory032":          -1,
		"../../../system/memory/memory":             -1,
		"../../../system/memory/memory3x":           -1,
		"../../../system/cpu/cpu3":                  -1,
		"../../../system/memory/memory99999999999":  -1,
	} {
		n, ok := memoryBlockOf(link)
		if (want < 0 && ok) || (want >= 0 && (!ok || n != want)) {
			t.Errorf("memoryBlockOf(%q) = %d, %v; want %d", link, n, ok, want)
		}
	}
}
