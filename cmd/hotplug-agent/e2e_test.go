//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// binary is the agent built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	if os.Getenv(connectHelperEnv) != "" {
		os.Exit(connectHelper())
	}
	dir, err := os.MkdirTemp("", "hotplug-agent-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "hotplug-agent")
	build := exec.Command("go", "build", "-race", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build hotplug-agent:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agentProc is the real binary, running.
type agentProc struct {
	cmd  *exec.Cmd
	base string // http://127.0.0.1:port
	logs *testenv.Buffer
}

var listenRE = regexp.MustCompile(`msg="agent ready" listen=(\S+)`)

// startAgent runs the binary with args on a free loopback port and waits until it is ready.
func startAgent(t *testing.T, args ...string) *agentProc {
	t.Helper()
	base := []string{"run", "--web.listen-address=127.0.0.1:0"}
	given := func(flag string) bool {
		return slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, flag+"=") })
	}
	if !given("--log.level") { // a flag is given once
		base = append(base, "--log.level=debug")
	}
	if !given("--path.state") {
		// Agents under test never share the system's state file, nor each other's.
		base = append(base, "--path.state="+filepath.Join(t.TempDir(), "state.json"))
	}
	return launchAgent(t, exec.Command(binary, append(base, args...)...))
}

// launchAgent starts cmd, the binary with the arguments of `run` (its web listen address on a
// loopback port chosen by the kernel), and waits until it is ready.
func launchAgent(t *testing.T, cmd *exec.Cmd) *agentProc {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{cmd: cmd, logs: &testenv.Buffer{}}
	ready, ended := make(chan string, 1), make(chan struct{})
	go func() {
		defer close(ended)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			a.logs.Write([]byte(line + "\n"))
			if m := listenRE.FindStringSubmatch(line); m != nil {
				ready <- m[1]
			}
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", a.logs.String())
		}
	})
	select {
	case addr := <-ready:
		a.base = "http://" + addr
	case <-ended:
		select {
		case addr := <-ready: // ready, then its output closed: the test sees what follows
			a.base = "http://" + addr
		default:
			t.Fatalf("agent exited before it was ready; log:\n%s", a.logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("agent not ready within 30 s; log:\n%s", a.logs.String())
	}
	return a
}

// stop sends SIGTERM and waits for a clean exit.
func (a *agentProc) stop(t *testing.T) {
	t.Helper()
	a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("agent did not exit within 20 s of SIGTERM")
	}
}

func (a *agentProc) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(a.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
	}
	return string(b)
}

// status returns the HTTP status of GET path.
func (a *agentProc) status(t *testing.T, path string) int {
	t.Helper()
	resp, err := http.Get(a.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// event is the part of an /events notification the tests check.
type event struct {
	Version            int    `json:"version"`
	Event              string `json:"event"`
	EventGUID          string `json:"event_guid"`
	InterfaceClass     string `json:"interface_class"`
	InterfaceClassGUID string `json:"interface_class_guid"`
	SymbolicLink       string `json:"symbolic_link"`
	Seqnum             uint64 `json:"seqnum"`
	CPU                *int   `json:"cpu"`
	MemoryBlock        *int   `json:"memory_block"`
	Cause              string `json:"cause"`
}

// subscribe opens /events?query and returns a channel of its notifications. The registration
// exists once subscribe returns (the agent registers before it sends the headers).
func (a *agentProc) subscribe(t *testing.T, query string) <-chan event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", a.base+"/events?"+query, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET /events: %v", err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("GET /events: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	ch := make(chan event, 1024)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var e event
			if err := json.Unmarshal([]byte(data), &e); err != nil {
				t.Errorf("bad /events data %q: %v", data, err)
				return
			}
			ch <- e
		}
	}()
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return ch
}

func next(t *testing.T, ch <-chan event, what string) event {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatalf("event stream ended while waiting for %s", what)
		}
		return e
	case <-time.After(20 * time.Second):
		t.Fatalf("no notification within 20 s while waiting for %s", what)
	}
	return event{}
}

// metric returns the value of the sample whose name and labels start with prefix.
func metric(t *testing.T, exposition, sample string) float64 {
	t.Helper()
	for _, line := range strings.Split(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return v
		}
	}
	t.Fatalf("metric %s not in /metrics", sample)
	return 0
}

