package sysfs

import (
	"math/bits"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCPUList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []int
	}{
		{"", []int{}},
		{"\n", []int{}},
		{"0", []int{0}},
		{"0\n", []int{0}},
		{"0-3,8", []int{0, 1, 2, 3, 8}},
		{"0-3,8-11\n", []int{0, 1, 2, 3, 8, 9, 10, 11}},
		{"  5 \t", []int{5}},
		{"4-4", []int{4}},
		{"0,2,4,6", []int{0, 2, 4, 6}},
		{"3,1,2", []int{1, 2, 3}},           // sorted
		{"1,1,0-2,2-3", []int{0, 1, 2, 3}},  // de-duplicated
		{"8-9,0-1,4", []int{0, 1, 4, 8, 9}}, // sorted ranges
		{"007", []int{7}},
		{"1048575", []int{1048575}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCPUList(tt.in)
			if err != nil {
				t.Fatalf("ParseCPUList(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseCPUList(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestParseCPUListErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		wantMsg string
	}{
		{"-1", `sysfs: invalid CPU list "-1": item "-1": missing number`},
		{"3-1", `sysfs: invalid CPU list "3-1": item "3-1": range ends before it starts`},
		{"a", `sysfs: invalid CPU list "a": item "a": unexpected character 'a'`},
		{"0-3,x", `item "x": unexpected character 'x'`},
		{"1,,2", `item "": missing number`},
		{",", `item "": missing number`},
		{"1,", `item "": missing number`},
		{"0-", `item "0-": missing number`},
		{"-", `item "-": missing number`},
		{"0--3", `item "0--3": unexpected character '-'`},
		{"0-3-5", `item "0-3-5": unexpected character '-'`},
		{"0-15:2/4", `item "0-15:2/4": unexpected character ':'`}, // stride: kernel input only
		{"N", `item "N": unexpected character 'N'`},               // last CPU: kernel input only
		{"0-N", `item "0-N": unexpected character 'N'`},
		{"1 2", `item "1 2": unexpected character ' '`},
		{"1, 2", `item " 2": unexpected character ' '`},
		{"+1", `item "+1": unexpected character '+'`},
		{"0x1", `item "0x1": unexpected character 'x'`},
		{"1;2", `item "1;2": unexpected character ';'`},
		{"1048576", `item "1048576": CPU number out of range (0 to 1048575)`},
		{"0-1048576", `item "0-1048576": CPU number out of range (0 to 1048575)`},
		{"0-99999999999999999999999", `CPU number out of range (0 to 1048575)`},
		{strings.Repeat("9", 100), `sysfs: invalid CPU list "` + strings.Repeat("9", 64) + `...": item`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCPUList(tt.in)
			if err == nil {
				t.Fatalf("ParseCPUList(%q) = %v, want an error", tt.in, got)
			}
			if got != nil {
				t.Errorf("ParseCPUList(%q) = %v with its error, want nil", tt.in, got)
			}
			if !strings.HasPrefix(err.Error(), "sysfs: invalid CPU list ") || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("ParseCPUList(%q) error = %q, want it to contain %q", tt.in, err, tt.wantMsg)
			}
		})
	}
}

// TestParseCPUListLarge checks the bound: the largest list is accepted and overlapping copies of
// it cost no more than one.
func TestParseCPUListLarge(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"0-1048575", "0-1048575,0-1048575,5,1048575"} {
		got, err := ParseCPUList(in)
		if err != nil {
			t.Fatalf("ParseCPUList(%q): %v", in, err)
		}
		if len(got) != maxCPUs || got[0] != 0 || got[len(got)-1] != maxCPUs-1 {
			t.Errorf("ParseCPUList(%q) has %d CPUs from %d to %d, want %d from 0 to %d", in, len(got), got[0], got[len(got)-1], maxCPUs, maxCPUs-1)
		}
		if cap(got) != maxCPUs {
			t.Errorf("ParseCPUList(%q) allocated room for %d CPUs, want %d", in, cap(got), maxCPUs)
		}
	}
}

