package qemu

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// entry is one member of a newc archive, as a reader sees it.
type entry struct {
	Name         string
	Mode         uint32
	RMajor       uint32
	RMinor       uint32
	Data         string
	HeaderOffset int
}

// readNewc parses a newc archive up to its trailer, checking the alignment rules.
func readNewc(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	off := 0
	hex := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+6+8*i+8]), 16, 32)
		if err != nil {
			t.Fatalf("offset %d field %d: %v", off, i, err)
		}
		return uint32(v)
	}
	for {
		if off%4 != 0 {
			t.Fatalf("header at offset %d is not 4-byte aligned", off)
		}
		if len(b) < off+110 || string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc header at offset %d", off)
		}
		mode, size, rmaj, rmin, nameSize := hex(1), hex(6), hex(9), hex(10), hex(11)
		name := string(b[off+110 : off+110+int(nameSize)-1])
		if b[off+110+int(nameSize)-1] != 0 {
			t.Fatalf("%s: name not NUL-terminated", name)
		}
		data := off + 110 + int(nameSize)
		data = (data + 3) &^ 3
		e := entry{Name: name, Mode: mode, RMajor: rmaj, RMinor: rmin, Data: string(b[data : data+int(size)]), HeaderOffset: off}
		off = (data + int(size) + 3) &^ 3
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func TestInitramfs(t *testing.T) {
	src := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(src, []byte("ELF!binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	a := NewInitramfs(&buf)
	a.Dir("/dev", 0o755)
	a.CharDev("/dev/console", 0o600, 5, 1)
	a.File("init", 0o755, []byte("#!x"))
	a.CopyFile("/bin/hotplug-agent", 0o755, src)
	a.File("/etc/hotplug-agent/config.yaml", 0o644, []byte("a: 1\n"))
	a.Symlink("/sbin/init", "/init")
	a.Dir("/etc", 0o755) // already made as a parent: not repeated
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	got := readNewc(t, buf.Bytes())
	type short struct {
		Name   string
		Mode   uint32
		RMajor uint32
		RMinor uint32
		Data   string
	}
	var gotShort []short
	for _, e := range got {
		gotShort = append(gotShort, short{e.Name, e.Mode, e.RMajor, e.RMinor, e.Data})
	}
	want := []short{
		{"dev", 0o040755, 0, 0, ""},
		{"dev/console", 0o020600, 5, 1, ""},
		{"init", 0o100755, 0, 0, "#!x"},
		{"bin", 0o040755, 0, 0, ""},
		{"bin/hotplug-agent", 0o100755, 0, 0, "ELF!binary"},
		{"etc", 0o040755, 0, 0, ""},
		{"etc/hotplug-agent", 0o040755, 0, 0, ""},
		{"etc/hotplug-agent/config.yaml", 0o100644, 0, 0, "a: 1\n"},
		{"sbin", 0o040755, 0, 0, ""},
		{"sbin/init", 0o120777, 0, 0, "/init"},
	}
	if diff := cmp.Diff(want, gotShort); diff != "" {
		t.Errorf("archive (-want +got):\n%s", diff)
	}
}

func TestInitramfsMissingFile(t *testing.T) {
	var buf bytes.Buffer
	a := NewInitramfs(&buf)
	a.CopyFile("/bin/x", 0o755, filepath.Join(t.TempDir(), "absent"))
	a.File("/after", 0o644, []byte("ignored after the error"))
	if err := a.Close(); err == nil {
		t.Fatal("Close: no error for a missing source file")
	}
}