const (
	processorGUID = "97fadb10-4e33-40ae-359c-8bef029dbdd0"
	memoryGUID    = "3fd0f03d-92e0-45fb-b75c-5ed8ffb01021"
	arrivalGUID   = "cb3a4004-46f0-11d0-b08f-00609713053f"
	removalGUID   = "cb3a4005-46f0-11d0-b08f-00609713053f"
)

// TestIntegrationCPUOfflineOnline is the "done when": a real CPU of this machine goes
// offline and online again while the agent runs; the removal and the arrival, with the processor
// GUID and the CPU's symbolic link, show on /events, in an exec callback's environment and in the
// metrics, and synthetic uevents on the way announce nothing.
func TestIntegrationCPUOfflineOnline(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)

	outDir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	script := fmt.Sprintf(`env | grep '^HOTPLUG_' | sort > %s/$HOTPLUG_SEQNUM-$HOTPLUG_EVENT.env`, outDir)
	os.WriteFile(cfg, []byte(fmt.Sprintf(`callbacks:
  - name: record
    class: processor
    exec:
      command: ["/bin/sh", "-c", %q]
      timeout: 10s
`, script)), 0o600)
	a := startAgent(t, "--config.file="+cfg)
	events := a.subscribe(t, "")

	// Synthetic uevents change no state: the agent must see them and announce nothing.
	mems, _ := filepath.Glob("/sys/devices/system/memory/memory[0-9]*")
	for _, dev := range append([]string{link, "/sys/devices/system/cpu/cpu0"}, mems[:min(2, len(mems))]...) {
		for _, action := range []string{"online", "offline", "add", "change"} {
			if err := testenv.Synthesize(dev, action); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Every uevent up to here is synthetic: the first notification must come after them all.
	b, err := os.ReadFile("/sys/kernel/uevent_seqnum")
	if err != nil {
		t.Fatal(err)
	}
	lastSynthetic, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)

	testenv.SetCPUOnline(t, cpu, false)
	removal := next(t, events, "the removal of "+link)
	if removal.Seqnum <= lastSynthetic {
		t.Errorf("a synthetic uevent (seqnum %d <= %d) was announced as %s of %s", removal.Seqnum, lastSynthetic, removal.Event, removal.SymbolicLink)
	}
	testenv.SetCPUOnline(t, cpu, true)
	arrival := next(t, events, "the arrival of "+link)

	for _, c := range []struct {
		got        event
		name, guid string
	}{{removal, "removal", removalGUID}, {arrival, "arrival", arrivalGUID}} {
		e := c.got
		if e.Event != c.name || e.EventGUID != c.guid || e.InterfaceClass != "processor" ||
			e.InterfaceClassGUID != processorGUID || e.SymbolicLink != link || e.CPU == nil || *e.CPU != cpu ||
			e.Version != 1 || e.Seqnum == 0 || e.Cause != "uevent" {
			t.Errorf("%s notification = %+v; want event %s (%s), class processor (%s), link %s, cpu %d, version 1, a seqnum, cause uevent",
				c.name, e, c.name, c.guid, processorGUID, link, cpu)
		}
	}
	if removal.Seqnum >= arrival.Seqnum {
		t.Errorf("removal seqnum %d not before arrival seqnum %d", removal.Seqnum, arrival.Seqnum)
	}

	// /interfaces lists the CPU again.
	var ifaces []struct {
		InterfaceClass     string `json:"interface_class"`
		InterfaceClassGUID string `json:"interface_class_guid"`
		SymbolicLink       string `json:"symbolic_link"`
	}
	if err := json.Unmarshal([]byte(a.get(t, "/interfaces")), &ifaces); err != nil {
		t.Fatal(err)
	}
	found := slices.ContainsFunc(ifaces, func(i struct {
		InterfaceClass     string `json:"interface_class"`
		InterfaceClassGUID string `json:"interface_class_guid"`
		SymbolicLink       string `json:"symbolic_link"`
	}) bool {
		return i.SymbolicLink == link && i.InterfaceClass == "processor" && i.InterfaceClassGUID == processorGUID
	})
	if !found {
		t.Errorf("/interfaces does not list %s as a processor after it came back online", link)
	}

	// The exec callback ran for both, with the notification in its environment. It runs on its
	// own goroutine: wait for its files.
	wantEnv := map[string][]string{
		"removal": {"HOTPLUG_EVENT=removal", "HOTPLUG_EVENT_GUID=" + removalGUID},
		"arrival": {"HOTPLUG_EVENT=arrival", "HOTPLUG_EVENT_GUID=" + arrivalGUID},
	}
	for _, e := range []event{removal, arrival} {
		p := filepath.Join(outDir, fmt.Sprintf("%d-%s.env", e.Seqnum, e.Event))
		var env []byte
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if b, err := os.ReadFile(p); err == nil && len(b) > 0 {
				env = b
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("exec callback wrote no %s within 20 s", p)
			}
		}
		for _, want := range append(wantEnv[e.Event],
			"HOTPLUG_INTERFACE_CLASS=processor", "HOTPLUG_INTERFACE_CLASS_GUID="+processorGUID,
			"HOTPLUG_SYMBOLIC_LINK="+link, "HOTPLUG_CPU="+strconv.Itoa(cpu), "HOTPLUG_SEQNUM="+strconv.FormatUint(e.Seqnum, 10)) {
			if !slices.Contains(strings.Split(string(env), "\n"), want) {
				t.Errorf("exec environment for the %s lacks %s:\n%s", e.Event, want, env)
			}
		}
	}

	// The metrics count both, the exec callback's latency, and the synthetic uevents seen.
	m := a.get(t, "/metrics")
	for _, s := range []string{
		`hotplug_agent_notifications_total{event="removal",interface_class="processor"}`,
		`hotplug_agent_notifications_total{event="arrival",interface_class="processor"}`,
		`hotplug_agent_dispatch_latency_seconds_count{callback="record"}`,
		`hotplug_agent_dispatch_latency_seconds_count{callback="events"}`,
		`hotplug_agent_uevents_total{action="offline",subsystem="cpu"}`,
		`hotplug_agent_uevents_total{action="online",subsystem="cpu"}`,
	} {
		if v := metric(t, m, s); v < 1 {
			t.Errorf("%s = %v; want at least 1", s, v)
		}
	}
	if len(mems) > 0 {
		if v := metric(t, m, `hotplug_agent_uevents_total{action="change",subsystem="memory"}`); v < 1 {
			t.Errorf("the synthetic memory uevents were not counted: uevents_total{memory,change} = %v", v)
		}
	}
	if v := metric(t, m, `hotplug_agent_interfaces{interface_class="processor"}`); v != float64(onlineCPUs(t)) {
		t.Errorf("hotplug_agent_interfaces{processor} = %v; sysfs has %d CPUs online", v, onlineCPUs(t))
	}
	cpuDirs, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*")
	if v := metric(t, m, `hotplug_agent_present{interface_class="processor"}`); v != float64(len(cpuDirs)) {
		t.Errorf("hotplug_agent_present{processor} = %v; sysfs has %d CPUs", v, len(cpuDirs))
	}
	if v := metric(t, m, `hotplug_agent_present{interface_class="memory"}`); v != float64(len(mems)) {
		t.Errorf("hotplug_agent_present{memory} = %v; sysfs has %d memory blocks", v, len(mems))
	}
	if v := metric(t, m, `hotplug_agent_callback_errors_total{callback="record"}`); v != 0 {
		t.Errorf("exec callback errors = %v; want 0", v)
	}
	a.stop(t)
}

