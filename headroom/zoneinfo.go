package headroom

import (
	"bytes"
	"fmt"
	"strconv"
)

// Zone is one zone of /proc/zoneinfo: its free pages, its watermarks and its lowmem reserves,
// all in pages.
type Zone struct {
	// Node is N of "Node N, zone NAME"; Name is NAME: DMA, DMA32, Normal, Movable, Device, ...
	Node int    `json:"node"`
	Name string `json:"zone"`
	// Index is the zone's index within its node, in the order the kernel prints them (DMA 0,
	// DMA32 1, Normal 2, Movable 3 on x86-64): the index of Protection that applies to
	// allocations whose highest zone is this one.
	Index int `json:"-"`
	// Free is "pages free"; Min, Low and High are the watermarks.
	Free, Min, Low, High uint64 `json:"-"`
	// Spanned, Present and Managed are the zone's sizes; Managed is what the page allocator has.
	Spanned, Present, Managed uint64 `json:"-"`
	// FreeCMA is nr_free_cma: free pages that only movable allocations may take (0 when the
	// kernel does not print it, as for an unpopulated zone).
	FreeCMA uint64 `json:"-"`
	// Protection is the lowmem reserve, "protection: (a, b, ...)": Protection[i] is how many
	// pages this zone keeps from an allocation whose highest usable zone has index i.
	Protection []uint64 `json:"-"`
}

// maxZoneinfo bounds what ParseZoneinfo accepts. /proc/zoneinfo grows with the CPUs (each
// zone lists every CPU's page set, about 150 bytes): 5 KiB on a 2-CPU VM, some 10 MiB for 1,024
// CPUs on 8 nodes.
const maxZoneinfo = 64 << 20

// maxZones bounds the zones one file may describe: 1,024 nodes of 8 zones.
const maxZones = 8192

// ParseZoneinfo parses the text of /proc/zoneinfo into its zones, in file order. For each zone it
// reads the lines it needs ("pages free", the min, low and high watermarks, the sizes,
// nr_free_cma and protection) and ignores the others (per-node statistics, page sets, lines a
// later kernel adds). A zone header that is malformed, a needed line whose value is not a
// number, or a zone without its free pages or watermarks is an error naming the line or the
// zone, so that a file that is not zoneinfo is never half-read. ParseZoneinfo does not block
// and is safe for concurrent use.
func ParseZoneinfo(data []byte) ([]Zone, error) {
	if len(data) > maxZoneinfo {
		return nil, fmt.Errorf("zoneinfo: %d bytes; want at most %d", len(data), maxZoneinfo)
	}
	var zones []Zone
	var seen uint8 // fields of the current zone read so far
	const (
		seenFree = 1 << iota
		seenMin
		seenLow
		seenHigh
		seenProtection
		seenAll = seenFree | seenMin | seenLow | seenHigh | seenProtection
	)
	finish := func() error {
		if len(zones) == 0 {
			return nil
		}
		z := &zones[len(zones)-1]
		if seen != seenAll {
			missing := ""
			for _, f := range []struct {
				bit  uint8
				name string
			}{{seenFree, "pages free"}, {seenMin, "min"}, {seenLow, "low"}, {seenHigh, "high"}, {seenProtection, "protection"}} {
				if seen&f.bit == 0 {
					missing = f.name
					break
				}
			}
			return fmt.Errorf("zoneinfo: node %d zone %s: no %s line", z.Node, z.Name, missing)
		}
		return nil
	}
	for lineNo := 1; len(data) > 0; lineNo++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		if rest, ok := bytes.CutPrefix(line, []byte("Node ")); ok {
			if err := finish(); err != nil {
				return nil, err
			}
			z, err := parseZoneHeader(rest)
			if err != nil {
				return nil, fmt.Errorf("zoneinfo: line %d: %w", lineNo, err)
			}
			if len(zones) >= maxZones {
				return nil, fmt.Errorf("zoneinfo: line %d: more than %d zones", lineNo, maxZones)
			}
			if n := len(zones); n > 0 && zones[n-1].Node == z.Node {
				z.Index = zones[n-1].Index + 1
			}
			zones = append(zones, z)
			seen = 0
			continue
		}
		f := fields2(line)
		if f[0] == nil || len(zones) == 0 {
			continue // a blank line, or what comes before the first zone
		}
		z := &zones[len(zones)-1]
		var dst *uint64
		var bit uint8
		key, val := f[0], f[1]
		switch string(key) {
		case "pages":
			// "pages free N"
			kv := fields2(val)
			if string(kv[0]) != "free" {
				continue
			}
			key, val, dst, bit = []byte("pages free"), kv[1], &z.Free, seenFree
		case "min":
			dst, bit = &z.Min, seenMin
		case "low":
			dst, bit = &z.Low, seenLow
		case "high":
			dst, bit = &z.High, seenHigh
		case "spanned":
			dst = &z.Spanned
		case "present":
			dst = &z.Present
		case "managed":
			dst = &z.Managed
		case "nr_free_cma":
			dst = &z.FreeCMA
		case "protection:":
			p, err := parseProtection(val)
			if err != nil {
				return nil, fmt.Errorf("zoneinfo: line %d: %w", lineNo, err)
			}
			z.Protection, seen = p, seen|seenProtection
			continue
		default:
			continue
		}
		v, err := strconv.ParseUint(string(val), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("zoneinfo: line %d: %s: %q is not a number of pages", lineNo, key, truncate(val))
		}
		*dst, seen = v, seen|bit
	}
	if err := finish(); err != nil {
		return nil, err
	}
	if len(zones) == 0 {
		return nil, fmt.Errorf("zoneinfo: no zone")
	}
	return zones, nil
}

