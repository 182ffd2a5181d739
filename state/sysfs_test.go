package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// TestConfirmOverSysfs runs the tracker over a sysfs tree (files in a temporary directory, as the
// kernel lays them out), where a transition of a CPU it has seen is confirmed by the CPU's online
// file alone: what the file says decides, and a CPU removed and added again is read whole, so
// its arrival carries its new node.
func TestConfirmOverSysfs(t *testing.T) {
	root := t.TempDir()
	cpu := filepath.Join(root, "devices/system/cpu")
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(cpu, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
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
	fsys, err := sysfs.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	tr := New(fsys)
	var rejected []string
	tr.OnReject(func(r string) { rejected = append(rejected, r) })
	if _, err := tr.Scan(); err != nil {
		t.Fatal(err)
	}
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
	if len(rejected) != 1 {
		t.Errorf("rejections %q; want one (the online sysfs did not show)", rejected)
	}
}