// TestIntegrationIncludeExisting subscribes with include_existing and checks that every online
// CPU and memory block of this machine arrives once, before anything live.
func TestIntegrationIncludeExisting(t *testing.T) {
	testenv.LockCPUs(t) // no other package's test may move a CPU while this one compares
	a := startAgent(t)
	events := a.subscribe(t, "include_existing=true")
	want := onlineLinks(t)
	var got []string
	for range want {
		e := next(t, events, "the existing interfaces")
		if e.Event != "arrival" || e.Cause != "existing" {
			t.Errorf("existing interface notified as %+v; want an arrival with cause existing", e)
		}
		got = append(got, e.SymbolicLink)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("include_existing arrivals:\n%v\nwant the online interfaces in sysfs:\n%v", got, want)
	}
	a.stop(t)
}

// TestIntegrationListMatchesSysfs compares `hotplug-agent list --json` with sysfs read here.
func TestIntegrationListMatchesSysfs(t *testing.T) {
	if _, err := os.Stat("/sys/devices/system/cpu/present"); err != nil {
		testenv.Unavailable(t, "no sysfs at /sys")
	}
	testenv.LockCPUs(t)
	out, err := exec.Command(binary, "list", "--json").Output()
	if err != nil {
		t.Fatalf("list --json: %v", err)
	}
	var got []struct {
		SymbolicLink string `json:"symbolic_link"`
		State        string `json:"state"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	var gotOnline []string
	for _, i := range got {
		if i.State == "online" {
			gotOnline = append(gotOnline, i.SymbolicLink)
		}
	}
	slices.Sort(gotOnline)
	if want := onlineLinks(t); !slices.Equal(gotOnline, want) {
		t.Errorf("list --json online interfaces:\n%v\nsysfs:\n%v", gotOnline, want)
	}
	cpus, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*")
	mems, _ := filepath.Glob("/sys/devices/system/memory/memory[0-9]*")
	if len(got) != len(cpus)+len(mems) {
		t.Errorf("list --json has %d entries; sysfs has %d CPUs and %d memory blocks", len(got), len(cpus), len(mems))
	}
	text, err := exec.Command(binary, "list", "--blocks").Output()
	if err != nil {
		t.Fatalf("list --blocks: %v", err)
	}
	if lines := strings.Count(string(text), "\n"); lines != len(got)+2 {
		t.Errorf("list --blocks prints %d lines; want a header, %d rows and the memory hot-add headroom", lines, len(got))
	}
	if !strings.Contains(string(text), "\nhot-add headroom: ") {
		t.Errorf("list prints no memory hot-add headroom:\n%s", text)
	}
}

// onlineLinks reads the online CPUs and memory blocks straight from sysfs, sorted.
func onlineLinks(t *testing.T) []string {
	t.Helper()
	var links []string
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, found := strings.Cut(part, "-")
		l, _ := strconv.Atoi(lo)
		h := l
		if found {
			h, _ = strconv.Atoi(hi)
		}
		for n := l; n <= h; n++ {
			links = append(links, fmt.Sprintf("/sys/devices/system/cpu/cpu%d", n))
		}
	}
	mems, _ := filepath.Glob("/sys/devices/system/memory/memory[0-9]*")
	for _, m := range mems {
		if s, err := os.ReadFile(filepath.Join(m, "state")); err == nil && strings.TrimSpace(string(s)) == "online" {
			links = append(links, m)
		}
	}
	slices.Sort(links)
	return links
}

func onlineCPUs(t *testing.T) int {
	n := 0
	for _, l := range onlineLinks(t) {
		if strings.Contains(l, "/cpu/") {
			n++
		}
	}
	return n
}

// TestIntegrationOverflowResync stops the agent, loses a real CPU offline in a flood of uevents
// that overflows its (deliberately tiny) receive buffer, and resumes it: the agent must notice the
// overflow, rescan, and announce the removal it never received, then carry on live.
func TestIntegrationOverflowResync(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)

	a := startAgent(t, "--netlink.receive-buffer-bytes=4096")
	events := a.subscribe(t, "class=processor")

	a.cmd.Process.Signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			a.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	testenv.SetCPUOnline(t, cpu, false)
	// A few hundred events: far more than 4 KiB holds, few enough that other test packages'
	// listeners, with default buffers, keep up.
	for i := range 300 {
		if err := testenv.Synthesize("/sys/devices/system/cpu/cpu0", "change"); err != nil {
			t.Fatalf("synthetic uevent %d: %v", i, err)
		}
	}
	a.cmd.Process.Signal(syscall.SIGCONT)
	stopped = false

	removal := next(t, events, "the removal lost in the overflow")
	if removal.Event != "removal" || removal.SymbolicLink != link || removal.Cause != "resync" {
		t.Errorf("after the overflow got %+v; want the removal of %s with cause resync", removal, link)
	}
	testenv.SetCPUOnline(t, cpu, true)
	arrival := next(t, events, "the live arrival after the resync")
	if arrival.Event != "arrival" || arrival.SymbolicLink != link || arrival.Cause != "uevent" {
		t.Errorf("after the resync got %+v; want the arrival of %s with cause uevent", arrival, link)
	}
	m := a.get(t, "/metrics")
	if v := metric(t, m, "hotplug_agent_netlink_overflows_total"); v < 1 {
		t.Errorf("hotplug_agent_netlink_overflows_total = %v; want at least 1", v)
	}
	if v := metric(t, m, `hotplug_agent_resyncs_total{reason="overflow"}`); v < 1 {
		t.Errorf(`hotplug_agent_resyncs_total{reason="overflow"} = %v; want at least 1`, v)
	}
	a.stop(t)
}
