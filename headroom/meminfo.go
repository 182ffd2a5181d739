package headroom

import (
	"bytes"
	"fmt"
	"strconv"
)

// Meminfo is what the model takes from /proc/meminfo, in bytes.
type Meminfo struct {
	MemTotal     uint64 `json:"mem_total_bytes"`
	MemFree      uint64 `json:"mem_free_bytes"`
	MemAvailable uint64 `json:"mem_available_bytes"`
	// DirectMap1G reports whether the kernel maps memory with 1 GiB pages (x86 prints a
	// DirectMap1G line only then): hot-added memory is mapped the same way, and needs almost no
	// page tables; with 2 MiB pages it needs a page-table page per GiB.
	DirectMap1G bool `json:"direct_map_1g"`
}

// maxMeminfo bounds what ParseMeminfo accepts: /proc/meminfo is under 2 KiB.
const maxMeminfo = 64 << 10

// ParseMeminfo parses the text of /proc/meminfo: lines of "Name:  VALUE" or "Name:  VALUE kB".
// A line of another shape is an error naming the line; so is a file without MemTotal and
// MemFree. Names it does not use are skipped. ParseMeminfo does not block and is safe for
// concurrent use.
func ParseMeminfo(data []byte) (Meminfo, error) {
	if len(data) > maxMeminfo {
		return Meminfo{}, fmt.Errorf("meminfo: %d bytes; want at most %d", len(data), maxMeminfo)
	}
	var m Meminfo
	var total, free bool
	for lineNo := 1; len(data) > 0; lineNo++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		name, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok || len(name) == 0 || !printable(name) {
			return Meminfo{}, fmt.Errorf("meminfo: line %d: %q: want \"Name: VALUE [kB]\"", lineNo, truncate(line))
		}
		num, unit, _ := bytes.Cut(bytes.TrimSpace(rest), []byte{' '})
		v, err := strconv.ParseUint(string(num), 10, 64)
		if err != nil || (len(unit) > 0 && string(unit) != "kB") {
			return Meminfo{}, fmt.Errorf("meminfo: line %d: %q: want \"Name: VALUE [kB]\"", lineNo, truncate(line))
		}
		if len(unit) > 0 {
			if v > (1<<64-1)>>10 {
				return Meminfo{}, fmt.Errorf("meminfo: line %d: %s: %d kB is out of range", lineNo, name, v)
			}
			v <<= 10
		}
		switch string(name) {
		case "MemTotal":
			m.MemTotal, total = v, true
		case "MemFree":
			m.MemFree, free = v, true
		case "MemAvailable":
			m.MemAvailable = v
		case "DirectMap1G":
			m.DirectMap1G = true
		}
	}
	if !total || !free {
		return Meminfo{}, fmt.Errorf("meminfo: no MemTotal or MemFree line")
	}
	return m, nil
}
