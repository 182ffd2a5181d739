package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// TestOtherOnliner: under the planned policy, a hot-added block that another onliner (a udev
// rule, here the test) brought online before the agent got to it is left alone, counted as
// onlined by "other" and logged as a conflict once; a block the agent onlines itself, in the
// zone the planner chose, is counted as the agent's.
func TestOtherOnliner(t *testing.T) {
	root := fixture(t)
	const state32, state33 = "devices/system/memory/memory32/state", "devices/system/memory/memory33/state"
	writeAttr(t, root, state32, "offline")
	writeAttr(t, root, state33, "offline")
	plug32, plug33 := unplugBlock(t, root, 32), unplugBlock(t, root, 33)
	var logs testenv.Buffer
	zoneinfo := filepath.Join(t.TempDir(), "zoneinfo")
	os.WriteFile(zoneinfo, []byte("Node 0, zone DMA32\n        present 262144\nNode 0, zone Movable\n        present 0\n"), 0o644)
	cfg := &config.Config{Online: config.Online{Memory: "planned"}}
	a, src, _, _ := runAgent(t, Options{SysfsPath: root, ZoneinfoPath: zoneinfo, Config: cfg,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	onlined := func(by, zone string) float64 {
		return testutil.ToFloat64(a.metrics.MemoryBlocksOnlined.WithLabelValues(by, zone))
	}

	// A udev rule onlines memory33 as soon as it is added: the agent finds it online.
	plug33()
	writeAttr(t, root, state33, "online")
	src.send(t, "add", "/devices/system/memory/memory33", "memory", 901)
	src.send(t, "online", "/devices/system/memory/memory33", "memory", 902)
	waitUntil(t, "count of memory33 as onlined by another", func() bool { return onlined("other", "kernel") == 1 })

	// The agent onlines memory32 itself: MOVABLE, well within the ratio.
	plug32()
	src.send(t, "add", "/devices/system/memory/memory32", "memory", 903)
	waitFile(t, filepath.Join(root, state32), "online_movable", "memory32, hot-added")
	writeAttr(t, root, state32, "online")
	writeAttr(t, root, "devices/system/memory/memory32/valid_zones", "Movable")
	src.send(t, "online", "/devices/system/memory/memory32", "memory", 904)
	waitUntil(t, "count of memory32 as the agent's", func() bool { return onlined("agent", "movable") == 1 })

	if b, _ := os.ReadFile(filepath.Join(root, state33)); strings.TrimSpace(string(b)) != "online" {
		t.Errorf("memory33's state is %q: the agent wrote to a block another onliner had onlined", b)
	}
	if got := testutil.ToFloat64(a.metrics.ZonePlans.WithLabelValues("none", "movable")); got != 1 {
		t.Errorf("zone_plan_blocks_total{device=none,zone=movable} = %v; want 1", got)
	}
	if n := strings.Count(logs.String(), "another onliner brings hot-added memory online"); n != 1 {
		t.Errorf("%d conflict lines; want 1:\n%s", n, logs.String())
	}
}

// TestKernelOnlining: under the policy kernel the agent configures the kernel's auto-online
// (auto-movable at the configured ratio) at start, keeps what it found beside the state file,
// and puts it back when it stops.
func TestKernelOnlining(t *testing.T) {
	root := fixture(t)
	params := filepath.Join(root, "module/memory_hotplug/parameters")
	os.MkdirAll(params, 0o755)
	writeAttr(t, root, "module/memory_hotplug/parameters/online_policy", "contig-zones")
	writeAttr(t, root, "module/memory_hotplug/parameters/auto_movable_ratio", "301")
	statePath := filepath.Join(t.TempDir(), "state.json")
	ratio := config.Percent(250)
	cfg := &config.Config{Online: config.Online{Memory: "kernel", MovableRatio: &ratio}}
	_, _, stop, done := runAgent(t, Options{SysfsPath: root, StatePath: statePath, Config: cfg})
	for f, want := range map[string]string{
		"devices/system/memory/auto_online_blocks":            "online",
		"module/memory_hotplug/parameters/online_policy":      "auto-movable",
		"module/memory_hotplug/parameters/auto_movable_ratio": "250",
	} {
		if got := readAttr(t, root, f); got != want {
			t.Errorf("%s = %q while the agent runs; want %q", f, got, want)
		}
	}
	if _, err := os.Stat(statePath + ".kernel"); err != nil {
		t.Errorf("the settings found are not kept beside the state file: %v", err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	for f, want := range map[string]string{
		"devices/system/memory/auto_online_blocks":            "offline",
		"module/memory_hotplug/parameters/online_policy":      "contig-zones",
		"module/memory_hotplug/parameters/auto_movable_ratio": "301",
	} {
		if got := readAttr(t, root, f); got != want {
			t.Errorf("%s = %q after the agent stopped; want %q back", f, got, want)
		}
	}
	if _, err := os.Stat(statePath + ".kernel"); !os.IsNotExist(err) {
		t.Errorf("the settings' file is left after they were put back: %v", err)
	}
}
