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

// MaxMemoryBlock is the largest memory block number ParseMemoryBlockList accepts: nine digits,
// as in the memoryN directories this package reads. Block numbers are physical addresses
// divided by the block size, and hot-add windows are placed high: with 128 MiB blocks, block
// 1<<20 is at 128 TiB, so block numbers are not bounded as CPU numbers are.
const MaxMemoryBlock = 999_999_999

// MaxMemoryBlocks bounds how many blocks a list that ParseMemoryBlockList returns may hold:
// 4,194,304, which is 512 TiB in 128 MiB blocks (the smallest that x86-64 and arm64 make), more
// memory than any machine has, while the list takes at most 32 MiB. Without it a range as short
// as "0-999999999" would take 8 GB.
const MaxMemoryBlocks = 1 << 22

// listKind is what the numbers of a list are: the noun its errors use, and the largest number.
type listKind struct {
	noun string
	max  int
}

var (
	cpuList   = listKind{"CPU", maxCPUs - 1}
	blockList = listKind{"memory block", MaxMemoryBlock}
)

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

// ParseCPUListLimit is ParseCPUList, but refuses a list of more than limit CPUs before it is
// expanded: for a list that may hold fewer CPUs than any machine could have.
func ParseCPUListLimit(s string, limit int) ([]int, error) {
	cpus, err := parseList(s, cpuList, min(limit, maxCPUs))
	if err != nil {
		return nil, fmt.Errorf("sysfs: %w", err)
	}
	return cpus, nil
}

// ParseMemoryBlockList parses a list of memory block numbers in the kernel's list format, as
// FormatCPUList writes it ("32-35,40"): as ParseCPUList, but block numbers go up to
// MaxMemoryBlock, and a list of more than limit blocks is refused before any is expanded (limit
// is at most MaxMemoryBlocks; 0 or less is MaxMemoryBlocks). Errors speak of memory blocks.
//
// ParseMemoryBlockList does not block and is safe for concurrent use.
func ParseMemoryBlockList(s string, limit int) ([]int, error) {
	if limit <= 0 || limit > MaxMemoryBlocks {
		limit = MaxMemoryBlocks
	}
	blocks, err := parseList(s, blockList, limit)
	if err != nil {
		return nil, fmt.Errorf("sysfs: %w", err)
	}
	return blocks, nil
}

// parseCPUList is ParseCPUList with errors that do not start with "sysfs: ", for callers that
// wrap them with a path.
func parseCPUList(s string) ([]int, error) { return parseList(s, cpuList, maxCPUs) }

// parseList parses the list s of numbers of kind k, refusing one of more than limit numbers.
func parseList(s string, k listKind, limit int) ([]int, error) {
	type span struct{ lo, hi int }
	var spans []span
	if err := walkList(s, k, func(lo, hi int) { spans = append(spans, span{lo, hi}) }); err != nil {
		return nil, err
	}
	if len(spans) == 0 {
		return []int{}, nil
	}

	// Merge overlapping and adjacent spans, count them, then expand: a list that covers more
	// than limit numbers is refused before anything is allocated for them.
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
	if total > limit {
		return nil, fmt.Errorf("invalid %s list %q: %d %ss, more than the %d a list may hold", k.noun, truncate(s), total, k.noun, limit)
	}
	numbers := make([]int, 0, total)
	for _, sp := range merged {
		for n := sp.lo; n <= sp.hi; n++ {
			numbers = append(numbers, n)
		}
	}
	return numbers, nil
}

// walkList checks the list s of numbers of kind k (see ParseCPUList) and calls span with each of
// its items, lo to hi inclusive, in the order written. It stops at the first invalid item and
// returns the error. It allocates nothing for a valid list, which lets it serve a read of a
// kernel file on the event path.
func walkList[S ~string | ~[]byte](s S, k listKind, span func(lo, hi int)) error {
	s = trimSpace(s)
	if len(s) == 0 {
		return nil
	}
	whole := s
	for {
		item, rest, more := cut(s, ',')
		first, last, isRange := cut(item, '-')
		lo, err := parseNumber(first, k)
		if err != nil {
			return badItem(whole, item, k, err)
		}
		hi := lo
		if isRange {
			if hi, err = parseNumber(last, k); err != nil {
				return badItem(whole, item, k, err)
			}
			if hi < lo {
				return badItem(whole, item, k, errors.New("range ends before it starts"))
			}
		}
		span(lo, hi)
		if !more {
			return nil
		}
		s = rest
	}
}

// badItem is the error for item of the list s of numbers of kind k.
func badItem[S ~string | ~[]byte](s, item S, k listKind, err error) error {
	return fmt.Errorf("invalid %s list %q: item %q: %w", k.noun, truncate(string(s)), truncate(string(item)), err)
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

// parseNumber parses one number of kind k: decimal digits only, at most k.max.
func parseNumber[S ~string | ~[]byte](s S, k listKind) (int, error) {
	if len(s) == 0 {
		return 0, errors.New("missing number")
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("unexpected character %q", s[i])
		}
		// Checked before the multiplication: 999,999,999 times ten overflows a 32-bit int.
		d := int(s[i] - '0')
		if n > (k.max-d)/10 {
			return 0, fmt.Errorf("%s number out of range (0 to %d)", k.noun, k.max)
		}
		n = n*10 + d
	}
	return n, nil
}

// FormatCPUList returns cpus in the kernel's list format, the inverse of ParseCPUList (and of
// ParseMemoryBlockList, for memory block numbers): sorted,
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
	err := walkList(b, cpuList, func(lo, hi int) {
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
