package metrics

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestUeventLabelsBounded: whatever subsystems and actions uevents carry (10,000 distinct ones,
// bytes that are not UTF-8), hotplug_agent_uevents_total keeps its 27 series, every count lands,
// and the exposition stays valid.
func TestUeventLabelsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "test")
	for i := range 10000 {
		m.Uevent(fmt.Sprintf("sub%d", i), fmt.Sprintf("act%d", i%7))
	}
	m.Uevent("\xff\xfe", "\xff")
	m.Uevent("cpu", "online")
	m.Uevent("memory", "offline")
	if n := testutil.CollectAndCount(m.Uevents); n != len(subsystems)*len(actions) {
		t.Errorf("uevents_total has %d series; want %d", n, len(subsystems)*len(actions))
	}
	for _, tt := range []struct {
		subsystem, action string
		want              float64
	}{
		{"other", "other", 10001},
		{"cpu", "online", 1},
		{"memory", "offline", 1},
		{"cpu", "add", 0},
	} {
		if got := testutil.ToFloat64(m.Uevents.WithLabelValues(tt.subsystem, tt.action)); got != tt.want {
			t.Errorf("uevents_total{subsystem=%q,action=%q} = %v; want %v", tt.subsystem, tt.action, got, tt.want)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			for _, l := range mt.GetLabel() {
				if !utf8.ValidString(l.GetValue()) {
					t.Errorf("%s has label %s=%q, not UTF-8", f.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}

// TestRejectedReasonsBounded: a reason the agent does not know is counted as other.
func TestRejectedReasonsBounded(t *testing.T) {
	m := New(prometheus.NewRegistry(), "test")
	m.Rejected("sender")
	m.Rejected("unconfirmed")
	m.Rejected("no such reason")
	if n := testutil.CollectAndCount(m.UeventsRejected); n != len(rejectReasons) {
		t.Errorf("uevents_rejected_total has %d series; want %d", n, len(rejectReasons))
	}
	for reason, want := range map[string]float64{"sender": 1, "unconfirmed": 1, "other": 1, "seqnum": 0} {
		if got := testutil.ToFloat64(m.UeventsRejected.WithLabelValues(reason)); got != want {
			t.Errorf("uevents_rejected_total{reason=%q} = %v; want %v", reason, got, want)
		}
	}
}

// TestCallbackSeriesCache: each owner's series is made once and found again, also when many.
func TestCallbackSeriesCache(t *testing.T) {
	m := New(prometheus.NewRegistry(), "test")
	for i := range 5000 {
		m.CallbackDone(fmt.Sprintf("owner%d", i), nil, 0, fmt.Errorf("x"))
	}
	m.CallbackDone("owner42", nil, 0, fmt.Errorf("x"))
	if got := testutil.ToFloat64(m.CallbackErrors.WithLabelValues("owner42")); got != 2 {
		t.Errorf("callback_errors_total{callback=owner42} = %v; want 2", got)
	}
	if n := testutil.CollectAndCount(m.CallbackErrors); n != 5000 {
		t.Errorf("callback_errors_total has %d series; want 5000", n)
	}
}

// BenchmarkUevent is the cost of counting one uevent, on the event loop's path.
func BenchmarkUevent(b *testing.B) {
	m := New(prometheus.NewRegistry(), "test")
	b.ReportAllocs()
	for b.Loop() {
		m.Uevent("memory", "online")
	}
}

// BenchmarkCacheInsert is the cost of a new key in a cache of n keys: the same for every n.
func BenchmarkCacheInsert(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var c cache[string, int]
			keys := make([]string, n+b.N)
			for i := range keys {
				keys[i] = "k" + strings.Repeat("x", i%8) + fmt.Sprint(i)
			}
			for _, k := range keys[:n] {
				c.get(k, func(string) int { return 1 })
			}
			b.ResetTimer()
			for i := range b.N {
				c.get(keys[n+i], func(string) int { return 1 })
			}
		})
	}
}

// TestHeadroom: the gauge is read at scrape time, and a headroom that cannot be estimated leaves
// the series out instead of failing the scrape.
func TestHeadroom(t *testing.T) {
	reg := prometheus.NewRegistry()
	var err error
	value := uint64(17536 << 20)
	RegisterHeadroom(reg, func() (uint64, error) { return value, err })
	const head = `# HELP hotplug_agent_memory_hotadd_headroom_bytes Largest memory hot-add, in whole memory blocks, this machine can take now: its memmap and page tables, allocated from kernel memory at add time, fit above the zones' high watermarks and leave the reserve free.
# TYPE hotplug_agent_memory_hotadd_headroom_bytes gauge
`
	for _, want := range []string{"1.8387828736e+10", "1.34217728e+08"} {
		if err := testutil.GatherAndCompare(reg, strings.NewReader(head+"hotplug_agent_memory_hotadd_headroom_bytes "+want+"\n")); err != nil {
			t.Error(err)
		}
		value = 128 << 20
	}
	err = fmt.Errorf("headroom: no zoneinfo")
	if n, gerr := testutil.GatherAndCount(reg); n != 0 || gerr != nil {
		t.Errorf("with an error: %d series, %v; want none and no error", n, gerr)
	}
}

// TestMemoryOnlinedAndZonePlans: every series exists from the start, and values from outside
// (an onliner, a valid_zones) cannot add any.
func TestMemoryOnlinedAndZonePlans(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "test")
	m.MemoryOnlined("agent", "Movable")
	m.MemoryOnlined("agent", "Normal")
	m.MemoryOnlined("kernel", "DMA32")
	m.MemoryOnlined("udev", "Movable")
	m.MemoryOnlined("other", "none")
	m.MemoryOnlined("other", "")
	m.ZonePlanned("acpi", "movable")
	m.ZonePlanned("virtio-mem", "kernel")
	m.ZonePlanned("dax", "sideways")
	want := `
# HELP hotplug_agent_memory_blocks_onlined_total Memory blocks that came online, by who onlined them (agent: the agent wrote their state; kernel: the kernel's auto-online was on; other: a udev rule, daxctl, an administrator) and the zone they joined (movable, kernel; unknown when it could not be read).
# TYPE hotplug_agent_memory_blocks_onlined_total counter
hotplug_agent_memory_blocks_onlined_total{onliner="agent",zone="kernel"} 1
hotplug_agent_memory_blocks_onlined_total{onliner="agent",zone="movable"} 1
hotplug_agent_memory_blocks_onlined_total{onliner="agent",zone="unknown"} 0
hotplug_agent_memory_blocks_onlined_total{onliner="kernel",zone="kernel"} 1
hotplug_agent_memory_blocks_onlined_total{onliner="kernel",zone="movable"} 0
hotplug_agent_memory_blocks_onlined_total{onliner="kernel",zone="unknown"} 0
hotplug_agent_memory_blocks_onlined_total{onliner="other",zone="kernel"} 0
hotplug_agent_memory_blocks_onlined_total{onliner="other",zone="movable"} 1
hotplug_agent_memory_blocks_onlined_total{onliner="other",zone="unknown"} 2
# HELP hotplug_agent_zone_plan_blocks_total Memory blocks the zone planner (online policy planned) brought online, by the kind of their memory device (acpi, virtio-mem, none) and the zone it chose (movable, kernel).
# TYPE hotplug_agent_zone_plan_blocks_total counter
hotplug_agent_zone_plan_blocks_total{device="acpi",zone="kernel"} 0
hotplug_agent_zone_plan_blocks_total{device="acpi",zone="movable"} 1
hotplug_agent_zone_plan_blocks_total{device="none",zone="kernel"} 1
hotplug_agent_zone_plan_blocks_total{device="none",zone="movable"} 0
hotplug_agent_zone_plan_blocks_total{device="virtio-mem",zone="kernel"} 1
hotplug_agent_zone_plan_blocks_total{device="virtio-mem",zone="movable"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "hotplug_agent_memory_blocks_onlined_total", "hotplug_agent_zone_plan_blocks_total"); err != nil {
		t.Error(err)
	}
}
