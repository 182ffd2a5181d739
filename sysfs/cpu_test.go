package sysfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCPUs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		tree     tree
		wantCPUs []CPU
		wantSets CPUSets
	}{
		{
			name: "empty online list",
			tree: tree{
				"devices/system/cpu/possible":    "0-1\n",
				"devices/system/cpu/present":     "0-1\n",
				"devices/system/cpu/online":      "\n",
				"devices/system/cpu/cpu0/":       "",
				"devices/system/cpu/cpu1/online": "0\n",
			},
			wantCPUs: []CPU{{Number: 0, Online: false, Node: -1}, {Number: 1, Online: false, Hotpluggable: true, Node: -1}},
			wantSets: CPUSets{Possible: []int{0, 1}, Present: []int{0, 1}, Online: []int{}},
		},
		{
			name: "not cpus",
			tree: tree{
				"devices/system/cpu/possible":          "0\n",
				"devices/system/cpu/present":           "0\n",
				"devices/system/cpu/online":            "0\n",
				"devices/system/cpu/cpu0/":             "",
				"devices/system/cpu/cpu/":              "",
				"devices/system/cpu/cpufreq/policy0/":  "",
				"devices/system/cpu/cpuidle/":          "",
				"devices/system/cpu/cpu1a/":            "",
				"devices/system/cpu/cpu-1/":            "",
				"devices/system/cpu/cpu+2/":            "",
				"devices/system/cpu/cpu_capacity_all/": "",
			},
			wantCPUs: []CPU{{Number: 0, Online: true, Node: -1}},
			wantSets: CPUSets{Possible: []int{0}, Present: []int{0}, Online: []int{0}},
		},
		{
			name: "numeric order and node links of every kind",
			tree: tree{
				"devices/system/cpu/possible":       "0-15\n",
				"devices/system/cpu/present":        "0-2,10\n",
				"devices/system/cpu/online":         "0,2,10\n",
				"devices/system/cpu/cpu0/node3/":    "",                    // a plain empty directory
				"devices/system/cpu/cpu2/node5":     "-> ../../node/node5", // a dangling link
				"devices/system/cpu/cpu2/online":    "1\n",
				"devices/system/cpu/cpu10/node2":    "-> ../../node/node2",
				"devices/system/cpu/cpu10/node1":    "-> ../../node/node1", // the lowest counts
				"devices/system/cpu/cpu10/online":   "1\n",
				"devices/system/cpu/cpu1/online":    "0\n",
				"devices/system/cpu/cpu1/node":      "-> ../../node", // not nodeM
				"devices/system/cpu/cpu1/nodeX/":    "",              // not nodeM
				"devices/system/cpu/cpu1/topology/": "",
				"devices/system/node/node1/cpulist": "10\n",
			},
			wantCPUs: []CPU{
				{Number: 0, Online: true, Hotpluggable: false, Node: 3},
				{Number: 1, Online: false, Hotpluggable: true, Node: -1},
				{Number: 2, Online: true, Hotpluggable: true, Node: 5},
				{Number: 10, Online: true, Hotpluggable: true, Node: 1},
			},
			wantSets: CPUSets{Possible: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, Present: []int{0, 1, 2, 10}, Online: []int{0, 2, 10}},
		},
		{
			name: "cpu0 offline by the list",
			tree: tree{
				"devices/system/cpu/possible":    "0-1\n",
				"devices/system/cpu/present":     "0-1\n",
				"devices/system/cpu/online":      "1\n",
				"devices/system/cpu/cpu0/":       "",
				"devices/system/cpu/cpu1/online": "1\n",
			},
			wantCPUs: []CPU{{Number: 0, Online: false, Node: -1}, {Number: 1, Online: true, Hotpluggable: true, Node: -1}},
			wantSets: CPUSets{Possible: []int{0, 1}, Present: []int{0, 1}, Online: []int{1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fsys := tt.tree.mustFS(t)
			cpus, err := fsys.CPUs()
			if err != nil {
				t.Fatalf("CPUs: %v", err)
			}
			if diff := cmp.Diff(tt.wantCPUs, cpus); diff != "" {
				t.Errorf("CPUs() mismatch (-want +got):\n%s", diff)
			}
			sets, err := fsys.CPUSets()
			if err != nil {
				t.Fatalf("CPUSets: %v", err)
			}
			if diff := cmp.Diff(tt.wantSets, sets); diff != "" {
				t.Errorf("CPUSets() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCPUErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		tree    tree
		n       int
		wantIs  error  // nil: any error
		wantMsg string // a part of the message
	}{
		{
			name:    "negative number",
			tree:    minimalTree(),
			n:       -1,
			wantMsg: "sysfs: invalid CPU number -1",
		},
		{
			name:    "no such CPU",
			tree:    minimalTree(),
			n:       7,
			wantIs:  fs.ErrNotExist,
			wantMsg: "devices/system/cpu/cpu7: no such file or directory",
		},
		{
			name: "garbage online file",
			tree: func() tree {
				tr := minimalTree()
				tr["devices/system/cpu/cpu1/online"] = "2\n"
				return tr
			}(),
			n:       1,
			wantMsg: `devices/system/cpu/cpu1/online: "2" is not 0 or 1`,
		},
		{
			name: "no online list for a CPU without online file",
			tree: func() tree {
				tr := minimalTree()
				delete(tr, "devices/system/cpu/online")
				return tr
			}(),
			n:       0,
			wantIs:  fs.ErrNotExist,
			wantMsg: "devices/system/cpu/online: no such file or directory",
		},
		{
			name: "cpuN is a file",
			tree: func() tree {
				tr := minimalTree()
				tr["devices/system/cpu/cpu3"] = "1\n"
				return tr
			}(),
			n:       3,
			wantMsg: "devices/system/cpu/cpu3: not a directory",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fsys := tt.tree.mustFS(t)
			c, err := fsys.CPU(tt.n)
			if err == nil {
				t.Fatalf("CPU(%d) = %+v, want an error", tt.n, c)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("CPU(%d) error %q: errors.Is(err, %v) = false, want true", tt.n, err, tt.wantIs)
			}
			if !strings.HasPrefix(err.Error(), "sysfs: ") || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("CPU(%d) error = %q, want it to start with \"sysfs: \" and contain %q", tt.n, err, tt.wantMsg)
			}
		})
	}
}

// TestCPUsErrors checks that CPUs fails, rather than skipping the CPU, when a CPU that still
// exists cannot be read, and that CPUSets needs all three lists.
func TestCPUsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		edit       func(tree)
		wantCPUs   string // part of the CPUs error; "" for no error
		wantCPUSet string // part of the CPUSets error; "" for no error
	}{
		{
			name:       "garbage online file",
			edit:       func(tr tree) { tr["devices/system/cpu/cpu1/online"] = "yes\n" },
			wantCPUs:   `cpu1/online: "yes" is not 0 or 1`,
			wantCPUSet: "",
		},
		{
			name:       "garbage online list",
			edit:       func(tr tree) { tr["devices/system/cpu/online"] = "0-\n" },
			wantCPUs:   `sysfs: parse `,
			wantCPUSet: `devices/system/cpu/online: invalid CPU list "0-": item "0-": missing number`,
		},
		{
			name:       "no present list",
			edit:       func(tr tree) { delete(tr, "devices/system/cpu/present") },
			wantCPUs:   "",
			wantCPUSet: "devices/system/cpu/present: no such file or directory",
		},
		{
			name: "no online list, every CPU has an online file",
			edit: func(tr tree) {
				delete(tr, "devices/system/cpu/online")
				delete(tr, "devices/system/cpu/cpu0/")
				tr["devices/system/cpu/cpu0/online"] = "1\n"
			},
			wantCPUs:   "",
			wantCPUSet: "devices/system/cpu/online: no such file or directory",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := minimalTree()
			tr["devices/system/cpu/cpu1/online"] = "1\n"
			tt.edit(tr)
			fsys := tr.mustFS(t)
			check := func(call string, err error, want string) {
				t.Helper()
				switch {
				case want == "" && err != nil:
					t.Errorf("%s: %v, want no error", call, err)
				case want != "" && err == nil:
					t.Errorf("%s: no error, want one containing %q", call, want)
				case want != "" && !strings.Contains(err.Error(), want):
					t.Errorf("%s error = %q, want it to contain %q", call, err, want)
				}
			}
			_, err := fsys.CPUs()
			check("CPUs()", err, tt.wantCPUs)
			_, err = fsys.CPUSets()
			check("CPUSets()", err, tt.wantCPUSet)
		})
	}
}

