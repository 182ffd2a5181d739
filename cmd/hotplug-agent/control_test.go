//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// ctl runs `hotplug-agent <args...>` and returns its stdout, stderr and exit code.
func ctl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("hotplug-agent %v: %v", args, err)
	}
	return strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()), code
}

// recorded reads a file of recorded callback phases, one per line; missing is empty.
func recorded(path string) []string {
	b, _ := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil
	}
	out := strings.Split(s, "\n")
	for i := range out {
		out[i] = strings.TrimSpace(out[i])
	}
	return out
}

// recorder is an exec callback's shell script: it appends "$HOTPLUG_PHASE $HOTPLUG_REQUESTED
// $HOTPLUG_CAUSE $HOTPLUG_STATUS" to out and vetoes the vetoable phase while the file veto exists.
func recorderScript(out, veto, vetoPhase string) string {
	return fmt.Sprintf(`echo "$HOTPLUG_PHASE ${HOTPLUG_REQUESTED:-$HOTPLUG_CAUSE} $HOTPLUG_STATUS" >> %s
if [ "$HOTPLUG_PHASE" = %s ] && [ -e %s ]; then echo "the workload pinned there is busy" >&2; exit 1; fi`, out, vetoPhase, veto)
}

// TestIntegrationControlCPU drives cpu N of this machine through the control socket with
// `hotplug-agent offline` and `online`: a vetoed removal leaves it online with remove-cancelled;
// a consented one gives query-remove, remove-complete, then the removal on /events; a vetoed
// online leaves it offline; a consented online gives add_start, add_complete, then the arrival;
// and a removal made behind the agent's back gives remove-complete only.
func TestIntegrationControlCPU(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	onlineFile := link + "/online"
	t.Cleanup(func() {
		if err := os.WriteFile(onlineFile, []byte("1"), 0); err != nil {
			t.Errorf("restore cpu%d online: %v", cpu, err)
		}
	})
	if err := os.WriteFile(onlineFile, []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	guardOut, addOut := filepath.Join(dir, "guard"), filepath.Join(dir, "pool")
	vetoRemove, vetoAdd := filepath.Join(dir, "veto-remove"), filepath.Join(dir, "veto-add")
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`two_phase: {timeout: 20s}
callbacks:
  - name: guard
    kind: target_device
    target: %s
    exec: {command: ["/bin/sh", "-c", %q]}
  - name: pool
    kind: two_phase
    class: processor
    include_existing: true
    exec: {command: ["/bin/sh", "-c", %q]}
`, link, recorderScript(guardOut, vetoRemove, "query_remove"), recorderScript(addOut, vetoAdd, "add_start"))), 0o600)
	sock := filepath.Join(dir, "control.sock")
	existing := onlineCPUs(t)
	a := startAgent(t, "--config.file="+cfg, "--control.socket="+sock)
	events := a.subscribe(t, "class=processor")
	// include_existing replayed the online CPUs at start: add_start for each, then add_complete.
	var wantPool []string
	for _, phase := range []string{"add_start", "add_complete"} {
		for range existing {
			wantPool = append(wantPool, phase+" existing")
		}
	}
	if got := recorded(addOut); strings.Join(got, "\n") != strings.Join(wantPool, "\n") {
		t.Errorf("pool's add-existing replay:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantPool, "\n"))
	}
	state := func() string {
		b, _ := os.ReadFile(onlineFile)
		return strings.TrimSpace(string(b))
	}
	n := fmt.Sprint(cpu)

	// A vetoed removal: the CPU stays online, the guard gets remove-cancelled with its own veto.
	os.WriteFile(vetoRemove, nil, 0o600)
	out, errOut, code := ctl(t, "offline", "--control.socket="+sock, "cpu", n)
	const guardVeto = "vetoed by guard at query_remove: exec /bin/sh: exit status 1: the workload pinned there is busy"
	wantOut := fmt.Sprintf("cpu %s: operation-failed: %s", n, guardVeto)
	if code != 1 || out != wantOut || errOut != "" {
		t.Errorf("vetoed offline: exit %d, stdout %q, stderr %q; want exit 1 and %q", code, out, errOut, wantOut)
	}
	if state() != "1" {
		t.Fatalf("cpu%d went offline despite the veto", cpu)
	}
	want := []string{"query_remove 1", "remove_cancelled 1 " + guardVeto}
	if got := recorded(guardOut); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("guard after the veto:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Consent: query-remove, remove-complete, and only then the removal.
	os.Remove(vetoRemove)
	out, _, code = ctl(t, "offline", "--control.socket="+sock, "cpu", n)
	if code != 0 || out != "cpu "+n+": success" {
		t.Errorf("offline: exit %d, %q; want exit 0 and cpu %s: success", code, out, n)
	}
	if state() != "0" {
		t.Fatalf("cpu%d still online after a successful offline", cpu)
	}
	e := next(t, events, "the removal of "+link)
	guardAtRemoval := recorded(guardOut)
	if e.Event != "removal" || e.SymbolicLink != link || e.Cause != "uevent" {
		t.Errorf("after the offline got %+v; want the removal of %s", e, link)
	}
	want = append(want, "query_remove 1", "remove_complete 1")
	if strings.Join(guardAtRemoval, "\n") != strings.Join(want, "\n") {
		t.Errorf("guard when the removal was published:\n%s\nwant (remove_complete before the removal):\n%s", strings.Join(guardAtRemoval, "\n"), strings.Join(want, "\n"))
	}

	// A vetoed online: the CPU stays offline; add_start, add_failure.
	os.WriteFile(vetoAdd, nil, 0o600)
	out, _, code = ctl(t, "online", "--control.socket="+sock, "cpu", n)
	const poolVeto = "vetoed by pool at add_start: exec /bin/sh: exit status 1: the workload pinned there is busy"
	if code != 1 || out != "cpu "+n+": operation-failed: "+poolVeto {
		t.Errorf("vetoed online: exit %d, %q", code, out)
	}
	if state() != "0" {
		t.Fatalf("cpu%d came online despite the veto", cpu)
	}
	// Consent: add_start, add_complete, then the arrival.
	os.Remove(vetoAdd)
	out, _, code = ctl(t, "online", "--control.socket="+sock, "cpu", n)
	if code != 0 || out != "cpu "+n+": success" || state() != "1" {
		t.Errorf("online: exit %d, %q, online=%s; want success", code, out, state())
	}
	e = next(t, events, "the arrival of "+link)
	poolAtArrival := recorded(addOut)
	if e.Event != "arrival" || e.SymbolicLink != link {
		t.Errorf("after the online got %+v; want the arrival of %s", e, link)
	}
	wantPool = append(wantPool,
		"add_start request", "add_failure request "+poolVeto,
		"add_start request", "add_complete request")
	if strings.Join(poolAtArrival, "\n") != strings.Join(wantPool, "\n") {
		t.Errorf("pool when the arrival was published:\n%s\nwant:\n%s", strings.Join(poolAtArrival, "\n"), strings.Join(wantPool, "\n"))
	}
	// Nothing to do is a success that involves nobody.
	if out, _, code = ctl(t, "online", "--control.socket="+sock, "cpu", n); code != 0 || out != "cpu "+n+": success" {
		t.Errorf("online of an online CPU: exit %d, %q", code, out)
	}

	// A removal behind the agent's back: remove-complete only, not requested.
	if err := os.WriteFile(onlineFile, []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	next(t, events, "the removal made behind the agent's back")
	want = append(want, "remove_complete 0")
	for deadline := time.Now().Add(20 * time.Second); len(recorded(guardOut)) < len(want) && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
	}
	if got := recorded(guardOut); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("guard after a surprise removal:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(recorded(addOut)) != len(wantPool) {
		t.Errorf("pool got calls for requests with nothing to do or removals: %v", recorded(addOut))
	}

	m := a.get(t, "/metrics")
	for s, v := range map[string]float64{
		`hotplug_agent_vetoes_total{callback="guard",interface_class="processor",phase="query_remove",reason="error"}`: 1,
		`hotplug_agent_vetoes_total{callback="pool",interface_class="processor",phase="add_start",reason="error"}`:     1,
		`hotplug_agent_control_requests_total{op="offline",response="operation-failed"}`:                               1,
		`hotplug_agent_control_requests_total{op="offline",response="success"}`:                                        1,
		`hotplug_agent_control_requests_total{op="online",response="success"}`:                                         2,
	} {
		if got := metric(t, m, s); got != v {
			t.Errorf("%s = %v; want %v", s, got, v)
		}
	}
	if l := a.logs.String(); !strings.Contains(l, `msg="control request" component=control uid=0 pid=`) {
		t.Errorf("the agent did not log the requests with the requester's uid and pid")
	}
	a.stop(t)
}

// TestIntegrationControlMemoryCannotOffline asks for memory block 0, which this kernel cannot
// offline: the result is operation-failed with the kernel's error and errno, and the target's
// registration gets query-remove then remove-cancelled carrying that error.
func TestIntegrationControlMemoryCannotOffline(t *testing.T) {
	testenv.RequireRoot(t)
	const link = "/sys/devices/system/memory/memory0"
	if b, err := os.ReadFile(link + "/state"); err != nil || strings.TrimSpace(string(b)) != "online" {
		testenv.Unavailable(t, "needs %s online: %v", link, err)
	}
	t.Cleanup(func() {
		// Should the kernel ever accept, give the block back.
		if b, _ := os.ReadFile(link + "/state"); strings.TrimSpace(string(b)) == "offline" {
			os.WriteFile(link+"/state", []byte("online"), 0)
		}
	})
	dir := t.TempDir()
	out := filepath.Join(dir, "guard")
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`callbacks:
  - name: guard
    kind: target_device
    target: %s
    exec: {command: ["/bin/sh", "-c", %q]}
`, link, recorderScript(out, filepath.Join(dir, "never"), "query_remove"))), 0o600)
	sock := filepath.Join(dir, "control.sock")
	a := startAgent(t, "--config.file="+cfg, "--control.socket="+sock)
	stdout, _, code := ctl(t, "offline", "--control.socket="+sock, "memory", "0")
	if b, _ := os.ReadFile(link + "/state"); strings.TrimSpace(string(b)) != "online" {
		t.Fatalf("memory0 is %s: the kernel accepted the offline; this test needs a block it refuses", b)
	}
	// This kernel refuses with EINVAL (the block holds kernel memory; other kernels say EBUSY):
	// whatever it says is what the command prints and the guard's status carries.
	m := regexp.MustCompile(`^memory 0: operation-failed: (sysfs: write "offline" to /sys/devices/system/memory/memory0/state: ([a-z ]+)) \((E[A-Z]+)\)$`).FindStringSubmatch(stdout)
	if code != 1 || m == nil {
		t.Fatalf("offline memory 0: exit %d, %q; want exit 1, operation-failed with the kernel's error and errno", code, stdout)
	}
	kernelErr, errnoName := m[1], m[3]
	got := recorded(out)
	if len(got) != 2 || got[0] != "query_remove 1" || got[1] != "remove_cancelled 1 "+kernelErr {
		t.Errorf("guard got:\n%s\nwant query_remove 1, then remove_cancelled 1 %s", strings.Join(got, "\n"), kernelErr)
	}
	// The JSON form carries the errno.
	stdout, _, _ = ctl(t, "offline", "--control.socket="+sock, "--json", "memory", "0")
	if !strings.Contains(stdout, `"error_name": "`+errnoName+`"`) || !regexp.MustCompile(`"error_code": [1-9][0-9]*`).MatchString(stdout) {
		t.Errorf("offline --json memory 0:\n%s\nwant error_code and error_name %s", stdout, errnoName)
	}
	// Not found and not supported, as qemu-guest-agent says them.
	stdout, _, code = ctl(t, "offline", "--control.socket="+sock, "cpu", "4095", "memory", "999999")
	if code != 1 || stdout != "cpu 4095: not-found: cpu 4095: no such CPU\nmemory 999999: not-found: memory 999999: no such memory block" {
		t.Errorf("offline of what does not exist: exit %d:\n%s", code, stdout)
	}
	if _, err := os.Stat("/sys/devices/system/cpu/cpu0/online"); errors.Is(err, os.ErrNotExist) {
		stdout, _, code = ctl(t, "offline", "--control.socket="+sock, "cpu", "0")
		if code != 1 || !strings.HasPrefix(stdout, "cpu 0: operation-not-supported: ") {
			t.Errorf("offline cpu 0 (no online file): exit %d, %q; want operation-not-supported", code, stdout)
		}
	}
	a.stop(t)
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the control socket remains after the agent stopped: %v", err)
	}
}
