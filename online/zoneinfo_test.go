package online

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// guestZoneinfo is /proc/zoneinfo of a two-node guest with hot-added memory in Normal and
// Movable, trimmed to the lines the parser reads and some it must skip.
const guestZoneinfo = `Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 43
      nr_free_cma  0
  pages free     3840
        boost    0
        spanned  4095
        present  3998
        managed  3840
        cma      0
        protection: (0, 426, 426, 426, 426)
Node 0, zone    DMA32
  pages free     98312
        spanned  126976
        present  126976
        managed  112000
        cma      0
Node 0, zone   Normal
  pages free     32000
        spanned  32768
        present  32768
        managed  32768
        cma      0
Node 0, zone  Movable
  pages free     400000
        spanned  458752
        present  425984
        managed  425984
        cma      0
Node 1, zone   Normal
  pages free     50000
        spanned  65536
        present  65536
        managed  60000
        cma      128
Node 1, zone  Movable
  pages free     0
        spanned  0
        present  0
        managed  0
`

func TestParseZoneinfo(t *testing.T) {
	got, err := ParseZoneinfo([]byte(guestZoneinfo))
	if err != nil {
		t.Fatal(err)
	}
	want := []ZoneInfo{
		{Node: 0, Zone: "DMA", Present: 3998},
		{Node: 0, Zone: "DMA32", Present: 126976},
		{Node: 0, Zone: "Normal", Present: 32768},
		{Node: 0, Zone: "Movable", Present: 425984},
		{Node: 1, Zone: "Normal", Present: 65536, CMA: 128},
		{Node: 1, Zone: "Movable"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseZoneinfo (-want +got):\n%s", diff)
	}
	// A whole file of a VM (Linux 6.18, with a Device zone).
	b, err := os.ReadFile("testdata/zoneinfo-vm.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got, err = ParseZoneinfo(b); err != nil || len(got) != 5 || got[2].Zone != "Normal" || got[2].Present != 5505024 || got[4].Kernel() || !got[3].Movable() {
		t.Errorf("ParseZoneinfo(testdata/zoneinfo-vm.txt) = %+v, %v", got, err)
	}
}

func TestParseZoneinfoErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Node x, zone DMA\n        present 1\n", "line 1: \"Node x, zone DMA\": want"},
		{"Node 0 zone DMA\n", "line 1:"},
		{"Node 0, zone \n        present 1\n", "line 1:"},
		{"Node -1, zone DMA\n        present 1\n", "line 1:"},
		{"Node 0, zone DMA\n        present x\n", "line 2: present \"x\" is not a count of pages"},
		{"Node 0, zone DMA\n        present 99999999999999999999\n", "line 2:"},
		{"Node 0, zone DMA\nNode 0, zone Normal\n        present 1\n", "line 2: zone DMA of node 0 has no present line"},
		{"Node 0, zone DMA\n        spanned 1\n", "zone DMA of node 0 has no present line"},
		{strings.Repeat("x", maxZoneinfo+1), "bytes; want at most"},
	} {
		_, err := ParseZoneinfo([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseZoneinfo(%.40q) = %v; want an error containing %q", tc.in, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error %q is more than one line", err)
		}
	}
	if zs, err := ParseZoneinfo(nil); err != nil || len(zs) != 0 {
		t.Errorf("ParseZoneinfo(empty) = %v, %v; want nothing and no error", zs, err)
	}
}

func FuzzParseZoneinfo(f *testing.F) {
	f.Add([]byte(guestZoneinfo))
	f.Add([]byte("Node 0, zone DMA\n present 1\n cma 2\nNode 1, zone Movable\n present 0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		zs, err := ParseZoneinfo(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		for _, z := range zs {
			if z.Node < 0 || z.Zone == "" || strings.ContainsAny(z.Zone, " \t\n,") {
				t.Fatalf("implausible zone %+v", z)
			}
		}
	})
}