// TestCPUsVanished checks that a CPU whose directory is gone by the time it is read, as when a
// hot-remove races the scan, is left out rather than failing the scan.
func TestCPUsVanished(t *testing.T) {
	t.Parallel()
	tr := minimalTree()
	tr["devices/system/cpu/cpu1/online"] = "1\n"
	fsys := tr.mustFS(t)
	got, err := fsys.cpus([]int{0, 1, 2}) // as if cpu2 was listed, then removed
	if err != nil {
		t.Fatalf("cpus: %v", err)
	}
	want := []CPU{{Number: 0, Online: true, Node: -1}, {Number: 1, Online: true, Hotpluggable: true, Node: -1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cpus() mismatch (-want +got):\n%s", diff)
	}
}

// TestCPUOnline: the online file alone says whether a CPU runs; no file, whether the CPU is
// gone or never had one, is fs.ErrNotExist; a value other than 0 or 1 is an error; and the read
// allocates nothing.
func TestCPUOnline(t *testing.T) {
	tr := minimalTree()
	tr["devices/system/cpu/cpu1/online"] = "1\n"
	tr["devices/system/cpu/cpu2/online"] = "0\n"
	tr["devices/system/cpu/cpu3/online"] = "yes\n"
	fsys := tr.mustFS(t)
	for _, c := range []struct {
		n        int
		want     bool
		notExist bool
		fails    bool
	}{
		{n: 1, want: true},
		{n: 2, want: false},
		{n: 0, notExist: true}, // cpu0 has no online file
		{n: 7, notExist: true}, // no cpu7
		{n: 3, fails: true},
		{n: -1, fails: true},
	} {
		got, err := fsys.CPUOnline(c.n)
		switch {
		case c.notExist:
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("CPUOnline(%d): %v, %v; want an error wrapping fs.ErrNotExist", c.n, got, err)
			}
		case c.fails:
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				t.Errorf("CPUOnline(%d): %v, %v; want an error", c.n, got, err)
			}
		case err != nil || got != c.want:
			t.Errorf("CPUOnline(%d): %v, %v; want %v", c.n, got, err, c.want)
		}
	}
	want := 0.0
	if raceEnabled {
		want = 1
	}
	if a := testing.AllocsPerRun(100, func() { fsys.CPUOnline(1) }); a > want {
		t.Errorf("CPUOnline allocates %v times; want %v", a, want)
	}
}

