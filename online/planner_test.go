package online

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const blockPages = 128 << 20 >> 12 // a 128 MiB block of 4 KiB pages

// gib returns n GiB in 4 KiB pages.
func gib(n float64) uint64 { return uint64(n * (1 << 30) / 4096) }

// machine simulates one node's zones as the planner's decisions fill them.
type machine struct {
	ratio int
	scope Scope
	dimms int
}

func newMachine(ratio int, early uint64) *machine {
	return &machine{ratio: ratio, scope: Scope{EarlyKernel: early, Dynamic: map[string]DevicePages{}}}
}

// dimm hot-adds a DIMM of n blocks, onlined block by block as the kernel does, and returns its
// layout: one letter per block, M for MOVABLE, K for KERNEL.
func (m *machine) dimm(n int) string {
	m.dimms++
	var d DevicePages
	var out strings.Builder
	for range n {
		z := Plan(m.ratio, Target{Kind: StaticDevice, ID: fmt.Sprint("PNP0C80:", m.dimms), Online: d, Size: uint64(n) * blockPages, Block: blockPages}, m.scope)
		m.online(z, &d)
		out.WriteString(letter(z))
	}
	return out.String()
}

// grow plugs n more blocks into the virtio-mem device id and returns their layout.
func (m *machine) grow(id string, n int) string {
	var out strings.Builder
	for range n {
		d := m.scope.Dynamic[id]
		z := Plan(m.ratio, Target{Kind: DynamicDevice, ID: id, Online: d, Block: blockPages}, m.scope)
		m.online(z, &d)
		m.scope.Dynamic[id] = d
		out.WriteString(letter(z))
	}
	return out.String()
}

// block onlines one block of no device.
func (m *machine) block() string {
	z := Plan(m.ratio, Target{Block: blockPages}, m.scope)
	m.online(z, &DevicePages{})
	return letter(z)
}

func (m *machine) online(z Zone, d *DevicePages) {
	if z == ZoneMovable {
		m.scope.Movable += blockPages
		d.Movable += blockPages
	} else {
		d.Kernel += blockPages // hot-added: not early
	}
}

func letter(z Zone) string {
	if z == ZoneMovable {
		return "M"
	}
	return "K"
}

// repeat returns s n times.
func repeat(s string, n int) string { return strings.Repeat(s, n) }

