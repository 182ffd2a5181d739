package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/online"
)

// recorder is the YAML of an exec callback for processors that appends "ID EVENT" to out.
func recorder(name, out string) string {
	return fmt.Sprintf("  - {name: %s, class: processor, exec: {command: [/bin/sh, -c, %q]}}\n", name,
		fmt.Sprintf(`echo "$HOTPLUG_ID $HOTPLUG_EVENT" >> %s`, out))
}

// waitLines waits until the file at p has at least n lines, and returns them.
func waitLines(t *testing.T, p string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(p)
		ls := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(b) == 0 {
			ls = nil
		}
		if len(ls) >= n {
			return ls
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d lines after 20 s; want %d:\n%s", p, len(ls), n, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReload: a reload while notifications flow leaves an unchanged callback every one of them,
// once, in order; stops a removed one; starts an added one; applies the online policy; and a
// configuration that does not parse is refused while the running one stays.
func TestReload(t *testing.T) {
	root := fixture(t)
	dir := t.TempDir()
	keep, drop, added := filepath.Join(dir, "keep"), filepath.Join(dir, "drop"), filepath.Join(dir, "added")
	cfgPath := filepath.Join(dir, "config.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("log_notifications: false\ncallbacks:\n" + recorder("keep", keep) + recorder("drop", drop))
	load := func() (*config.Config, error) { return config.Load(cfgPath) }
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	a, src, _, _ := runAgent(t, Options{SysfsPath: root, StatePath: filepath.Join(dir, "state.json"), Config: cfg, LoadConfig: load})

	const link = "devices/system/cpu/cpu1"
	seq := uint64(100)
	cycle := func() { // cpu1 offline then online, as the kernel does it
		for _, s := range []struct{ v, action string }{{"0", "offline"}, {"1", "online"}} {
			// As the kernel changes an attribute: a read sees the old value or the new one,
			// never the file half written.
			tmp := filepath.Join(root, link, ".online")
			if err := os.WriteFile(tmp, []byte(s.v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(root, link, "online")); err != nil {
				t.Fatal(err)
			}
			seq++
			src.send(t, s.action, "/"+link, "cpu", seq)
		}
	}
	cycle()
	waitLines(t, drop, 2)

	// Reload in the middle of 20 cycles: keep unchanged, drop removed, added new, the policy on.
	write("log_notifications: false\nonline: {cpu: online}\ncallbacks:\n" + recorder("keep", keep) + recorder("added", added))
	reloaded := make(chan error, 1)
	go func() {
		time.Sleep(2 * time.Millisecond)
		reloaded <- a.Reload(context.Background())
	}()
	for range 20 {
		cycle()
	}
	if err := <-reloaded; err != nil {
		t.Fatalf("Reload: %v", err)
	}
	cycle() // after the reload for sure
	got := waitLines(t, keep, 2*22)
	if len(got) != 2*22 {
		t.Fatalf("keep, unchanged, got %d notifications for 22 cycles; want 44, each once:\n%s", len(got), strings.Join(got, "\n"))
	}
	var last uint64
	for i, l := range got {
		id, event, _ := strings.Cut(l, " ")
		if want := []string{"removal", "arrival"}[i%2]; event != want {
			t.Errorf("keep's notification %d is %q; want a %s (they alternate)", i, l, want)
		}
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil || n <= last {
			t.Errorf("keep's notification %d has ID %q after %d; want increasing IDs, none twice", i, id, last)
		}
		last = n
	}
	dropped := len(waitLines(t, drop, 2))
	cycle()
	all := waitLines(t, keep, 2*23)
	if n := len(waitLines(t, drop, 2)); n != dropped {
		t.Errorf("drop, removed by the reload, got %d more notifications after it", n-dropped)
	}
	// added, registered during the cycles with no existing interfaces, gets what keep got from
	// some point on: the same notifications, the same IDs, none missing.
	newLines := waitLines(t, added, 4) // at least the last two cycles
	for deadline := time.Now().Add(5 * time.Second); len(newLines) < len(all) && !slices.Equal(newLines, all[len(all)-len(newLines):]); {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
		newLines = waitLines(t, added, 4)
	}
	if len(newLines) > len(all) || !slices.Equal(newLines, all[len(all)-len(newLines):]) {
		t.Errorf("added got\n%s\nwant the last %d of keep's:\n%s", strings.Join(newLines, "\n"), len(newLines), strings.Join(all, "\n"))
	}
	if p := a.onliner.Policy(); p.CPU != online.Online {
		t.Errorf("online policy after the reload: cpu %q; want online", p.CPU)
	}

	// A configuration that does not parse: refused; the running one stays.
	write("callbacks: [\n")
	if err := a.Reload(context.Background()); err == nil {
		t.Fatal("Reload of a file that does not parse succeeded")
	}
	cycle()
	waitLines(t, keep, 2*24)
	waitLines(t, added, len(newLines)+2)
	if p := a.onliner.Policy(); p.CPU != online.Online {
		t.Errorf("online policy after a refused reload: cpu %q; want online still", p.CPU)
	}
}

// TestReloadLetsRemovedCallbackFinish: a reload that removes an exec callback while its command
// runs lets the command finish (the shutdown grace, as the README says), instead of killing it,
// and returns once it has; the callback gets nothing after the reload.
func TestReloadLetsRemovedCallbackFinish(t *testing.T) {
	root := fixture(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "slow")
	cfgPath := filepath.Join(dir, "config.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("log_notifications: false\ncallbacks:\n" + fmt.Sprintf("  - {name: slow, class: processor, exec: {command: [/bin/sh, -c, %q]}}\n",
		fmt.Sprintf(`echo "$HOTPLUG_ID start" >> %[1]s; sleep 0.5; echo "$HOTPLUG_ID done" >> %[1]s`, out)))
	load := func() (*config.Config, error) { return config.Load(cfgPath) }
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	a, src, _, _ := runAgent(t, Options{SysfsPath: root, Config: cfg, LoadConfig: load, ShutdownGrace: 20 * time.Second})

	const link = "devices/system/cpu/cpu1"
	setOnline := func(v string) {
		t.Helper()
		tmp := filepath.Join(root, link, ".online")
		if err := os.WriteFile(tmp, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(root, link, "online")); err != nil {
			t.Fatal(err)
		}
	}
	setOnline("0")
	src.send(t, "offline", "/"+link, "cpu", 200)
	started := waitLines(t, out, 1)
	write("log_notifications: false\ncallbacks: []\n")
	if err := a.Reload(context.Background()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	// Reload has returned: the command it removed ran to its end.
	b, _ := os.ReadFile(out)
	id, _, _ := strings.Cut(started[0], " ")
	if want := started[0] + "\n" + id + " done\n"; string(b) != want {
		t.Fatalf("the removed callback's output when Reload returned:\n%s\nwant:\n%s(its command finished, not killed)", b, want)
	}
	setOnline("1")
	src.send(t, "online", "/"+link, "cpu", 201)
	time.Sleep(200 * time.Millisecond)
	if b2, _ := os.ReadFile(out); string(b2) != string(b) {
		t.Errorf("the removed callback ran after the reload:\n%s", b2)
	}
}

// TestReloadUndoneWhenACallbackCannotBeMade: a valid configuration whose changed cpuset callback
// cannot be made (its root is not there) is refused as a whole: the callback stays registered
// with its running definition and what it remembers (a CPU owed to its cgroup), a callback the
// file added is not left registered, the online policy and log_notifications stay, and the
// typo fixed, the callback still owes the CPU.
func TestReloadUndoneWhenACallbackCannotBeMade(t *testing.T) {
	root := fixture(t)
	dir := t.TempDir()
	cg := filepath.Join(dir, "cg")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(cg, "w"), 0o755))
	must(os.WriteFile(filepath.Join(cg, "cgroup.procs"), nil, 0o644))
	must(os.WriteFile(filepath.Join(cg, "w", "cpuset.cpus"), []byte("0-1\n"), 0o644))
	cfgPath := filepath.Join(dir, "config.yaml")
	cpuset := func(root string) string {
		return fmt.Sprintf("  - {name: ws, class: processor, cpuset: {root: %s, cgroups: [w], add: none}}\n", root)
	}
	write := func(s string) { t.Helper(); must(os.WriteFile(cfgPath, []byte(s), 0o600)) }
	write("log_notifications: false\ncallbacks:\n" + cpuset(cg))
	load := func() (*config.Config, error) { return config.Load(cfgPath) }
	cfg, err := load()
	must(err)
	a, src, _, _ := runAgent(t, Options{SysfsPath: root, StatePath: filepath.Join(dir, "state.json"), Config: cfg, LoadConfig: load})

	// cpu1 goes offline, and the kernel takes it from w: ws owes it to w.
	link := "devices/system/cpu/cpu1"
	must(os.WriteFile(filepath.Join(root, link, "online"), []byte("0\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "devices/system/cpu/online"), []byte("0\n"), 0o644))
	must(os.WriteFile(filepath.Join(cg, "w", "cpuset.cpus"), []byte("0\n"), 0o644))
	src.send(t, "offline", "/"+link, "cpu", 500)
	owed := func() int { return len(a.cpusetMemories()["ws"].Owed["w"]) }
	for deadline := time.Now().Add(10 * time.Second); owed() != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("cpu1 never owed to w: %+v", a.cpusetMemories())
		}
	}

	// A typo in the root, a callback added, the log and the policy changed: valid YAML.
	write("log_notifications: true\nonline: {cpu: online}\ncallbacks:\n" + cpuset("/nonexistent/cgroup") + recorder("added", filepath.Join(dir, "added")))
	err = a.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "ws") {
		t.Fatalf("Reload with a cpuset root that is not there: %v; want an error naming the callback", err)
	}
	if c, ok := a.configured["ws"]; !ok || c.def.Cpuset == nil || c.def.Cpuset.Root != cg {
		t.Errorf("after the refused reload, ws is registered: %v, with %+v; want its running definition (root %s)", ok, c.def.Cpuset, cg)
	}
	if _, ok := a.configured["added"]; ok {
		t.Error("after the refused reload, the callback it added is registered")
	}
	if a.logEntry != nil {
		t.Error("after the refused reload, the log callback it turned on is registered")
	}
	if p := a.onliner.Policy(); p.CPU == online.Online {
		t.Errorf("after the refused reload, the online policy is the file's (cpu %q)", p.CPU)
	}
	if n := owed(); n != 1 {
		t.Errorf("after the refused reload, ws owes %d CPUs to w (%+v); want cpu1 still", n, a.cpusetMemories())
	}

	// The typo fixed: ws is as it runs, untouched, and still owes cpu1; the added callback comes.
	write("log_notifications: false\ncallbacks:\n" + cpuset(cg) + recorder("added", filepath.Join(dir, "added")))
	if err := a.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := owed(); n != 1 {
		t.Errorf("after the fixed reload, ws owes %d CPUs to w (%+v); want cpu1: it would never be given back", n, a.cpusetMemories())
	}
	if _, ok := a.configured["added"]; !ok {
		t.Error("after the fixed reload, the added callback is not registered")
	}
}
