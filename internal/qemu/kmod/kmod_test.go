package kmod

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseModinfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Module
	}{
		{"virtio_net", "license=GPL\x00depends=net_failover,virtio_ring,virtio\x00retpoline=Y\x00intree=Y\x00name=virtio_net\x00vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \x00",
			Module{Name: "virtio_net", Depends: []string{"net_failover", "virtio_ring", "virtio"}}},
		{"no depends", "depends=\x00name=failover\x00", Module{Name: "failover"}},
		{"padding and junk", "\x00\x00name=x\x00garbage\x00depends=a,,a, b\x00\x00", Module{Name: "x", Depends: []string{"a", "b"}}},
		{"value with =", "parm=opt:a=b\x00name=y\x00", Module{Name: "y"}},
		{"empty", "", Module{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ParseModinfo([]byte(tc.in))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("depends=a,b\x00name=c\x00"))
	f.Add([]byte("\x00=\x00name=\x00depends=,\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := ParseModinfo(b)
		for _, d := range m.Depends {
			if d == "" || strings.ContainsAny(d, ",\x00") {
				t.Fatalf("dependency %q", d)
			}
		}
	})
}

func index(mods ...Module) Index {
	idx := Index{}
	for _, m := range mods {
		idx[m.Name] = m
	}
	return idx
}

func names(ms []Module) []string {
	var n []string
	for _, m := range ms {
		n = append(n, m.Name)
	}
	return n
}

func TestOrder(t *testing.T) {
	idx := index(
		Module{Name: "virtio"},
		Module{Name: "virtio_ring"},
		Module{Name: "failover"},
		Module{Name: "net_failover", Depends: []string{"failover"}},
		Module{Name: "virtio_net", Depends: []string{"net_failover", "virtio_ring", "virtio"}},
		Module{Name: "virtio_pci_modern_dev"},
		Module{Name: "virtio_pci", Depends: []string{"virtio_pci_modern_dev", "virtio_ring", "virtio"}},
		Module{Name: "virtio_mem", Depends: []string{"virtio", "virtio_ring"}},
	)
	got, err := idx.Order("virtio_pci", "virtio_net", "virtio_mem")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"virtio_pci_modern_dev", "virtio_ring", "virtio", "virtio_pci", "failover", "net_failover", "virtio_net", "virtio_mem"}
	if diff := cmp.Diff(want, names(got)); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	all, err := idx.All()
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range all {
		pos[m.Name] = i
	}
	if len(all) != len(idx) {
		t.Errorf("All returned %d modules of %d", len(all), len(idx))
	}
	for _, m := range all {
		for _, d := range m.Depends {
			if pos[d] > pos[m.Name] {
				t.Errorf("%s comes before its dependency %s", m.Name, d)
			}
		}
	}
}

func TestOrderErrors(t *testing.T) {
	idx := index(
		Module{Name: "a", Depends: []string{"b"}},
		Module{Name: "b", Depends: []string{"missing"}},
		Module{Name: "c", Depends: []string{"d"}},
		Module{Name: "d", Depends: []string{"c"}},
	)
	for _, tc := range []struct{ want, errHas string }{
		{"a", `module "missing", needed by a -> b, is missing`},
		{"c", "dependency cycle: c -> d -> c"},
		{"nope", `no module "nope"`},
	} {
		_, err := idx.Order(tc.want)
		if err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("Order(%q) error %v; want it to contain %q", tc.want, err, tc.errHas)
		}
	}
}

// writeELF writes a minimal ELF64 relocatable file with one section besides the string table:
// what debug/elf needs to find .modinfo.
func writeELF(t *testing.T, path, section string, data []byte) {
	t.Helper()
	le := binary.LittleEndian
	shstr := []byte("\x00" + section + "\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	dataOff := ehsize
	shstrOff := dataOff + len(data)
	shOff := (shstrOff + len(shstr) + 7) &^ 7
	var b bytes.Buffer
	hdr := make([]byte, ehsize)
	copy(hdr, "\x7fELF\x02\x01\x01")
	le.PutUint16(hdr[16:], 1)  // ET_REL
	le.PutUint16(hdr[18:], 62) // EM_X86_64
	le.PutUint32(hdr[20:], 1)
	le.PutUint64(hdr[40:], uint64(shOff))
	le.PutUint16(hdr[52:], ehsize)
	le.PutUint16(hdr[58:], shentsize)
	le.PutUint16(hdr[60:], 3) // null, section, .shstrtab
	le.PutUint16(hdr[62:], 2)
	b.Write(hdr)
	b.Write(data)
	b.Write(shstr)
	for b.Len() < shOff {
		b.WriteByte(0)
	}
	sh := func(name, typ uint32, off, size int) {
		s := make([]byte, shentsize)
		le.PutUint32(s[0:], name)
		le.PutUint32(s[4:], typ)
		le.PutUint64(s[24:], uint64(off))
		le.PutUint64(s[32:], uint64(size))
		le.PutUint64(s[48:], 1)
		b.Write(s)
	}
	sh(0, 0, 0, 0)
	sh(1, 1, dataOff, len(data))                        // SHT_PROGBITS
	sh(uint32(2+len(section)), 3, shstrOff, len(shstr)) // SHT_STRTAB
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestScanAndRead(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "drivers", "net"), 0o755)
	writeELF(t, filepath.Join(dir, "drivers", "net", "virtio_net.ko"), ".modinfo", []byte("depends=virtio\x00name=virtio_net\x00"))
	writeELF(t, filepath.Join(dir, "virtio.ko"), ".modinfo", []byte("license=GPL\x00"))
	os.WriteFile(filepath.Join(dir, "README"), []byte("not a module"), 0o644)
	idx, err := Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := idx.All()
	if err != nil {
		t.Fatal(err)
	}
	want := []Module{
		{Name: "virtio", Path: filepath.Join(dir, "virtio.ko")},
		{Name: "virtio_net", Path: filepath.Join(dir, "drivers", "net", "virtio_net.ko"), Depends: []string{"virtio"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	noinfo := filepath.Join(dir, "other", "x.ko")
	os.MkdirAll(filepath.Dir(noinfo), 0o755)
	writeELF(t, noinfo, ".text", []byte{0x90})
	if _, err := Read(noinfo); err == nil || !strings.Contains(err.Error(), "no .modinfo") {
		t.Errorf("Read of an ELF without .modinfo: %v", err)
	}
	if _, err := Scan(dir); err == nil {
		t.Error("Scan: no error for a .ko that is not a module")
	}
}
