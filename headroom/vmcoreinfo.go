package headroom

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// The kernel describes itself to crash tools in its VMCOREINFO note, which /proc/kcore carries
// (Linux 4.19 and later; reading it needs CAP_SYS_RAWIO, and kernel lockdown forbids it):
// "SIZE(page)=64" is sizeof(struct page), "PAGESIZE=4096" the page size.

// maxNotes bounds the note segment read from /proc/kcore: its notes (prstatus, prpsinfo, the
// task struct, VMCOREINFO) take a few KiB.
const maxNotes = 1 << 20

// StructPageFromKcore returns sizeof(struct page) and the page size from the VMCOREINFO note of
// the ELF file at path (/proc/kcore). It blocks on a few reads of path and is safe for
// concurrent use.
func StructPageFromKcore(path string) (structPage, pageSize uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	ef, err := elf.NewFile(f)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	for _, p := range ef.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(p.Open(), maxNotes))
		if err != nil {
			return 0, 0, fmt.Errorf("%s: read notes: %w", path, err)
		}
		desc, ok := FindNote(b, ef.ByteOrder, "VMCOREINFO")
		if !ok {
			continue
		}
		info := ParseVMCoreInfo(desc)
		structPage, err1 := strconv.ParseUint(info["SIZE(page)"], 10, 64)
		pageSize, err2 := strconv.ParseUint(info["PAGESIZE"], 10, 64)
		if err1 != nil || err2 != nil || structPage == 0 || pageSize == 0 {
			return 0, 0, fmt.Errorf("%s: VMCOREINFO has no SIZE(page) and PAGESIZE", path)
		}
		return structPage, pageSize, nil
	}
	return 0, 0, fmt.Errorf("%s: %w", path, errNoVMCoreInfo)
}

var errNoVMCoreInfo = errors.New("no VMCOREINFO note")

// FindNote returns the descriptor of the first ELF note named name in b, a note segment: a
// sequence of (namesz, descsz, type) headers each followed by the name and the descriptor,
// padded to 4 bytes. It does not block and is safe for concurrent use.
func FindNote(b []byte, order binary.ByteOrder, name string) ([]byte, bool) {
	for len(b) >= 12 {
		namesz, descsz := uint64(order.Uint32(b)), uint64(order.Uint32(b[4:]))
		b = b[12:]
		nameEnd := (namesz + 3) &^ 3
		if nameEnd > uint64(len(b)) {
			return nil, false
		}
		n := b[:namesz]
		b = b[nameEnd:]
		descEnd := (descsz + 3) &^ 3
		if descEnd > uint64(len(b)) {
			return nil, false
		}
		desc := b[:descsz]
		b = b[descEnd:]
		if string(bytes.TrimRight(n, "\x00")) == name {
			return desc, true
		}
	}
	return nil, false
}

// ParseVMCoreInfo parses the text of a VMCOREINFO note, lines of KEY=VALUE, into a map. Lines
// without "=" are skipped; the first of two equal keys wins. It does not block and is safe for
// concurrent use.
func ParseVMCoreInfo(desc []byte) map[string]string {
	m := map[string]string{}
	for len(desc) > 0 {
		var line []byte
		line, desc, _ = bytes.Cut(desc, []byte{'\n'})
		k, v, ok := bytes.Cut(bytes.TrimRight(line, "\x00\r"), []byte{'='})
		if !ok || len(k) == 0 {
			continue
		}
		if _, dup := m[string(k)]; !dup {
			m[string(k)] = string(v)
		}
	}
	return m
}
