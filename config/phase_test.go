package config

import (
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

func TestParseKinds(t *testing.T) {
	c, err := Parse([]byte(`
two_phase:
  timeout: 3s
  on_timeout: consent
callbacks:
  - name: pool
    kind: two_phase
    class: processor
    include_existing: true
    exec: {command: [/bin/sh]}
  - name: guard
    kind: target_device
    target: /sys/devices/system/memory/memory0
    log: true
  - name: plain
    class: memory
    log: true
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.TwoPhase.VetoTimeout() != 3*time.Second || !c.TwoPhase.ConsentOnTimeout() {
		t.Errorf("two_phase = %+v; want 3s, consent", c.TwoPhase)
	}
	want := []struct {
		kind  string
		class string
	}{{KindTwoPhase, "processor"}, {KindTargetDevice, "memory"}, {KindDeviceInterface, "memory"}}
	for i, w := range want {
		cb := c.Callbacks[i]
		if cb.Kind != w.kind || notify.ClassName(cb.ClassGUID) != w.class {
			t.Errorf("callbacks[%d] kind %q class %s; want %q %s", i, cb.Kind, notify.ClassName(cb.ClassGUID), w.kind, w.class)
		}
	}
	d, _ := Parse(nil)
	if d.TwoPhase.VetoTimeout() != 10*time.Second || d.TwoPhase.ConsentOnTimeout() {
		t.Errorf("default two_phase = %v, consent %v; want 10s, veto", d.TwoPhase.VetoTimeout(), d.TwoPhase.ConsentOnTimeout())
	}
}

func TestParseKindErrors(t *testing.T) {
	for _, tt := range []struct{ name, doc, want string }{
		{"unknown kind", "callbacks:\n  - {name: a, kind: sync, class: memory, log: true}", `callbacks[0].kind: "sync": want device_interface, two_phase or target_device`},
		{"two-phase of a GUID", "callbacks:\n  - {name: a, kind: two_phase, class: '4d36e967-e325-11ce-bfc1-08002be10318', log: true}", "callbacks[0].class: kind two_phase needs class processor or memory"},
		{"two-phase without class", "callbacks:\n  - {name: a, kind: two_phase, log: true}", "callbacks[0].class: kind two_phase needs"},
		{"two-phase webhook", "callbacks:\n  - {name: a, kind: two_phase, class: processor, webhook: {url: 'http://h'}}", "callbacks[0].webhook: kind two_phase takes exec or log"},
		{"target without link", "callbacks:\n  - {name: a, kind: target_device, log: true}", "callbacks[0].target: required"},
		{"target bad link", "callbacks:\n  - {name: a, kind: target_device, target: /sys/bus/cpu/devices/cpu1, log: true}", "callbacks[0].target: symbolic link"},
		{"target class mismatch", "callbacks:\n  - {name: a, kind: target_device, class: memory, target: /sys/devices/system/cpu/cpu1, log: true}", "callbacks[0].class: memory, but the target"},
		{"memory devices of processors", "callbacks:\n  - {name: a, class: processor, memory_devices: true, log: true}", "callbacks[0].memory_devices: only with kind device_interface and class memory"},
		{"memory devices two-phase", "callbacks:\n  - {name: a, kind: two_phase, class: memory, memory_devices: true, log: true}", "callbacks[0].memory_devices"},
		{"target include existing", "callbacks:\n  - {name: a, kind: target_device, target: /sys/devices/system/cpu/cpu1, include_existing: true, log: true}", "callbacks[0].include_existing"},
		{"target on an interface callback", "callbacks:\n  - {name: a, class: processor, target: /sys/devices/system/cpu/cpu1, log: true}", "callbacks[0].target: only with kind: target_device"},
		{"negative veto timeout", "two_phase: {timeout: -1s}", "two_phase.timeout: -1s"},
		{"bad on_timeout", "two_phase: {on_timeout: ignore}", `two_phase.on_timeout: "ignore": want veto or consent`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Parse = %v; want one line containing %q", err, tt.want)
			}
		})
	}
}