// TestParseCPUListLimit: a list of more CPUs than the limit is refused before it is expanded.
func TestParseCPUListLimit(t *testing.T) {
	t.Parallel()
	if got, err := ParseCPUListLimit("0-3,2-5", 6); err != nil || !slices.Equal(got, []int{0, 1, 2, 3, 4, 5}) {
		t.Errorf("ParseCPUListLimit(\"0-3,2-5\", 6) = %v, %v; want 0 to 5", got, err)
	}
	for _, tt := range []struct {
		in      string
		limit   int
		wantMsg string
	}{
		{"0-3,2-5", 5, `sysfs: invalid CPU list "0-3,2-5": 6 CPUs, more than the 5 a list may hold`},
		{"0-1048575", 16384, "1048576 CPUs, more than the 16384"},
		{"1048576", 1 << 30, "CPU number out of range (0 to 1048575)"},
	} {
		if got, err := ParseCPUListLimit(tt.in, tt.limit); err == nil || got != nil || !strings.Contains(err.Error(), tt.wantMsg) {
			t.Errorf("ParseCPUListLimit(%q, %d) = %v, %v; want an error saying %q", tt.in, tt.limit, got, err, tt.wantMsg)
		}
	}
}

// TestParseMemoryBlockList: memory block numbers go up to nine digits (block 1048576 is at
// 128 TiB with 128 MiB blocks), a list is bounded by how many blocks it covers, not by how short
// it is written, and errors speak of memory blocks.
func TestParseMemoryBlockList(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want []int
	}{
		{"", []int{}},
		{"32-35", []int{32, 33, 34, 35}},
		{"1048576", []int{1048576}},
		{"0,1048575-1048577\n", []int{0, 1048575, 1048576, 1048577}},
		{"999999999", []int{999999999}},
		{"999999998-999999999,999999998", []int{999999998, 999999999}},
	} {
		got, err := ParseMemoryBlockList(tt.in, 0)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseMemoryBlockList(%q, 0) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, tt := range []struct {
		in      string
		limit   int
		wantMsg string
	}{
		{"1000000000", 0, `sysfs: invalid memory block list "1000000000": item "1000000000": memory block number out of range (0 to 999999999)`},
		{"0-99999999999999999999999", 0, `memory block number out of range (0 to 999999999)`},
		// Ten digits that wrap a 32-bit int to 1 (2^32 + 1): the bound must hold before the
		// number is multiplied, on every architecture.
		{"4294967297", 0, `item "4294967297": memory block number out of range (0 to 999999999)`},
		{"0-4294967297", 0, `item "0-4294967297": memory block number out of range (0 to 999999999)`},
		{"3-1", 0, `sysfs: invalid memory block list "3-1": item "3-1": range ends before it starts`},
		{"0-999999999", 0, `sysfs: invalid memory block list "0-999999999": 1000000000 memory blocks, more than the 4194304 a list may hold`},
		{"0-4194304", 0, "4194305 memory blocks, more than the 4194304"},
		{"0-4194304", MaxMemoryBlocks + 1, "4194305 memory blocks, more than the 4194304"},
		{"0-3,8", 4, "5 memory blocks, more than the 4 a list may hold"},
	} {
		got, err := ParseMemoryBlockList(tt.in, tt.limit)
		if err == nil || got != nil || !strings.Contains(err.Error(), tt.wantMsg) {
			t.Errorf("ParseMemoryBlockList(%q, %d) = %v, %v; want an error saying %q", tt.in, tt.limit, got, err, tt.wantMsg)
		}
	}
	if got, err := ParseMemoryBlockList("0-3,1-2", 4); err != nil || len(got) != 4 {
		t.Errorf("ParseMemoryBlockList of 4 blocks with overlaps, at most 4: %v, %v", got, err)
	}
}

func TestFormatCPUList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   []int
		want string
	}{
		{"nil", nil, ""},
		{"empty", []int{}, ""},
		{"one", []int{0}, "0"},
		{"pair", []int{0, 1}, "0-1"},
		{"range and single", []int{0, 1, 2, 3, 8}, "0-3,8"},
		{"unsorted with duplicates", []int{8, 3, 2, 1, 0, 3, 8}, "0-3,8"},
		{"no runs", []int{0, 2, 4}, "0,2,4"},
		{"two ranges", []int{1, 2, 10, 11, 12}, "1-2,10-12"},
		{"negatives left out", []int{-5, -1, 0, 1}, "0-1"},
		{"only negatives", []int{-1}, ""},
		{"large", []int{8191}, "8191"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.in)
			if got := FormatCPUList(in); got != tt.want {
				t.Errorf("FormatCPUList(%v) = %q, want %q", tt.in, got, tt.want)
			}
			if diff := cmp.Diff(tt.in, in); diff != "" {
				t.Errorf("FormatCPUList modified its argument (-before +after):\n%s", diff)
			}
		})
	}
}

