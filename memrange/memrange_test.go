package memrange

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

func TestHumanSize(t *testing.T) {
	for _, tt := range []struct {
		in   uint64
		want string
	}{
		{0, "0B"}, {512, "512B"}, {128 << 20, "128M"}, {23 * 128 << 20, "2.9G"}, {21 << 30, "21G"},
		{24 << 30, "24G"}, {(1 << 30) + (1000 << 20), "2G"}, {(1 << 30) + (128 << 20), "1.1G"},
	} {
		if got := HumanSize(tt.in); got != tt.want {
			t.Errorf("HumanSize(%d) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestCPUList(t *testing.T) {
	for _, tt := range []struct {
		in   []int
		want string
	}{{nil, ""}, {[]int{0}, "0"}, {[]int{3, 0, 1, 2, 8}, "0-3,8"}, {[]int{0, 2, 4}, "0,2,4"}, {[]int{0, 1}, "0,1"}, {[]int{0, 1, 5, 6, 7}, "0,1,5-7"}} {
		if got := CPUList(tt.in); got != tt.want {
			t.Errorf("CPUList(%v) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func block(n int, state, zones, device string) notify.Interface {
	return notify.Interface{ClassGUID: notify.GUIDDeviceMemory, Number: n, PhysStart: uint64(n) << 27, Size: 1 << 27,
		State: state, Zones: zones, Device: device}
}

// TestMerge: blocks merge as lsmem merges them, and split at a device's edge too.
func TestMerge(t *testing.T) {
	in := []notify.Interface{
		{ClassGUID: notify.GUIDDeviceProcessor, Number: 0, State: "online"},
		block(1, "online", "DMA32", ""), block(0, "online", "none", ""), block(2, "online", "DMA32", ""),
		block(32, "online", "Normal", ""), block(33, "online", "Normal", ""),
		block(34, "online", "Normal", "PNP0C80:00"), block(35, "offline", "Normal Movable", "PNP0C80:00"),
		block(36, "offline", "Normal Movable", "PNP0C80:00"),
	}
	want := []Range{
		{Start: 0, End: 1<<27 - 1, First: 0, Last: 0, State: "online", Zones: "None"},
		{Start: 1 << 27, End: 3<<27 - 1, First: 1, Last: 2, State: "online", Zones: "DMA32"},
		{Start: 32 << 27, End: 34<<27 - 1, First: 32, Last: 33, State: "online", Zones: "Normal"},
		{Start: 34 << 27, End: 35<<27 - 1, First: 34, Last: 34, State: "online", Zones: "Normal", Device: "PNP0C80:00"},
		{Start: 35 << 27, End: 37<<27 - 1, First: 35, Last: 36, State: "offline", Zones: "Normal/Movable", Device: "PNP0C80:00"},
	}
	if diff := cmp.Diff(want, Merge(in)); diff != "" {
		t.Errorf("Merge (-want +got):\n%s", diff)
	}
	s := Summarise(in)
	if s.BlocksOnline != 6 || s.BlocksOffline != 2 || s.MemoryOffline != 2<<27 || len(s.Devices) != 1 || CPUList(s.CPUsOnline) != "0" {
		t.Errorf("Summarise: %+v", s)
	}
}

// FuzzZoneNames: whatever valid_zones holds, the zones come out one per word, joined by "/",
// the known names in lsmem's spelling.
func FuzzZoneNames(f *testing.F) {
	for _, s := range []string{"Normal", "none", "Normal Movable", "DMA32", " movable  normal ", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := ZoneNames(s)
		words := strings.Fields(s)
		if got == "" != (len(words) == 0) {
			t.Fatalf("ZoneNames(%q) = %q", s, got)
		}
		if len(words) > 0 && len(strings.Split(got, "/")) != len(words) && !strings.Contains(s, "/") {
			t.Fatalf("ZoneNames(%q) = %q: not one zone per word", s, got)
		}
		for _, w := range words {
			if strings.EqualFold(w, "movable") && !strings.Contains(got, "Movable") {
				t.Fatalf("ZoneNames(%q) = %q: Movable not spelled as lsmem does", s, got)
			}
		}
	})
}
