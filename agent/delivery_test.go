//go:build linux

package agent

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/statefile"
)

// recordConfig is a configuration whose exec callback "rec", for class, appends
// "<HOTPLUG_ID> <event> <cpu or block> <cause>" to out as it starts, then waits while the file
// gate exists (or for a minute). lines reads them back with "_" for the spaces.
func recordConfig(t *testing.T, class, out, gate string) *config.Config {
	t.Helper()
	script := fmt.Sprintf(`echo "$HOTPLUG_ID $HOTPLUG_EVENT ${HOTPLUG_CPU:-$HOTPLUG_MEMORY_BLOCK} $HOTPLUG_CAUSE" >> %s
n=0; while [ -e %s ] && [ $n -lt 6000 ]; do sleep 0.01; n=$((n+1)); done`, out, gate)
	cfg, err := config.Parse(fmt.Appendf(nil, "log_notifications: false\ncallbacks:\n  - {name: rec, class: %s, exec: {command: [/bin/sh, -c, %q], timeout: 2m}}\n", class, script))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// lines returns the lines of the file at p.
func lines(t *testing.T, p string) []string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(b)), " ", "_"))
}

// TestCallbackResumesAfterStop: a stop while an exec callback runs, with more queued for it, loses
// nothing. The callback in flight is cut short at the end of the grace; the state file keeps it
// and those queued, each with its ID; the next start gives them first, with the same IDs (the
// one cut short again), then the live ones.
func TestCallbackResumesAfterStop(t *testing.T) {
	root := fixture(t)
	dir := t.TempDir()
	statePath := filepath.Join(dir, "state.json")
	out, gate := filepath.Join(dir, "records"), filepath.Join(dir, "gate")
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := recordConfig(t, "processor", out, gate)
	var logs testenv.Buffer
	o := Options{SysfsPath: root, StatePath: statePath, Config: cfg, ShutdownGrace: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(out)
			t.Logf("records:\n%s\nlog:\n%s", b, logs.String())
		}
	})
	a, src, stop, done := runAgent(t, o)
	seq := uint64(200)
	// toggle changes cpu1 and waits for the agent to publish it.
	toggle := func(a *Agent, src *fakeSource, online bool) {
		t.Helper()
		state, action := "0", "offline"
		if online {
			state, action = "1", "online"
		}
		before := a.Registry().LastID()
		writeAttr(t, root, "devices/system/cpu/cpu1/online", state)
		seq++
		src.send(t, action, "/devices/system/cpu/cpu1", "cpu", seq)
		waitUntil(t, "the notification of cpu1 "+action, func() bool { return a.Registry().LastID() > before })
	}
	toggle(a, src, false)
	first := a.Registry().LastID()
	toggle(a, src, true)
	toggle(a, src, false)
	waitUntil(t, "the first notification to be running", func() bool { return len(lines(t, out)) == 1 })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil

	s, err := statefile.Load(statePath)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := s.Callbacks["rec"]
	if !ok {
		t.Fatalf("no cursor for callback rec in the state file; callbacks: %v", s.Callbacks)
	}
	var ids []uint64
	for _, n := range c.Pending {
		ids = append(ids, n.ID)
	}
	if want := []uint64{first, first + 1, first + 2}; !slices.Equal(ids, want) {
		t.Errorf("IDs pending in the state file %v; want %v (the one cut short, then those queued)", ids, want)
	}
	if !s.Clean || s.Instance.String() == "00000000-0000-0000-0000-000000000000" {
		t.Errorf("state file: clean %v, instance %v; want a clean stop and an instance", s.Clean, s.Instance)
	}

	os.Remove(gate)
	a, src, _, _ = runAgent(t, o)
	toggle(a, src, true) // live, after those owed
	want := []string{
		fmt.Sprintf("%d_removal_1", first), // cut short by the stop
		fmt.Sprintf("%d_removal_1", first), // given again, with its ID
		fmt.Sprintf("%d_arrival_1", first+1),
		fmt.Sprintf("%d_removal_1", first+2),
		fmt.Sprintf("%d_arrival_1", first+3),
	}
	waitUntil(t, "every record", func() bool { return len(lines(t, out)) >= len(want) })
	var got []string
	for _, l := range lines(t, out) {
		got = append(got, l[:strings.LastIndexByte(l, '_')]) // the cause: uevent, or resync for the fake's first
	}
	if !slices.Equal(got, want) {
		t.Errorf("callback records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(logs.String(), "callback resumes") {
		t.Errorf("no log line saying the callback resumes; log:\n%s", logs.String())
	}
}

// TestCallbackResumeReconciles: a callback whose saved view is behind the truth, with nothing
// pending (as after a queue overflow, or a state file of an earlier agent), gets at start the
// removals and arrivals from what it saw to what is announced, each with an ID; a callback whose
// class changed starts afresh.
func TestCallbackResumeReconciles(t *testing.T) {
	root := fixture(t)
	dir := t.TempDir()
	statePath := filepath.Join(dir, "state.json")
	out := filepath.Join(dir, "records")
	cpu := func(n int) notify.Interface {
		return notify.Interface{ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: fmt.Sprintf("/sys/devices/system/cpu/cpu%d", n),
			Number: n, Node: 0, State: "online"}
	}
	// What the agent announced: both CPUs of the fixture. What the callback saw: cpu0 and a
	// cpu5 that is gone.
	s := statefile.State{Interfaces: []notify.Interface{cpu(0), cpu(1)}, LastEventID: 50, Clean: true,
		Callbacks: map[string]notify.Cursor{
			"rec":   {Class: notify.GUIDDeviceProcessor, View: []notify.Interface{cpu(0), cpu(5)}},
			"other": {Class: notify.GUIDDeviceProcessor, View: []notify.Interface{cpu(0)}},
		}}
	if err := statefile.Save(statePath, s); err != nil {
		t.Fatal(err)
	}
	var logs testenv.Buffer
	_, _, stop, done := runAgent(t, Options{SysfsPath: root, StatePath: statePath, Config: recordConfig(t, "processor", out, filepath.Join(dir, "no-gate")),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	want := []string{"51_removal_5_resync", "52_arrival_1_resync"}
	waitUntil(t, "two records", func() bool { return len(lines(t, out)) >= 2 })
	if got := lines(t, out); !slices.Equal(got, want) {
		t.Errorf("callback records %v; want %v", got, want)
	}
	stop()
	done <- <-done

	// The same callback, now for memory: its processor cursor does not apply, and it gets only
	// what the agent announces (the memory blocks the state file did not have, at start).
	out2 := filepath.Join(dir, "records2")
	if err := statefile.Save(statePath, s); err != nil {
		t.Fatal(err)
	}
	logs.Take()
	runAgent(t, Options{SysfsPath: root, StatePath: statePath, Config: recordConfig(t, "memory", out2, filepath.Join(dir, "no-gate")),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	waitUntil(t, "the warning", func() bool { return strings.Contains(logs.String(), "callback's class changed") })
	waitUntil(t, "the memory blocks' arrivals", func() bool { return len(lines(t, out2)) >= 5 })
	for _, l := range lines(t, out2) {
		if !strings.HasSuffix(l, "_startup") || strings.Contains(l, "removal") {
			t.Errorf("a callback whose class changed got %s; want only the arrivals announced at start", l)
		}
	}
}

// waitUntil polls cond for up to 20 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 20 s", what)
		}
	}
}
