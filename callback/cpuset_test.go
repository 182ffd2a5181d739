package callback

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// cpusetTree is a fixture: a cgroup mount and a sysfs with the online CPUs and nodes.
type cpusetTree struct {
	t         *testing.T
	root, sys string
	writes    []string // pattern/result, as observed
	saveAsked int
}

func newCpusetTree(t *testing.T, online string, cgroups map[string]string) *cpusetTree {
	tr := &cpusetTree{t: t, root: t.TempDir(), sys: t.TempDir()}
	os.WriteFile(filepath.Join(tr.root, "cgroup.procs"), nil, 0o644)
	os.MkdirAll(filepath.Join(tr.sys, "devices/system/cpu"), 0o755)
	os.MkdirAll(filepath.Join(tr.sys, "devices/system/node"), 0o755)
	tr.setOnline(online)
	for rel, cpus := range cgroups {
		tr.set(rel, cpus)
	}
	return tr
}

func (tr *cpusetTree) setOnline(cpus string) {
	os.WriteFile(filepath.Join(tr.sys, "devices/system/cpu/online"), []byte(cpus+"\n"), 0o644)
}

func (tr *cpusetTree) set(rel, cpus string) {
	dir := filepath.Join(tr.root, rel)
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "cpuset.cpus"), []byte(cpus+"\n"), 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *cpusetTree) get(rel string) string {
	b, err := os.ReadFile(filepath.Join(tr.root, rel, "cpuset.cpus"))
	if err != nil {
		tr.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (tr *cpusetTree) new(add string, restore *CpusetMemory, patterns ...string) *Cpuset {
	tr.t.Helper()
	c, err := NewCpuset(CpusetOptions{Name: "test", Root: tr.root, Cgroups: patterns, Add: add, SysfsPath: tr.sys,
		Observe:  func(p, r string) { tr.writes = append(tr.writes, p+"/"+r) },
		OnChange: func() { tr.saveAsked++ }, Restore: restore})
	if err != nil {
		tr.t.Fatal(err)
	}
	return c
}

func cpusetNote(event string, cpu int) notify.Notification {
	ev := notify.GUIDDeviceInterfaceArrival
	if event == "removal" {
		ev = notify.GUIDDeviceInterfaceRemoval
	}
	i := notify.Interface{ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: "/sys/devices/system/cpu/cpu" + strconv.Itoa(cpu), Number: cpu, Node: 0}
	return notify.NewNotification(ev, i, 1, time.Now(), notify.CauseUevent)
}

// deliver gives c the notification after the kernel's change: online is the online CPUs after
// it, kernel the cpusets the kernel changed.
func (tr *cpusetTree) deliver(c *Cpuset, n notify.Notification, online string, kernel map[string]string) error {
	tr.setOnline(online)
	for rel, v := range kernel {
		tr.set(rel, v)
	}
	return c.Callback()(context.Background(), n, nil)
}

func TestCpusetRestoresWhatTheKernelTook(t *testing.T) {
	tr := newCpusetTree(t, "0-3", map[string]string{"a": "0-3", "a/b": "2-3", "a/c": "0-3", "free": "0-3"})
	c := tr.new("", nil, "a", "a/b")
	// cpu3 goes: the kernel (cgroup v1) takes it from every cpuset.
	if err := tr.deliver(c, cpusetNote("removal", 3), "0-2", map[string]string{"a": "0-2", "a/b": "2", "a/c": "0-2", "free": "0-2"}); err != nil {
		t.Fatal(err)
	}
	if err := tr.deliver(c, cpusetNote("arrival", 3), "0-3", nil); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{"a": tr.get("a"), "a/b": tr.get("a/b"), "a/c": tr.get("a/c"), "free": tr.get("free")}
	want := map[string]string{"a": "0-3", "a/b": "2-3", "a/c": "0-2", "free": "0-2"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("cpusets after the arrival (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"a/ok", "a/b/ok"}, tr.writes); d != "" {
		t.Errorf("writes observed, parents first (-want +got):\n%s", d)
	}
	// An administrator's change is not undone: cpu1 taken out of a/b while online stays out.
	tr.set("a/b", "2-3")
	tr.writes = nil
	tr.deliver(c, cpusetNote("removal", 1), "0,2-3", map[string]string{"a": "0,2-3"})
	tr.deliver(c, cpusetNote("arrival", 1), "0-3", nil)
	if got := tr.get("a/b"); got != "2-3" {
		t.Errorf("a/b = %q after cpu1 came back; want 2-3 (it never held cpu1)", got)
	}
	if tr.saveAsked == 0 {
		t.Error("OnChange was never called")
	}
}

func TestCpusetNewCPU(t *testing.T) {
	for _, tt := range []struct {
		add  string
		want map[string]string
	}{
		{CpusetAddSpanning, map[string]string{"x/wide": "0-2", "x/narrow": "0", "x/inherits": "", "free": "0-1"}},
		{CpusetAddAll, map[string]string{"x/wide": "0-2", "x/narrow": "0,2", "x/inherits": "", "free": "0-1"}},
		{CpusetAddNone, map[string]string{"x/wide": "0-1", "x/narrow": "0", "x/inherits": "", "free": "0-1"}},
	} {
		t.Run(tt.add, func(t *testing.T) {
			tr := newCpusetTree(t, "0-1", map[string]string{"x/wide": "0-1", "x/narrow": "0", "x/inherits": "", "free": "0-1"})
			c := tr.new(tt.add, nil, "x/*")
			if err := tr.deliver(c, cpusetNote("arrival", 2), "0-2", nil); err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for rel := range tt.want {
				got[rel] = tr.get(rel)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("cpusets after cpu2 was hot-added (-want +got):\n%s", d)
			}
		})
	}
}

func TestCpusetRemembersAcrossRestarts(t *testing.T) {
	tr := newCpusetTree(t, "0-1", map[string]string{"w": "0-1"})
	c := tr.new("", nil, "w")
	tr.deliver(c, cpusetNote("removal", 1), "0", map[string]string{"w": "0"})
	m := c.Memory()
	if d := cmp.Diff(map[string][]int{"w": {1}}, m.Owed); d != "" {
		t.Fatalf("Memory().Owed (-want +got):\n%s", d)
	}
	// A new run from what the last remembered: a CPU it knew is not new, and w gets it back.
	c2 := tr.new(CpusetAddNone, &m, "w")
	if err := tr.deliver(c2, cpusetNote("arrival", 1), "0-1", nil); err != nil {
		t.Fatal(err)
	}
	if got := tr.get("w"); got != "0-1" {
		t.Errorf("w = %q; want 0-1, given back by the next run", got)
	}
}

func TestCgroupRoot(t *testing.T) {
	mi := filepath.Join(t.TempDir(), "mountinfo")
	for _, tt := range []struct{ name, lines, want string }{
		{"v1 cpuset first", "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n31 25 0:27 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n", "/sys/fs/cgroup/cpuset"},
		{"v2 only", "30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n", "/sys/fs/cgroup"},
		{"none", "22 1 0:20 / /proc rw - proc proc rw\n", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			os.WriteFile(mi, []byte(tt.lines), 0o644)
			got, err := CgroupRoot(mi)
			if got != tt.want || (tt.want == "") != (err != nil) {
				t.Errorf("CgroupRoot = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestCpusetMemoryNode(t *testing.T) {
	tr := newCpusetTree(t, "0-1", nil)
	hasMemory := filepath.Join(tr.sys, "devices/system/node/has_memory")
	os.WriteFile(hasMemory, []byte("0\n"), 0o644)
	for rel, mems := range map[string]string{"w/all": "0", "w/none": "", "free": "0"} {
		os.MkdirAll(filepath.Join(tr.root, rel), 0o755)
		os.WriteFile(filepath.Join(tr.root, rel, "cpuset.mems"), []byte(mems+"\n"), 0o644)
	}
	c, err := NewCpuset(CpusetOptions{Name: "mem", Root: tr.root, Cgroups: []string{"w/*"}, Memory: true, SysfsPath: tr.sys})
	if err != nil {
		t.Fatal(err)
	}
	block := func(event string, n, node int) notify.Notification {
		ev := notify.GUIDDeviceInterfaceArrival
		if event == "removal" {
			ev = notify.GUIDDeviceInterfaceRemoval
		}
		i := notify.Interface{ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: "/sys/devices/system/memory/memory" + strconv.Itoa(n), Number: n, Node: node}
		return notify.NewNotification(ev, i, 1, time.Now(), notify.CauseUevent)
	}
	// Memory hot-added into node 1, which had none (a CPU-less node).
	os.WriteFile(hasMemory, []byte("0-1\n"), 0o644)
	if err := c.Callback()(context.Background(), block("arrival", 40, 1), nil); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, rel := range []string{"w/all", "w/none", "free"} {
		b, _ := os.ReadFile(filepath.Join(tr.root, rel, "cpuset.mems"))
		got[rel] = strings.TrimSpace(string(b))
	}
	if d := cmp.Diff(map[string]string{"w/all": "0-1", "w/none": "", "free": "0"}, got); d != "" {
		t.Errorf("cpuset.mems after node 1 got memory (-want +got):\n%s", d)
	}
	// A second block of node 1 changes nothing.
	if err := c.Callback()(context.Background(), block("arrival", 41, 1), nil); err != nil {
		t.Fatal(err)
	}
	if m := c.Memory(); m.Resource != "mems" || !cmp.Equal(m.Known, []int{0, 1}) {
		t.Errorf("Memory() = %+v; want mems, known 0-1", m)
	}
}

// FuzzCgroupRoot: the mountinfo parser never panics, and what it finds is an error or a mount
// point of a cgroup line of the file.
func FuzzCgroupRoot(f *testing.F) {
	f.Add("31 25 0:27 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n")
	f.Add("30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")
	f.Add("1 2 3 - \n - - -\n")
	mi := filepath.Join(f.TempDir(), "mountinfo")
	f.Fuzz(func(t *testing.T, s string) {
		if err := os.WriteFile(mi, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		root, err := CgroupRoot(mi)
		if (root == "") != (err != nil) {
			t.Fatalf("CgroupRoot = %q, %v: want a root or an error", root, err)
		}
		if root != "" && !strings.Contains(strings.ReplaceAll(s, `\040`, " "), root) {
			t.Fatalf("CgroupRoot = %q, not in the file", root)
		}
	})
}
