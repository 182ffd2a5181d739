package headroom

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The captures in testdata: this 2-CPU x86-64 VM (Linux 6.18, 24 GiB, 1 GiB direct-map pages)
// and a QEMU guest of the e2e tests (Debian's 6.1, 512 MiB, TCG): at boot, while a 17 GiB DIMM
// was being added (its memmap half allocated), and once it was online (movable).
var captures = []string{"host", "guest-512M-boot", "guest-512M-adding", "guest-512M-after-17G"}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// zoneSummary is what the tables compare of a parsed zone.
type zoneSummary struct {
	Node                 int
	Name                 string
	Index                int
	Free, Min, Low, High uint64
	Managed, FreeCMA     uint64
	Protection           []uint64
}

func summarize(zones []Zone) []zoneSummary {
	var out []zoneSummary
	for _, z := range zones {
		out = append(out, zoneSummary{z.Node, z.Name, z.Index, z.Free, z.Min, z.Low, z.High, z.Managed, z.FreeCMA, z.Protection})
	}
	return out
}

func TestParseZoneinfoCaptures(t *testing.T) {
	for _, tt := range []struct {
		capture string
		want    []zoneSummary
	}{
		{"host", []zoneSummary{
			{0, "DMA", 0, 3840, 28, 35, 42, 3840, 0, []uint64{0, 3018, 9034, 9034, 9034}},
			{0, "DMA32", 1, 772848, 5636, 7045, 8454, 772848, 0, []uint64{0, 0, 6016, 6016, 6016}},
			{0, "Normal", 2, 719247, 11231, 14038, 16845, 1540096, 0, []uint64{0, 0, 0, 0, 0}},
			{0, "Movable", 3, 0, 32, 32, 32, 0, 0, []uint64{0, 0, 0, 0, 0}},
			{0, "Device", 4, 0, 0, 0, 0, 0, 0, []uint64{0, 0, 0, 0, 0}},
		}},
		{"guest-512M-boot", []zoneSummary{
			{0, "DMA", 0, 3808, 25, 31, 37, 3840, 0, []uint64{0, 352, 352, 352, 352}},
			{0, "DMA32", 1, 85758, 587, 733, 879, 96525, 0, []uint64{0, 0, 0, 0, 0}},
			{0, "Normal", 2, 0, 0, 0, 0, 0, 0, []uint64{0, 0, 0, 0, 0}},
			{0, "Movable", 3, 0, 0, 0, 0, 0, 0, []uint64{0, 0, 0, 0, 0}},
			{0, "Device", 4, 0, 0, 0, 0, 0, 0, []uint64{0, 0, 0, 0, 0}},
		}},
		{"guest-512M-after-17G", []zoneSummary{
			{0, "DMA", 0, 3808, 0, 3, 6, 3840, 0, []uint64{0, 377, 377, 17913, 17913}},
			{0, "DMA32", 1, 14433, 13, 109, 205, 96525, 0, []uint64{0, 0, 0, 17536, 17536}},
			{0, "Normal", 2, 0, 0, 0, 0, 0, 0, []uint64{0, 0, 0, 0, 0}},
			{0, "Movable", 3, 4487609, 618, 5107, 9596, 4489216, 0, []uint64{0, 0, 0, 0, 0}},
			{0, "Device", 4, 0, 0, 0, 0, 0, 0, []uint64{0, 0, 0, 0, 0}},
		}},
	} {
		t.Run(tt.capture, func(t *testing.T) {
			zones, err := ParseZoneinfo(readTestdata(t, "zoneinfo-"+tt.capture))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, summarize(zones)); diff != "" {
				t.Errorf("zones (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseZoneinfoErrors(t *testing.T) {
	zone := "Node 0, zone   Normal\n  pages free     5\n        min      1\n        low      2\n        high     3\n        protection: (0, 0)\n"
	for _, tt := range []struct {
		name, in, want string
	}{
		{"empty", "", "zoneinfo: no zone"},
		{"not zoneinfo", "MemTotal: 5 kB\n", "zoneinfo: no zone"},
		{"bad header", "Node x, zone Normal\n", `zoneinfo: line 1: "Node x, zone Normal": want "Node N, zone NAME"`},
		{"header without a name", "Node 0, zone   \n", `zoneinfo: line 1: "Node 0, zone   ": want "Node N, zone NAME"`},
		{"negative node", "Node -1, zone DMA\n", `zoneinfo: line 1: "Node -1, zone DMA": want "Node N, zone NAME"`},
		{"no min", strings.Replace(zone, "        min      1\n", "", 1), "zoneinfo: node 0 zone Normal: no min line"},
		{"no free", strings.Replace(zone, "  pages free     5\n", "", 1), "zoneinfo: node 0 zone Normal: no pages free line"},
		{"no protection", strings.Replace(zone, "        protection: (0, 0)\n", "", 1), "zoneinfo: node 0 zone Normal: no protection line"},
		{"second zone incomplete", zone + "Node 0, zone Movable\n  pages free 0\n", "zoneinfo: node 0 zone Movable: no min line"},
		{"free not a number", strings.Replace(zone, "free     5", "free     5x", 1), `zoneinfo: line 2: pages free: "5x" is not a number of pages`},
		{"negative watermark", strings.Replace(zone, "low      2", "low      -2", 1), `zoneinfo: line 4: low: "-2" is not a number of pages`},
		{"protection malformed", strings.Replace(zone, "(0, 0)", "(0, x)", 1), `zoneinfo: line 6: protection: "(0, x)": want up to 16 numbers of pages`},
		{"protection unclosed", strings.Replace(zone, "(0, 0)", "(0, 0", 1), `zoneinfo: line 6: protection: "(0, 0": want (N, N, ...)`},
		{"too large", strings.Repeat(" ", maxZoneinfo+1), "zoneinfo: 67108865 bytes; want at most 67108864"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseZoneinfo([]byte(tt.in))
			if err == nil || err.Error() != tt.want {
				t.Errorf("ParseZoneinfo: %v; want %s", err, tt.want)
			}
		})
	}
}

// TestParseZoneinfoIgnores: page sets ("high:"), per-node statistics and lines a later kernel
// adds do not change a zone.
func TestParseZoneinfoIgnores(t *testing.T) {
	in := "Node 1, zone    DMA32\n  per-node stats\n      nr_inactive_anon 35309\n  pages free     10\n        boost    0\n" +
		"        min      1\n        low      2\n        high     3\n        promo    4\n        spanned  100\n        present  90\n" +
		"        managed  80\n        cma      0\n        protection: (0, 0, 7, 7)\n      nr_free_pages 10\n      nr_free_cma  2\n" +
		"  pagesets\n    cpu: 0\n              count:    9\n              high:     99\n              batch:    1\n" +
		"  vm stats threshold: 4\n  node_unreclaimable:  0\n  start_pfn:           1\n  some new line 5\n" +
		"Node 1, zone   Normal\n  pages free     0\n        min      0\n        low      0\n        high     0\n        protection: (0, 0, 0, 0)\n"
	zones, err := ParseZoneinfo([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []zoneSummary{
		{1, "DMA32", 0, 10, 1, 2, 3, 80, 2, []uint64{0, 0, 7, 7}},
		{1, "Normal", 1, 0, 0, 0, 0, 0, 0, []uint64{0, 0, 0, 0}},
	}
	if diff := cmp.Diff(want, summarize(zones)); diff != "" {
		t.Errorf("zones (-want +got):\n%s", diff)
	}
}

func TestParseMeminfo(t *testing.T) {
	for _, tt := range []struct {
		capture string
		want    Meminfo
	}{
		{"host", Meminfo{MemTotal: 24683784 << 10, MemFree: 21400388 << 10, MemAvailable: 23508200 << 10, DirectMap1G: true}},
		{"guest-512M-boot", Meminfo{MemTotal: 401460 << 10, MemFree: 358264 << 10, MemAvailable: 358716 << 10}},
		{"guest-512M-after-17G", Meminfo{MemTotal: 18358324 << 10, MemFree: 18023400 << 10, MemAvailable: 17903252 << 10}},
	} {
		t.Run(tt.capture, func(t *testing.T) {
			got, err := ParseMeminfo(readTestdata(t, "meminfo-"+tt.capture))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("meminfo (-want +got):\n%s", diff)
			}
		})
	}
	for _, tt := range []struct {
		name, in, want string
	}{
		{"empty", "", "meminfo: no MemTotal or MemFree line"},
		{"no MemFree", "MemTotal: 5 kB\n", "meminfo: no MemTotal or MemFree line"},
		{"no colon", "MemTotal 5 kB\n", `meminfo: line 1: "MemTotal 5 kB": want "Name: VALUE [kB]"`},
		{"other unit", "MemTotal: 5 MB\n", `meminfo: line 1: "MemTotal: 5 MB": want "Name: VALUE [kB]"`},
		{"not a number", "MemFree: -5 kB\n", `meminfo: line 1: "MemFree: -5 kB": want "Name: VALUE [kB]"`},
		{"out of range", "MemFree: 18014398509481984 kB\n", "meminfo: line 1: MemFree: 18014398509481984 kB is out of range"},
		{"zoneinfo", "Node 0, zone      DMA\n", `meminfo: line 1: "Node 0, zone      DMA": want "Name: VALUE [kB]"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseMeminfo([]byte(tt.in))
			if err == nil || err.Error() != tt.want {
				t.Errorf("ParseMeminfo: %v; want %s", err, tt.want)
			}
		})
	}
}

// note returns an ELF note of name and desc, padded, in order.
func note(order binary.ByteOrder, name string, typ uint32, desc string) []byte {
	var b bytes.Buffer
	n := append([]byte(name), 0)
	binary.Write(&b, order, [3]uint32{uint32(len(n)), uint32(len(desc)), typ})
	b.Write(n)
	b.Write(make([]byte, (4-len(n)%4)%4))
	b.WriteString(desc)
	b.Write(make([]byte, (4-len(desc)%4)%4))
	return b.Bytes()
}

const vmcoreinfo = "OSRELEASE=6.1.0-57-amd64\nBUILD-ID=abc\nPAGESIZE=4096\nSYMBOL(init_uts_ns)=ffffffff\nSIZE(page)=64\nSIZE(page)=80\nOFFSET(page.flags)=0\nnot a pair\n"

func TestFindNote(t *testing.T) {
	order := binary.LittleEndian
	seg := append(append(note(order, "CORE", 1, "prstatus..."), note(order, "LINUX", 0x53494749, "x")...), note(order, "VMCOREINFO", 0, vmcoreinfo)...)
	desc, ok := FindNote(seg, order, "VMCOREINFO")
	if !ok || string(desc) != vmcoreinfo {
		t.Fatalf("FindNote = %q, %v", desc, ok)
	}
	info := ParseVMCoreInfo(desc)
	for k, want := range map[string]string{"PAGESIZE": "4096", "SIZE(page)": "64", "OSRELEASE": "6.1.0-57-amd64"} {
		if info[k] != want {
			t.Errorf("%s = %q; want %q (the first of two equal keys)", k, info[k], want)
		}
	}
	if _, ok := FindNote(seg[:len(seg)-8], order, "VMCOREINFO"); ok {
		t.Errorf("FindNote found a note cut short")
	}
	if _, ok := FindNote(seg, order, "NOPE"); ok {
		t.Errorf("FindNote found a note that is not there")
	}
}

// TestStructPageFromKcore reads a small ELF core file shaped like /proc/kcore: an ELF header,
// a PT_NOTE program header and its notes.
func TestStructPageFromKcore(t *testing.T) {
	for _, tt := range []struct {
		name, desc         string
		structPage, pageSz uint64
		wantErr            string
	}{
		{"vmcoreinfo", vmcoreinfo, 64, 4096, ""},
		{"no SIZE(page)", "PAGESIZE=4096\n", 0, 0, "VMCOREINFO has no SIZE(page) and PAGESIZE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kcore")
			writeCore(t, path, append(note(binary.LittleEndian, "CORE", 1, "prstatus"), note(binary.LittleEndian, "VMCOREINFO", 0, tt.desc)...))
			sp, ps, err := StructPageFromKcore(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("StructPageFromKcore: %v; want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || sp != tt.structPage || ps != tt.pageSz {
				t.Fatalf("StructPageFromKcore = %d, %d, %v; want %d, %d", sp, ps, err, tt.structPage, tt.pageSz)
			}
		})
	}
	if _, _, err := StructPageFromKcore(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Errorf("StructPageFromKcore of a missing file: no error")
	}
	notELF := filepath.Join(t.TempDir(), "kcore")
	os.WriteFile(notELF, []byte("MemTotal: 5 kB\n"), 0o644)
	if _, _, err := StructPageFromKcore(notELF); err == nil {
		t.Errorf("StructPageFromKcore of a file that is not ELF: no error")
	}
}

// writeCore writes an x86-64 ELF core file with one PT_NOTE segment holding notes.
func writeCore(t *testing.T, path string, notes []byte) {
	t.Helper()
	var b bytes.Buffer
	le := binary.LittleEndian
	ident := [16]byte{0x7f, 'E', 'L', 'F', 2, 1, 1}
	b.Write(ident[:])
	binary.Write(&b, le, struct {
		Type, Machine                                   uint16
		Version                                         uint32
		Entry, Phoff, Shoff                             uint64
		Flags                                           uint32
		Ehsize, Phentsize, Phnum, Shentsize, Shnum, Shx uint16
	}{4, 62, 1, 0, 64, 0, 0, 64, 56, 1, 64, 0, 0})
	binary.Write(&b, le, struct {
		Type, Flags                                 uint32
		Off, Vaddr, Paddr, Filesz, Memsz, Alignment uint64
	}{4, 0, 120, 0, 0, uint64(len(notes)), 0, 4})
	b.Write(notes)
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseZoneinfo(f *testing.F) {
	for _, c := range captures {
		f.Add(readTestdata(f, "zoneinfo-"+c))
	}
	f.Add([]byte("Node 0, zone DMA\n pages free 1\n min 0\n low 0\n high 0\n protection: (0)\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		zones, err := ParseZoneinfo(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if len(zones) == 0 || len(zones) > maxZones {
			t.Fatalf("%d zones and no error", len(zones))
		}
		for i, z := range zones {
			if z.Name == "" || z.Node < 0 || len(z.Protection) == 0 || len(z.Protection) > 16 {
				t.Fatalf("zone %d: %+v", i, z)
			}
			if i > 0 && zones[i-1].Node == z.Node && z.Index != zones[i-1].Index+1 {
				t.Fatalf("zone %d: index %d after %d in node %d", i, z.Index, zones[i-1].Index, z.Node)
			}
		}
		// Whatever parses, the model takes without a panic, and its headroom is whole blocks
		// under the limit.
		e, err := Compute(Inputs{Zones: zones, PageSize: 4096, BlockSize: 128 << 20, StructPage: 64, Reserve: DefaultReserve})
		if err != nil {
			t.Fatalf("Compute: %v", err)
		}
		if e.Headroom > e.Limit || e.Headroom%(128<<20) != 0 || e.Limit%(128<<20) != 0 {
			t.Fatalf("headroom %d, limit %d", e.Headroom, e.Limit)
		}
	})
}

func FuzzParseMeminfo(f *testing.F) {
	for _, c := range []string{"host", "guest-512M-boot", "guest-512M-after-17G"} {
		f.Add(readTestdata(f, "meminfo-"+c))
	}
	f.Add([]byte("MemTotal: 1 kB\nMemFree: 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMeminfo(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if !bytes.Contains(data, []byte("MemTotal")) || !bytes.Contains(data, []byte("MemFree")) {
			t.Fatalf("parsed %+v from a file without MemTotal and MemFree", m)
		}
	})
}

func FuzzFindNote(f *testing.F) {
	f.Add(append(note(binary.LittleEndian, "CORE", 1, "x"), note(binary.LittleEndian, "VMCOREINFO", 0, vmcoreinfo)...), false)
	f.Add(note(binary.BigEndian, "VMCOREINFO", 0, vmcoreinfo), true)
	f.Fuzz(func(t *testing.T, data []byte, big bool) {
		var order binary.ByteOrder = binary.LittleEndian
		if big {
			order = binary.BigEndian
		}
		desc, ok := FindNote(data, order, "VMCOREINFO")
		if !ok {
			return
		}
		if len(desc) > len(data) {
			t.Fatalf("a descriptor of %d bytes from %d", len(desc), len(data))
		}
		for k := range ParseVMCoreInfo(desc) {
			if k == "" || strings.ContainsAny(k, "=\n") {
				t.Fatalf("key %q", k)
			}
		}
	})
}
