package sysfs

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// maxCPUs bounds what ParseCPUList accepts: every CPU number must be below it, so a list never
// holds more than maxCPUs CPUs. The kernel's own limit (NR_CPUS) is at most 8192 on x86.
const maxCPUs = 1 << 20

// ParseCPUList parses a kernel CPU list, the format of devices/system/cpu/{possible,present,
// online,offline} and nodeM/cpulist: comma-separated decimal numbers and inclusive ranges, e.g.
// "", "0", "0-3,8" or "0-3,8-11\n". Surrounding white space is ignored; an empty list is an
// empty, non-nil slice. The result is sorted and de-duplicated.
//
// Only what the kernel prints is accepted. The stride form "0-15:2/4" and the "N" (last CPU)
// form are input syntax of the kernel's bitmap_parselist, never printed in these files (the
// kernel prints lists with the %*pbl format, which emits plain ranges), so they are rejected,
// as are negative numbers, reversed ranges ("3-1"), empty items, inner white space, and CPU
// numbers of 1<<20 or more (far above the kernel's NR_CPUS). Memory use is bounded: the result
// is sized from the merged ranges, at most 1<<20 entries.
//
// ParseCPUList does not block and is safe for concurrent use.
func ParseCPUList(s string) ([]int, error) {
	cpus, err := parseCPUList(s)
	if err != nil {
		return nil, fmt.Errorf("sysfs: %w", err)
	}
	return cpus, nil
}

// parseCPUList is ParseCPUList with errors that do not start with "sysfs: ", for callers that
// wrap them with a path.
func parseCPUList(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return []int{}, nil
	}
	fail := func(item string, err error) ([]int, error) {
		return nil, fmt.Errorf("invalid CPU list %q: item %q: %w", truncate(s), truncate(item), err)
	}
	type span struct{ lo, hi int }
	spans := make([]span, 0, strings.Count(s, ",")+1)
	for item := range strings.SplitSeq(s, ",") {
		first, last, isRange := strings.Cut(item, "-")
		lo, err := parseCPU(first)
		if err != nil {
			return fail(item, err)
		}
		hi := lo
		if isRange {
			if hi, err = parseCPU(last); err != nil {
				return fail(item, err)
			}
			if hi < lo {
				return fail(item, errors.New("range ends before it starts"))
			}
		}
		spans = append(spans, span{lo, hi})
	}

	// Merge overlapping and adjacent spans, then expand: every number is below maxCPUs, so the
	// merged spans cover at most maxCPUs numbers.
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
	merged := spans[:1]
	for _, sp := range spans[1:] {
		last := &merged[len(merged)-1]
		if sp.lo <= last.hi+1 {
			last.hi = max(last.hi, sp.hi)
			continue
		}
		merged = append(merged, sp)
	}
	total := 0
	for _, sp := range merged {
		total += sp.hi - sp.lo + 1
	}
	cpus := make([]int, 0, total)
	for _, sp := range merged {
		for n := sp.lo; n <= sp.hi; n++ {
			cpus = append(cpus, n)
		}
	}
	return cpus, nil
}

// parseCPU parses one CPU number: decimal digits only, below maxCPUs.
func parseCPU(s string) (int, error) {
	if s == "" {
		return 0, errors.New("missing number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("unexpected character %q", s[i])
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n >= maxCPUs {
		return 0, fmt.Errorf("CPU number out of range (0 to %d)", maxCPUs-1)
	}
	return n, nil
}

// FormatCPUList returns cpus in the kernel's list format, the inverse of ParseCPUList: sorted,
// de-duplicated, runs of two or more consecutive numbers written as ranges ("0-3,8"); "" for
// none. Negative numbers name no CPU and are left out. cpus is not modified. FormatCPUList does
// not block and is safe for concurrent use.
func FormatCPUList(cpus []int) string {
	sorted := slices.Clone(cpus)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	i, _ := slices.BinarySearch(sorted, 0)
	sorted = sorted[i:]

	var b []byte
	for len(sorted) > 0 {
		run := 1
		for run < len(sorted) && sorted[run] == sorted[run-1]+1 {
			run++
		}
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(sorted[0]), 10)
		if run > 1 {
			b = append(b, '-')
			b = strconv.AppendInt(b, int64(sorted[run-1]), 10)
		}
		sorted = sorted[run:]
	}
	return string(b)
}
