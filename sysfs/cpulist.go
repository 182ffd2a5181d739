package sysfs

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
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
	type span struct{ lo, hi int }
	var spans []span
	if err := walkCPUList(s, func(lo, hi int) { spans = append(spans, span{lo, hi}) }); err != nil {
		return nil, err
	}
	if len(spans) == 0 {
		return []int{}, nil
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

// walkCPUList checks the CPU list s (see ParseCPUList) and calls span with each of its items,
// lo to hi inclusive, in the order written. It stops at the first invalid item and returns the
// error. It allocates nothing for a valid list, which lets it serve a read of a kernel file on
// the event path.
func walkCPUList[S ~string | ~[]byte](s S, span func(lo, hi int)) error {
	s = trimSpace(s)
	if len(s) == 0 {
		return nil
	}
	whole := s
	for {
		item, rest, more := cut(s, ',')
		first, last, isRange := cut(item, '-')
		lo, err := parseCPU(first)
		if err != nil {
			return badItem(whole, item, err)
		}
		hi := lo
		if isRange {
			if hi, err = parseCPU(last); err != nil {
				return badItem(whole, item, err)
			}
			if hi < lo {
				return badItem(whole, item, errors.New("range ends before it starts"))
			}
		}
		span(lo, hi)
		if !more {
			return nil
		}
		s = rest
	}
}

// badItem is the error for item of the CPU list s.
func badItem[S ~string | ~[]byte](s, item S, err error) error {
	return fmt.Errorf("invalid CPU list %q: item %q: %w", truncate(string(s)), truncate(string(item)), err)
}

// cut is strings.Cut at a byte, for strings and byte slices alike.
func cut[S ~string | ~[]byte](s S, sep byte) (before, after S, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, s[:0], false
}

// trimSpace is strings.TrimSpace for the ASCII white space the kernel prints, for strings and
// byte slices alike.
func trimSpace[S ~string | ~[]byte](s S) S {
	for len(s) > 0 && (isSpace(s[0]) || s[0] == '\v' || s[0] == '\f') {
		s = s[1:]
	}
	for len(s) > 0 && (isSpace(s[len(s)-1]) || s[len(s)-1] == '\v' || s[len(s)-1] == '\f') {
		s = s[:len(s)-1]
	}
	return s
}

// parseCPU parses one CPU number: decimal digits only, below maxCPUs.
func parseCPU[S ~string | ~[]byte](s S) (int, error) {
	if len(s) == 0 {
		return 0, errors.New("missing number")
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("unexpected character %q", s[i])
		}
		if n = n*10 + int(s[i]-'0'); n >= maxCPUs {
			return 0, fmt.Errorf("CPU number out of range (0 to %d)", maxCPUs-1)
		}
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

// CPUSet is a set of CPU numbers, one bit each: what OnlineCPUs.Read fills, reusing its memory
// from one read to the next. The zero value is empty. It is not safe for concurrent use.
type CPUSet struct{ bits []uint64 }

// Contains reports whether CPU n is in s.
func (s *CPUSet) Contains(n int) bool {
	i := n >> 6
	return n >= 0 && i < len(s.bits) && s.bits[i]&(1<<(n&63)) != 0
}

// setList makes s the CPUs of the kernel CPU list b (see ParseCPUList); on an error s is empty.
func (s *CPUSet) setList(b []byte) error {
	clear(s.bits)
	err := walkCPUList(b, func(lo, hi int) {
		if need := hi>>6 + 1; need > len(s.bits) { // below maxCPUs/64 words
			s.bits = append(s.bits, make([]uint64, need-len(s.bits))...)
		}
		for n := lo; n <= hi; n++ {
			s.bits[n>>6] |= 1 << (n & 63)
		}
	})
	if err != nil {
		clear(s.bits)
	}
	return err
}
