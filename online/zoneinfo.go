package online

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// ZoneInfo is one zone of one NUMA node as /proc/zoneinfo shows it.
type ZoneInfo struct {
	Node int
	// Zone is the zone's name: DMA, DMA32, Normal, Movable, Device.
	Zone string
	// Present is the zone's present pages (memory in the zone, online, whether the kernel manages
	// it or not); CMA the pages of it reserved for the contiguous allocator (0 without CONFIG_CMA).
	Present, CMA uint64
}

// Movable reports whether the zone is ZONE_MOVABLE.
func (z ZoneInfo) Movable() bool { return z.Zone == "Movable" }

// Kernel reports whether the zone serves kernel allocations: DMA, DMA32, Normal (and HighMem on
// 32-bit machines); not Movable, nor Device (ZONE_DEVICE memory is never present).
func (z ZoneInfo) Kernel() bool { return z.Zone != "Movable" && z.Zone != "Device" }

// maxZoneinfo bounds what ParseZoneinfo accepts: /proc/zoneinfo has a page set per CPU and zone,
// some hundred KiB on a machine of many CPUs.
const maxZoneinfo = 16 << 20

// ParseZoneinfo parses the text of /proc/zoneinfo: a "Node N, zone NAME" line opens each zone,
// and its "present" and "cma" lines are read; everything else is skipped. A zone header that does
// not parse, a zone without a present line, or a count that is not a number is an error naming
// the line. It does not block and is safe for concurrent use.
func ParseZoneinfo(data []byte) ([]ZoneInfo, error) {
	if len(data) > maxZoneinfo {
		return nil, fmt.Errorf("zoneinfo: %d bytes; want at most %d", len(data), maxZoneinfo)
	}
	var out []ZoneInfo
	seen := false // the current zone had its present line
	for lineNo := 1; len(data) > 0; lineNo++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		if rest, ok := bytes.CutPrefix(line, []byte("Node ")); ok {
			if len(out) > 0 && !seen {
				return nil, fmt.Errorf("zoneinfo: line %d: zone %s of node %d has no present line", lineNo, out[len(out)-1].Zone, out[len(out)-1].Node)
			}
			node, name, ok := bytes.Cut(rest, []byte(", zone"))
			n, err := strconv.Atoi(string(node))
			zone := string(bytes.TrimSpace(name))
			if !ok || err != nil || n < 0 || zone == "" || strings.ContainsAny(zone, " \t,") {
				return nil, fmt.Errorf("zoneinfo: line %d: %q: want \"Node N, zone NAME\"", lineNo, truncateLine(line))
			}
			out = append(out, ZoneInfo{Node: n, Zone: zone})
			seen = false
			continue
		}
		f := bytes.Fields(line)
		if len(out) == 0 || len(f) != 2 || (string(f[0]) != "present" && string(f[0]) != "cma") {
			continue
		}
		v, err := strconv.ParseUint(string(f[1]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("zoneinfo: line %d: %s %q is not a count of pages", lineNo, f[0], truncateLine(f[1]))
		}
		z := &out[len(out)-1]
		if string(f[0]) == "present" {
			z.Present, seen = v, true
		} else {
			z.CMA = v
		}
	}
	if len(out) > 0 && !seen {
		return nil, fmt.Errorf("zoneinfo: zone %s of node %d has no present line", out[len(out)-1].Zone, out[len(out)-1].Node)
	}
	return out, nil
}

func truncateLine(b []byte) string {
	const max = 64
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
