package state

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// cpuTree returns the root of an empty sysfs tree in a temporary directory, its cpu directory,
// and a function that writes a file below that directory (content and a newline).
func cpuTree(t *testing.T) (root, cpu string, write func(rel, content string)) {
	root = t.TempDir()
	cpu = filepath.Join(root, "devices/system/cpu")
	return root, cpu, func(rel, content string) {
		t.Helper()
		p := filepath.Join(cpu, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// scanned returns a tracker that has scanned the sysfs tree at root, and the reasons of what it
// rejects from then on.
func scanned(t *testing.T, root string) (*Tracker, *[]string) {
	fsys, err := sysfs.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	tr := New(fsys)
	t.Cleanup(tr.Close)
	rejected := new([]string)
	tr.OnReject(func(r string) { *rejected = append(*rejected, r) })
	if _, err := tr.Scan(); err != nil {
		t.Fatal(err)
	}
	return tr, rejected
}

// TestConfirmOverSysfs runs the tracker over a sysfs tree (files in a temporary directory, as the
// kernel lays them out), where a transition of a CPU it has seen is confirmed by the CPU's online
// file alone: what the file says decides, and a CPU removed and added again is read whole, so
// its arrival carries its new node.
func TestConfirmOverSysfs(t *testing.T) {
	root, cpu, write := cpuTree(t)
	link := func(rel, target string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(cpu, rel)); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"possible", "present", "online"} {
		write(f, "0-1")
	}
	if err := os.MkdirAll(filepath.Join(cpu, "cpu0"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("cpu1/online", "1")
	link("cpu1/node0", "../../node/node0")
	tr, rejected := scanned(t, root)
	seq := uint64(100)
	handle := func(action string) []notify.Notification {
		t.Helper()
		seq++
		return tr.Handle(cpuEv(t, action, 1, seq)).Notes
	}
	expect := func(step string, got []notify.Notification, want string, node int) {
		t.Helper()
		s := strings.Join(summary(got), ", ")
		if s != want || (want != "" && got[0].Interface.Node != node) {
			t.Errorf("%s: %q; want %q", step, s, want)
			if len(got) > 0 && got[0].Interface.Node != node {
				t.Errorf("%s: node %d; want %d", step, got[0].Interface.Node, node)
			}
		}
	}
	const cpu1 = "/sys/devices/system/cpu/cpu1"
	write("cpu1/online", "0")
	expect("offline", handle("offline"), "removal "+cpu1, 0)
	expect("an online sysfs does not show", handle("online"), "", 0)
	write("cpu1/online", "1")
	expect("online", handle("online"), "arrival "+cpu1, 0)

	// Hot-removed (its remove read while the kernel still deletes it), and added again on node 1.
	write("cpu1/online", "0")
	expect("offline before the removal", handle("offline"), "removal "+cpu1, 0)
	expect("remove", handle("remove"), "", 0)
	if err := os.RemoveAll(filepath.Join(cpu, "cpu1")); err != nil {
		t.Fatal(err)
	}
	write("cpu1/online", "0")
	link("cpu1/node1", "../../node/node1")
	expect("add", handle("add"), "", 0)
	write("cpu1/online", "1")
	expect("online on node 1", handle("online"), "arrival "+cpu1, 1)

	// Gone without a remove read yet: the offline is confirmed by its absence.
	if err := os.RemoveAll(filepath.Join(cpu, "cpu1")); err != nil {
		t.Fatal(err)
	}
	expect("offline of a CPU gone", handle("offline"), "removal "+cpu1, 1)
	if len(*rejected) != 1 {
		t.Errorf("rejections %q; want one (the online sysfs did not show)", *rejected)
	}
}

// In a batch, CPU transitions are confirmed against one read of cpu/online made after every
// uevent of the batch was sent: a transition undone later in the batch is held and confirmed by
// its reverse, as with a late read; when cpu/online cannot be read, each CPU's file is.
func TestBatchConfirmsFromCPUOnline(t *testing.T) {
	root, _, write := cpuTree(t)
	for _, f := range []string{"possible", "present", "online"} {
		write(f, "0-3")
	}
	write("cpu0/uevent", "")
	for n := 1; n <= 3; n++ {
		write("cpu"+strconv.Itoa(n)+"/online", "1")
	}
	tr, rejected := scanned(t, root)
	seq := uint64(100)
	batch := func(evs ...string) string {
		t.Helper()
		tr.BeginBatch()
		var got []string
		for _, e := range evs {
			action, n, _ := strings.Cut(e, " ")
			num, _ := strconv.Atoi(n)
			seq++
			got = append(got, summary(tr.Handle(cpuEv(t, action, num, seq)).Notes)...)
		}
		got = append(got, summary(tr.EndBatch())...)
		return strings.Join(got, ", ")
	}
	const cpu1, cpu2, cpu3 = "/sys/devices/system/cpu/cpu1", "/sys/devices/system/cpu/cpu2", "/sys/devices/system/cpu/cpu3"

	// CPUs 1 and 2 go offline and 2 comes back before the agent reads any of it.
	write("online", "0,2-3")
	write("cpu1/online", "0")
	want := "removal " + cpu1 + ", removal " + cpu2 + ", arrival " + cpu2
	if got := batch("offline 1", "offline 2", "online 2"); got != want {
		t.Errorf("batch: %q; want %q", got, want)
	}

	// Which file a batch reads: cpu/online, not cpu3/online (left showing 1 here, which a
	// kernel does only part-way through a transition).
	write("online", "0,2")
	if got := batch("offline 3"); got != "removal "+cpu3 {
		t.Errorf("a batch's offline of CPU 3: %q; want its removal, from cpu/online", got)
	}
	// Outside a batch, cpu3/online is read: the online is believed, as that file shows.
	if got := strings.Join(summary(tr.Handle(cpuEv(t, "online", 3, seq+1)).Notes), ", "); got != "arrival "+cpu3 {
		t.Errorf("online of CPU 3 outside a batch: %q; want its arrival, from cpu3/online", got)
	}
	seq++

	// A cpu/online that cannot be parsed: each CPU's own file decides.
	write("online", "0-")
	write("cpu1/online", "1")
	if got := batch("online 1"); got != "arrival "+cpu1 {
		t.Errorf("a batch's online of CPU 1 with cpu/online unreadable: %q; want its arrival, from cpu1/online", got)
	}
	// The next batch reads cpu/online again (it opens it anew: the failed read closed it), as it
	// does after Close. cpu1/online is left showing 1, then 0, against cpu/online.
	write("online", "0,2")
	if got := batch("offline 1"); got != "removal "+cpu1 {
		t.Errorf("the batch after cpu/online was mended: %q; want the removal of CPU 1, from cpu/online", got)
	}
	tr.Close()
	write("online", "0-2")
	write("cpu1/online", "0")
	if got := batch("online 1"); got != "arrival "+cpu1 {
		t.Errorf("a batch after Close: %q; want the arrival of CPU 1, from cpu/online", got)
	}
	// cpu/online (the CPU mask) shows CPU 1 online part-way through an online that will fail,
	// while cpu1/online, which the offline uevent answers to, shows it offline: the batch's
	// offline is held against cpu/online, then confirmed from cpu1/online at the batch's end,
	// not held for a reverse uevent that never comes.
	write("cpu1/online", "0")
	if got := batch("offline 1"); got != "removal "+cpu1 {
		t.Errorf("a batch's offline of CPU 1 that cpu/online contradicts: %q; want its removal, from cpu1/online", got)
	}
	if len(*rejected) != 0 {
		t.Errorf("rejections %q; want none", *rejected)
	}
}

// TestHotAddedCPUNodeLinkedAfterItsAdd: the kernel sends a hot-added CPU's add from
// device_register and links cpuN/nodeM afterwards (register_cpu_under_node); an add handled
// before the link exists must not leave node -1 for the CPU's arrival, which sysfs gives node 1.
func TestHotAddedCPUNodeLinkedAfterItsAdd(t *testing.T) {
	root, cpu, write := cpuTree(t)
	for _, f := range []string{"possible", "present", "online"} {
		write(f, "0")
	}
	write("cpu0/uevent", "")
	tr, _ := scanned(t, root)

	write("possible", "0-1")
	write("present", "0-1")
	write("cpu1/online", "0") // registered, not yet linked to its node
	if out := tr.Handle(cpuEv(t, "add", 1, 10)); !out.HotAdd {
		t.Fatal("no hot-add")
	}
	// register_cpu_under_node runs; the policy onlines the CPU.
	if err := os.Symlink("../../node/node1", filepath.Join(cpu, "cpu1/node1")); err != nil {
		t.Fatal(err)
	}
	write("cpu1/online", "1")
	write("online", "0-1")
	tr.BeginBatch()
	out := tr.Handle(cpuEv(t, "online", 1, 11))
	tr.EndBatch()
	if len(out.Notes) != 1 {
		t.Fatalf("notes %v", summary(out.Notes))
	}
	if got := out.Notes[0].Interface.Node; got != 1 {
		t.Errorf("arrival of hot-added cpu1: node %d; sysfs says node 1", got)
	}
}