func TestOnlineCPUs(t *testing.T) {
	tr := minimalTree()
	tr["devices/system/cpu/online"] = "0-2,5\n"
	root := tr.mustFS(t)
	o, err := root.OpenOnlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var set CPUSet
	if err := o.Read(&set); err != nil {
		t.Fatal(err)
	}
	for n := range 8 {
		if want := n <= 2 || n == 5; set.Contains(n) != want {
			t.Errorf("CPU %d online: %v; want %v", n, set.Contains(n), want)
		}
	}
	want := 0.0
	if raceEnabled {
		want = 1
	}
	if a := testing.AllocsPerRun(100, func() { o.Read(&set) }); a > want {
		t.Errorf("OnlineCPUs.Read allocates %v times; want %v", a, want)
	}

	// The file held open is read afresh, from its start, as the kernel's is.
	path := filepath.Join(root.Root(), "devices/system/cpu/online")
	if err := os.WriteFile(path, []byte("0-1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := o.Read(&set); err != nil || set.Contains(2) || !set.Contains(1) {
		t.Errorf("a second Read after cpu/online changed to 0-1: %v, CPU 1 %v, CPU 2 %v", err, set.Contains(1), set.Contains(2))
	}
	if err := os.WriteFile(path, []byte("0-2,z\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := o.Read(&set); err == nil || !strings.Contains(err.Error(), "parse") {
		t.Errorf("a broken cpu/online: %v; want an error saying it cannot be parsed", err)
	}
	if set.Contains(0) {
		t.Error("a failed read left CPU 0 in the set")
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Read(&set); err == nil {
		t.Error("Read after Close succeeded")
	}
	delete(tr, "devices/system/cpu/online")
	if _, err := tr.mustFS(t).OpenOnlineCPUs(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no cpu/online: %v; want an error wrapping fs.ErrNotExist", err)
	}
}