// TestPlanKernelExamples replays the examples the kernel's documentation and the auto-movable
// patches give for the default ratio of 301%: the planner must lay memory out as the kernel does.
func TestPlanKernelExamples(t *testing.T) {
	// A 4 GiB VM (a little less is present: firmware keeps some pages).
	early4 := gib(4) - 512
	for _, tc := range []struct {
		name string
		run  func(m *machine) []string
		want []string
	}{
		{
			// "hotplugging 4 GiB DIMMs to a 4 GiB VM with a configured ratio of 301% results in":
			// three DIMMs Movable, then all Normal ("hotplugged Normal memory does not allow for
			// more Movable memory").
			name: "4 GiB VM, 4 GiB DIMMs",
			run: func(m *machine) []string {
				var out []string
				for range 6 {
					out = append(out, m.dimm(32))
				}
				return out
			},
			want: []string{repeat("M", 32), repeat("M", 32), repeat("M", 32), repeat("K", 32), repeat("K", 32), repeat("K", 32)},
		},
		{
			// "using a simple, single virtio-mem device with a 4 GiB VM": blocks 48-143 Movable
			// (the first 12 GiB), 144 Normal, 145-147 Movable, 148 Normal, 149-151 Movable, ...
			name: "4 GiB VM, one virtio-mem device",
			run: func(m *machine) []string {
				return []string{m.grow("virtio5", 96), m.grow("virtio5", 12)}
			},
			want: []string{repeat("M", 96), repeat("KMMM", 3)},
		},
		{
			// memory-hotplug.rst: the default "allows for hotplugging 24 GiB to a 8 GiB VM and
			// automatically onlining all hotplugged memory to ZONE_MOVABLE".
			name: "8 GiB VM, 24 GiB hot-added",
			run: func(m *machine) []string {
				m.scope.EarlyKernel = gib(8) - 256
				return []string{m.dimm(64), m.grow("virtio5", 128), m.block()}
			},
			want: []string{repeat("M", 64), repeat("M", 128), "K"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(DefaultMovableRatio, early4)
			if diff := cmp.Diff(tc.want, tc.run(m)); diff != "" {
				t.Errorf("layout (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	early := gib(1)
	for _, tc := range []struct {
		name   string
		ratio  int
		target Target
		scopes []Scope
		want   Zone
	}{
		{"ratio 0: always kernel", 0, Target{Block: blockPages}, []Scope{{EarlyKernel: early}}, ZoneKernel},
		{"no scope to keep", 301, Target{Block: blockPages}, nil, ZoneMovable},
		{"a block within the ratio", 301, Target{Block: blockPages}, []Scope{{EarlyKernel: early, Movable: gib(2.5)}}, ZoneMovable},
		{"a block at exactly the ratio", 300, Target{Block: blockPages}, []Scope{{EarlyKernel: early, Movable: gib(3) - blockPages}}, ZoneMovable},
		{"a block beyond the ratio", 300, Target{Block: blockPages}, []Scope{{EarlyKernel: early, Movable: gib(3)}}, ZoneKernel},
		{"no kernel memory", 301, Target{Block: blockPages}, []Scope{{}}, ZoneKernel},
		{"a DIMM that fits whole", 301, Target{Kind: StaticDevice, Size: gib(3), Block: blockPages}, []Scope{{EarlyKernel: early}}, ZoneMovable},
		{"a DIMM that does not fit whole", 301, Target{Kind: StaticDevice, Size: gib(3.5), Block: blockPages}, []Scope{{EarlyKernel: early}}, ZoneKernel},
		{"the rest of a DIMM half online movable", 301,
			Target{Kind: StaticDevice, Size: gib(3), Online: DevicePages{Movable: gib(1.5)}, Block: blockPages},
			[]Scope{{EarlyKernel: early, Movable: gib(1.5)}}, ZoneMovable},
		{"the rest of a DIMM with a kernel block", 301,
			Target{Kind: StaticDevice, Size: gib(1), Online: DevicePages{Kernel: blockPages}, Block: blockPages},
			[]Scope{{EarlyKernel: early}}, ZoneKernel},
		{"the machine fits, the node does not", 301, Target{Block: blockPages},
			[]Scope{{EarlyKernel: gib(4)}, {EarlyKernel: gib(0.03)}}, ZoneKernel},
		{"the node fits, the machine does not", 301, Target{Block: blockPages},
			[]Scope{{EarlyKernel: gib(1), Movable: gib(3)}, {EarlyKernel: gib(1)}}, ZoneKernel},
		{"virtio-mem's own kernel blocks allow more movable ones", 301,
			Target{Kind: DynamicDevice, ID: "virtio5", Online: DevicePages{Movable: gib(5.5), Kernel: gib(1)}, Block: blockPages},
			[]Scope{{EarlyKernel: early, Movable: gib(5.5), Dynamic: map[string]DevicePages{"virtio5": {Movable: gib(5.5), Kernel: gib(1)}}}},
			ZoneMovable},
		{"another virtio-mem device's kernel blocks do not", 301,
			Target{Kind: DynamicDevice, ID: "virtio6", Block: blockPages},
			[]Scope{{EarlyKernel: early, Movable: gib(6), Dynamic: map[string]DevicePages{"virtio5": {Movable: gib(6), Kernel: gib(1)}}}},
			ZoneKernel},
		{"a DIMM after a virtio-mem device that backs itself", 301,
			Target{Kind: StaticDevice, Size: gib(3), Block: blockPages},
			[]Scope{{EarlyKernel: early, Movable: gib(3), Dynamic: map[string]DevicePages{"virtio5": {Movable: gib(3), Kernel: gib(1)}}}},
			ZoneMovable},
		{"a DIMM after a virtio-mem device that took the boot kernel memory", 301,
			Target{Kind: StaticDevice, Size: gib(1), Block: blockPages},
			[]Scope{{EarlyKernel: early, Movable: gib(3), Dynamic: map[string]DevicePages{"virtio5": {Movable: gib(3)}}}},
			ZoneKernel},
		{"a virtio-mem device needing more than the boot kernel memory", 301,
			Target{Block: blockPages},
			[]Scope{{EarlyKernel: early, Movable: gib(4), Dynamic: map[string]DevicePages{"virtio5": {Movable: gib(4)}}}},
			ZoneKernel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Plan(tc.ratio, tc.target, tc.scopes...); got != tc.want {
				t.Errorf("Plan = %v; want %v", got, tc.want)
			}
		})
	}
}

// TestPlanNeverExceedsTheRatio grows a machine by random devices and checks after each block
// that MOVABLE stays within the ratio of what backs it: the boot KERNEL memory and each dynamic
// device's own KERNEL memory.
func TestPlanNeverExceedsTheRatio(t *testing.T) {
	for _, ratio := range []int{100, 301, 500} {
		m := newMachine(ratio, gib(2))
		seed := uint64(ratio)
		next := func(n uint64) uint64 { seed = seed*6364136223846793005 + 1442695040888963407; return (seed >> 33) % n }
		for step := range 200 {
			switch next(3) {
			case 0:
				m.dimm(int(1 + next(16)))
			case 1:
				m.grow(fmt.Sprint("virtio", next(3)), int(1+next(24)))
			default:
				m.block()
			}
			backing := m.scope.EarlyKernel
			for _, d := range m.scope.Dynamic {
				backing += d.Kernel
			}
			if limit := uint64(ratio) * backing / 100; m.scope.Movable > limit {
				t.Fatalf("ratio %d, step %d: %d MOVABLE pages beyond the limit of %d", ratio, step, m.scope.Movable, limit)
			}
		}
	}
}
