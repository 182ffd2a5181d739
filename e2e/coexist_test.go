//go:build linux

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// conflictLine is what the agent logs, once per other onliner, when another onliner brings
// hot-added memory online that its policy would have onlined.
const conflictLine = "another onliner brings hot-added memory online"

// onlinedBy sums hotplug_agent_memory_blocks_onlined_total{onliner} over the zones.
func onlinedBy(m metricSet, onliner string) float64 {
	var n float64
	for _, z := range []string{"movable", "kernel", "unknown"} {
		n += m.get("hotplug_agent_memory_blocks_onlined_total", "onliner", onliner, "zone", z)
	}
	return n
}

// memoryAttempts is how many online writes the agent's policy made for memory.
func memoryAttempts(m metricSet) float64 {
	return m.get("hotplug_agent_online_attempts_total", "interface_class", "memory", "result", "success") +
		m.get("hotplug_agent_online_attempts_total", "interface_class", "memory", "result", "failure")
}

// addDIMMs hot-adds n pc-dimms of 256 MiB (two blocks each) and waits until the agent counts
// their blocks as onlined by onliner.
func addDIMMs(t *testing.T, g *guest, prefix string, n int, onliner string) metricSet {
	t.Helper()
	before := onlinedBy(g.metrics(t), onliner)
	for i := range n {
		if err := g.vm.AddDIMM(ctxFor(t, time.Minute), fmt.Sprintf("%s%d", prefix, i), 256*mib); err != nil {
			t.Fatal(err)
		}
	}
	want := before + float64(2*n)
	return g.waitMetrics(t, 2*time.Minute, fmt.Sprintf("%v blocks counted as onlined by %s", want, onliner), func(m metricSet) bool {
		return onlinedBy(m, onliner) >= want
	})
}

// TestIntegrationOnlinerCoexistence: the agent lives beside another onliner of hot-added memory
// on a real kernel.
//
//   - kernel_auto_online: the kernel onlines hot-added memory itself (memhp_default_state=online)
//     while the agent's policy is planned. The agent writes no block's state, counts every block
//     as onlined by the kernel, and logs the conflict once, however many blocks come.
//   - kernel_mode: the guest boots with the kernel's auto-online off (memhp_default_state=
//     offline) and the agent's policy kernel: the agent configures the kernel to online
//     hot-added memory (auto-movable at the default ratio), so a hot-added pc-dimm comes online
//     with no write of the agent, counted as onlined by the kernel, in ZONE_MOVABLE.
func TestIntegrationOnlinerCoexistence(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU end-to-end tests boot guests: not in -short mode")
	}
	prepare(t)
	t.Run("kernel_auto_online", func(t *testing.T) {
		o := guestOptions{name: "kernel-auto-online", append: []string{"memhp_default_state=online"},
			config: "log_notifications: false\nonline:\n  memory: planned\n"}
		g := bootGuest(t, o, artefactDir(t, t.Name(), "guest"))
		defer g.stop()
		defer func() {
			if t.Failed() {
				g.logArtefacts(t)
			}
		}()
		addDIMMs(t, g, "first", 1, "kernel")
		m := addDIMMs(t, g, "more", 2, "kernel")
		if got := onlinedBy(m, "kernel"); got != 6 {
			t.Errorf("memory_blocks_onlined_total{onliner=\"kernel\"} = %v; want 6, the three pc-dimms' blocks", got)
		}
		if got := onlinedBy(m, "agent") + onlinedBy(m, "other"); got != 0 {
			t.Errorf("memory_blocks_onlined_total counts %v blocks as the agent's or another's; want 0", got)
		}
		if got := memoryAttempts(m); got != 0 {
			t.Errorf("the agent made %v online writes for memory the kernel onlines; want 0", got)
		}
		if n := strings.Count(g.vm.Serial(), conflictLine); n != 1 {
			t.Errorf("the conflict was logged %d times; want once", n)
		}
	})
	t.Run("kernel_mode", func(t *testing.T) {
		o := guestOptions{name: "kernel-mode", append: []string{"memhp_default_state=offline"},
			config: "log_notifications: false\nonline:\n  memory: kernel\n"}
		g := bootGuest(t, o, artefactDir(t, t.Name(), "guest"))
		defer g.stop()
		defer func() {
			if t.Failed() {
				g.logArtefacts(t)
			}
		}()
		if !strings.Contains(g.vm.Serial(), "kernel onlining: the kernel onlines hot-added memory itself while the agent runs") {
			t.Errorf("the agent did not say it configured the kernel's onlining")
		}
		m := addDIMMs(t, g, "dimm", 1, "kernel")
		if got := m.get("hotplug_agent_memory_blocks_onlined_total", "onliner", "kernel", "zone", "movable"); got != 2 {
			t.Errorf("memory_blocks_onlined_total{onliner=\"kernel\",zone=\"movable\"} = %v; want 2: the kernel's auto-movable onlines a small pc-dimm MOVABLE", got)
		}
		if got := memoryAttempts(m); got != 0 {
			t.Errorf("the agent made %v online writes under the policy kernel; want 0", got)
		}
		if n := strings.Count(g.vm.Serial(), conflictLine); n != 0 {
			t.Errorf("the agent logged a conflict with the kernel it configured itself")
		}
	})
}