// TestCPUListRoundTrip checks that FormatCPUList inverts ParseCPUList: the canonical form comes
// back unchanged, and any accepted list parses to the same CPUs after formatting.
func TestCPUListRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in        string
		canonical string
	}{
		{"", ""},
		{"0", "0"},
		{"0-3,8", "0-3,8"},
		{"0-3,8-11\n", "0-3,8-11"},
		{"0-1,3,5-7,9-1023", "0-1,3,5-7,9-1023"},
		{"3,2,1,0,8", "0-3,8"},
		{"0-2,3-5", "0-5"},
		{"0-1,1-2", "0-2"},
		{"5-5", "5"},
		{"007", "7"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			cpus, err := ParseCPUList(tt.in)
			if err != nil {
				t.Fatalf("ParseCPUList(%q): %v", tt.in, err)
			}
			s := FormatCPUList(cpus)
			if s != tt.canonical {
				t.Errorf("FormatCPUList(ParseCPUList(%q)) = %q, want %q", tt.in, s, tt.canonical)
			}
			again, err := ParseCPUList(s)
			if err != nil {
				t.Fatalf("ParseCPUList(%q), the formatted list: %v", s, err)
			}
			if diff := cmp.Diff(cpus, again); diff != "" {
				t.Errorf("round trip through %q changed the CPUs (-want +got):\n%s", s, diff)
			}
		})
	}
}

// FuzzParseCPUList checks that no input panics or yields a list that is unsorted, duplicated,
// out of range or larger than the bound, and that accepted lists survive a round trip through
// FormatCPUList. The seeds are in testdata/fuzz/FuzzParseCPUList.
func FuzzParseCPUList(f *testing.F) {
	for _, s := range []string{"", "0", "0-3,8", "0-3,8-11\n", "3-1", "-1", "0-15:2/4", "1,,2", "1048576"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cpus, err := ParseCPUList(s)
		checkSet(t, s, cpus, err)
		if err != nil {
			if cpus != nil {
				t.Fatalf("ParseCPUList(%q) = %v with error %v, want nil", s, cpus, err)
			}
			if !strings.HasPrefix(err.Error(), "sysfs: invalid CPU list ") {
				t.Fatalf("ParseCPUList(%q) error = %q, want it to start with %q", s, err, "sysfs: invalid CPU list ")
			}
			return
		}
		if cpus == nil {
			t.Fatalf("ParseCPUList(%q) = nil, nil; want a non-nil slice", s)
		}
		if len(cpus) > maxCPUs {
			t.Fatalf("ParseCPUList(%q) returned %d CPUs, more than %d", s, len(cpus), maxCPUs)
		}
		for i, n := range cpus {
			if n < 0 || n >= maxCPUs {
				t.Fatalf("ParseCPUList(%q) returned CPU %d, out of range", s, n)
			}
			if i > 0 && n <= cpus[i-1] {
				t.Fatalf("ParseCPUList(%q) is not sorted and de-duplicated at index %d: %d after %d", s, i, n, cpus[i-1])
			}
		}
		formatted := FormatCPUList(cpus)
		again, err := ParseCPUList(formatted)
		if err != nil {
			t.Fatalf("ParseCPUList(FormatCPUList(ParseCPUList(%q))) = %q: %v", s, formatted, err)
		}
		if !slices.Equal(cpus, again) {
			t.Fatalf("round trip of %q through %q changed the CPUs: %v, then %v", s, formatted, cpus, again)
		}
		if FormatCPUList(again) != formatted {
			t.Fatalf("FormatCPUList is not stable for %q", formatted)
		}
	})
}

// checkSet checks that a CPUSet made from the list s holds exactly cpus, and fails where
// ParseCPUList failed (err).
func checkSet(t *testing.T, s string, cpus []int, err error) {
	t.Helper()
	set := CPUSet{bits: []uint64{^uint64(0)}} // what an earlier list left
	serr := set.setList([]byte(s))
	if (serr != nil) != (err != nil) {
		t.Fatalf("CPUSet of %q: error %v; ParseCPUList: %v", s, serr, err)
	}
	count := 0
	for _, w := range set.bits {
		count += bits.OnesCount64(w)
	}
	if count != len(cpus) {
		t.Fatalf("CPUSet of %q holds %d CPUs; ParseCPUList gives %d", s, count, len(cpus))
	}
	for _, n := range cpus {
		if !set.Contains(n) {
			t.Fatalf("CPUSet of %q does not contain %d", s, n)
		}
	}
}

func TestCPUSet(t *testing.T) {
	for _, s := range []string{"", "0", "0-3,8", "0-3,8-11\n", "63-64,127", "5,1-2", "3-1", "1,", "x"} {
		cpus, err := ParseCPUList(s)
		checkSet(t, s, cpus, err)
	}
	var set CPUSet
	for _, n := range []int{-1, 0, 1 << 30} {
		if set.Contains(n) {
			t.Errorf("the empty set contains %d", n)
		}
	}
}
