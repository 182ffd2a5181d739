//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/callback"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// cpusetV1 is where this machine mounts the cgroup v1 hierarchy with the cpuset controller.
const cpusetV1 = "/sys/fs/cgroup/cpuset"

// readList reads a kernel list file (cpuset.cpus, the online CPUs).
func readList(t *testing.T, p string) []int {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	l, err := sysfs.ParseCPUList(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return l
}

// makeCpuset creates the cgroup v1 cpuset rel under cpusetV1 with cpus and mems, removed at the
// end of the test.
func makeCpuset(t *testing.T, rel, cpus, mems string) string {
	t.Helper()
	dir := filepath.Join(cpusetV1, rel)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove cgroup %s: %v", dir, err)
		}
	})
	for file, v := range map[string]string{"cpuset.mems": mems, "cpuset.cpus": cpus} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(v), 0); err != nil {
			t.Fatalf("write %s to %s/%s: %v", v, dir, file, err)
		}
	}
	return dir
}

// waitCpus waits until the cpuset at dir lists want, and returns how long that took.
func waitCpus(t *testing.T, dir, want, what string) time.Duration {
	t.Helper()
	start := time.Now()
	for deadline := start.Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
		got := sysfs.FormatCPUList(readList(t, filepath.Join(dir, "cpuset.cpus")))
		if got == want {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s/cpuset.cpus is %q after 20 s; want %q", what, dir, got, want)
		}
	}
}

var widenedRE = regexp.MustCompile(`msg="cpuset callback: cpuset widened" .*cgroup=(\S+) .*since_arrival=(\S+)`)

// TestIntegrationCpusetRestore is the cpuset callback on this machine's cgroup v1 hierarchy: a
// named child cpuset that held every CPU loses one that goes offline (the kernel takes it) and
// gets it back when it comes online, also when the agent was restarted in between; a cpuset the
// configuration does not name stays as the kernel left it. The writes are on /metrics.
func TestIntegrationCpusetRestore(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	if root, err := callback.CgroupRoot("/proc/self/mountinfo"); err != nil || root != cpusetV1 {
		testenv.Unavailable(t, "needs the cgroup v1 cpuset hierarchy at %s (found %q, %v)", cpusetV1, root, err)
	}
	testenv.LockCPUs(t)
	all := sysfs.FormatCPUList(readList(t, "/sys/devices/system/cpu/online"))
	without := sysfs.FormatCPUList(func() []int {
		var l []int
		for _, n := range readList(t, "/sys/devices/system/cpu/online") {
			if n != cpu {
				l = append(l, n)
			}
		}
		return l
	}())
	mems := sysfs.FormatCPUList(readList(t, filepath.Join(cpusetV1, "cpuset.mems")))
	base := fmt.Sprintf("hotplug-agent-test-%d", os.Getpid())
	makeCpuset(t, base, all, mems)
	named := makeCpuset(t, base+"/named", all, mems)
	other := makeCpuset(t, base+"/other", all, mems)

	dir := t.TempDir()
	cfg, statePath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "state.json")
	writeConfig := func(extra string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`log_notifications: false
callbacks:
  - name: workloads
    class: processor
    cpuset:
      root: %s
      cgroups: [%s, %s/named]
%s`, cpusetV1, base, base, extra)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("")
	sample := func(pattern, result string) string {
		return fmt.Sprintf(`hotplug_agent_cpuset_writes_total{callback="workloads",cgroup=%q,result=%q}`, pattern, result)
	}
	check := func(a *agentProc, round string) {
		t.Helper()
		testenv.SetCPUOnline(t, cpu, true)
		took := waitCpus(t, named, all, round+": the named cpuset")
		t.Logf("%s: %s/cpuset.cpus back to %s %v after cpu%d's online write", round, named, all, took, cpu)
		// The callback writes the parent, then the child, in one go: by now it is done.
		if got := sysfs.FormatCPUList(readList(t, filepath.Join(other, "cpuset.cpus"))); got != without {
			t.Errorf("%s: the cpuset not named, %s, has %q; want %q, as the kernel left it", round, other, got, without)
		}
		for _, m := range widenedRE.FindAllStringSubmatch(a.logs.String(), -1) {
			t.Logf("%s: agent log: %s widened %s after the arrival was read", round, m[1], m[2])
		}
		exp := a.get(t, "/metrics")
		for _, p := range []string{base, base + "/named"} {
			if v := metric(t, exp, sample(p, "ok")); v != 1 {
				t.Errorf("%s: %s = %v; want 1", round, sample(p, "ok"), v)
			}
			if v := metric(t, exp, sample(p, "error")); v != 0 {
				t.Errorf("%s: %s = %v; want 0", round, sample(p, "error"), v)
			}
		}
	}
	offline := func(round string) {
		t.Helper()
		testenv.SetCPUOnline(t, cpu, false)
		waitCpus(t, named, without, round+": the kernel takes the offline CPU from the named cpuset")
	}

	a := startAgent(t, "--config.file="+cfg, "--path.state="+statePath)
	offline("live")
	check(a, "live")

	owed := func(round string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			b, _ := os.ReadFile(statePath)
			if strings.Contains(string(b), fmt.Sprintf(`"owed": "%d"`, cpu)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the state file does not say within 20 s that cpu%d is owed:\n%s", round, cpu, b)
			}
		}
	}
	// The agent learns of the loss, is stopped, and a new one gives the CPU back.
	offline("restart")
	owed("restart")
	a.stop(t)
	sock := filepath.Join(dir, "control.sock")
	a = startAgent(t, "--config.file="+cfg, "--path.state="+statePath, "--control.socket="+sock)
	check(a, "restart")

	// The callback's definition changes by a reload while the CPU is away: the new one gives it
	// back all the same.
	offline("reload")
	owed("reload")
	writeConfig("      scan_interval: 500ms\n")
	if out, errOut, code := ctl(t, "reload", "--control.socket="+sock); code != 0 {
		t.Fatalf("hotplug-agent reload: exit %d, %q, %q", code, out, errOut)
	}
	online := time.Now()
	testenv.SetCPUOnline(t, cpu, true)
	waitCpus(t, named, all, "reload: the named cpuset")
	t.Logf("reload: %s back to %s %v after the online write", named, all, time.Since(online))
	if got := sysfs.FormatCPUList(readList(t, filepath.Join(other, "cpuset.cpus"))); got != without {
		t.Errorf("reload: the cpuset not named has %q; want %q", got, without)
	}
	a.stop(t)
}