// fields2 splits line at its first run of blanks into the first field and the rest, both
// without surrounding blanks; nil for what is not there.
func fields2(line []byte) [2][]byte {
	line = bytes.TrimLeft(line, " \t")
	if len(line) == 0 {
		return [2][]byte{}
	}
	i := bytes.IndexAny(line, " \t")
	if i < 0 {
		return [2][]byte{line, nil}
	}
	return [2][]byte{line[:i], bytes.TrimSpace(line[i:])}
}

// parseZoneHeader parses what follows "Node " in "Node 0, zone   Normal".
func parseZoneHeader(rest []byte) (Zone, error) {
	num, name, ok := bytes.Cut(rest, []byte(", zone "))
	node, err := strconv.Atoi(string(num))
	name = bytes.TrimSpace(name)
	if !ok || err != nil || node < 0 || len(num) == 0 || num[0] == '+' || len(name) == 0 || len(name) > 16 || !printable(name) {
		return Zone{}, fmt.Errorf("%q: want \"Node N, zone NAME\"", truncate(append([]byte("Node "), rest...)))
	}
	return Zone{Node: node, Name: string(name)}, nil
}

// parseProtection parses "(0, 3018, 9034, 9034, 9034)".
func parseProtection(s []byte) ([]uint64, error) {
	inner, ok := bytes.CutPrefix(bytes.TrimSpace(s), []byte("("))
	if ok {
		inner, ok = bytes.CutSuffix(inner, []byte(")"))
	}
	if !ok || len(inner) == 0 {
		return nil, fmt.Errorf("protection: %q: want (N, N, ...)", truncate(s))
	}
	var out []uint64
	for len(inner) > 0 {
		var item []byte
		item, inner, _ = bytes.Cut(inner, []byte{','})
		v, err := strconv.ParseUint(string(bytes.TrimSpace(item)), 10, 64)
		if err != nil || len(out) >= 16 {
			return nil, fmt.Errorf("protection: %q: want up to 16 numbers of pages", truncate(s))
		}
		out = append(out, v)
	}
	return out, nil
}

// printable reports whether b is printable ASCII without blanks.
func printable(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// truncate shortens b for an error message.
func truncate(b []byte) string {
	const max = 64
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
