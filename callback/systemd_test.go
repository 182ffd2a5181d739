package callback

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
	"github.com/google/go-cmp/cmp"
)

// fakeSystemd holds units' masks and records the changes asked.
type fakeSystemd struct {
	masks   map[string][]byte
	changes []string
}

func (f *fakeSystemd) GetUnitTypePropertyContext(_ context.Context, unit, typ, prop string) (*sdbus.Property, error) {
	return &sdbus.Property{Name: prop, Value: dbus.MakeVariant(f.masks[unit])}, nil
}

func (f *fakeSystemd) SetUnitPropertiesContext(_ context.Context, unit string, runtime bool, ps ...sdbus.Property) error {
	for _, p := range ps {
		b := p.Value.Value().([]byte)
		f.masks[unit] = b
		f.changes = append(f.changes, unit+" "+p.Name+"="+formatSet(maskSet(b))+map[bool]string{true: " runtime", false: ""}[runtime])
	}
	return nil
}

func formatSet(s set) string {
	out := ""
	for i, n := range s.list() {
		if i > 0 {
			out += ","
		}
		out += string(rune('0' + n))
	}
	return out
}

func TestSystemdMask(t *testing.T) {
	for _, l := range [][]int{{0}, {0, 1}, {2}, {7, 8}, {0, 9, 17}} {
		if got := maskSet(setMask(setOf(l))).list(); !cmp.Equal(got, l) {
			t.Errorf("mask round trip of %v = %v", l, got)
		}
	}
	if got := setMask(setOf([]int{0, 1, 2})); !cmp.Equal(got, []byte{7}) {
		t.Errorf("setMask(0-2) = %v; want [7], as systemd encodes it", got)
	}
}

func TestSystemdNewCPU(t *testing.T) {
	sys := t.TempDir()
	os.MkdirAll(filepath.Join(sys, "devices/system/cpu"), 0o755)
	online := filepath.Join(sys, "devices/system/cpu/online")
	os.WriteFile(online, []byte("0-1\n"), 0o644)
	f := &fakeSystemd{masks: map[string][]byte{"wide.service": {3}, "narrow.service": {1}, "free.slice": nil, "other.service": {3}}}
	s, err := NewSystemd(context.Background(), SystemdOptions{Name: "t", Units: []string{"wide.service", "narrow.service", "free.slice"}, SysfsPath: sys, Conn: f})
	if err != nil {
		t.Fatal(err)
	}
	cb := s.Callback()
	// cpu1 was online at start: its arrival (after an offline) is not of a new CPU.
	if err := cb(context.Background(), cpusetNote("arrival", 1), nil); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(online, []byte("0-2\n"), 0o644)
	if err := cb(context.Background(), cpusetNote("arrival", 2), nil); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"wide.service AllowedCPUs=0,1,2 runtime"}, f.changes); d != "" {
		t.Errorf("changes asked of systemd (-want +got):\n%s", d)
	}
	if got := s.Memory().Known; !cmp.Equal(got, []int{0, 1, 2}) {
		t.Errorf("Memory().Known = %v; want [0 1 2]", got)
	}
}
