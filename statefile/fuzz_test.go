package statefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzLoad checks that Load never panics on any file, that its errors are one line naming the
// file, and that whatever it accepts is valid: no event ID above MaxEventID, and Save writes it
// back and Load gives the same state.
// More seeds (every corruption class of TestLoadRejects) are in testdata/fuzz/FuzzLoad.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte(withInterface(cpuRecord("/sys/devices/system/cpu/../cpu0", 0))))
	f.Add([]byte(strings.Replace(valid, `"last_event_id": 0`, `"last_event_id": 18446744073709551615`, 1)))
	f.Add([]byte(withPending(`"id": 7, "event": "arrival", "cause": "uevent", "seqnum": 817, "read_at": "2026-11-21T23:50:00.123456789+01:00", "interface": ` +
		cpuRecord("/sys/devices/system/cpu/cpu1", 1))))
	f.Add([]byte(withField(`"instance": "0b5e2e62-6a53-4a8b-9a55-1f3b5b8c2d10", "memory_device_callbacks": [{"name": "d", "class_guid": "` + memory +
		`", "view_devices": [` + deviceRec + `], "pending": [{"id": 1, "event": "removal", "cause": "startup", "read_at": "2026-11-21T23:50:00Z", "device": ` + deviceRec + `}]}]`)))
	f.Add([]byte(withField(`"cpusets": [{"name": "w", "resource": "cpus", "known": "0-3", "gone": "3", "cgroups": [{"path": ".", "held": "0-2"}, {"path": "docker/a", "held": "0", "owed": "3"}]}]`)))
	dir := f.TempDir()
	path := filepath.Join(dir, "state.json")
	again := filepath.Join(dir, "again.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Load(path)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "statefile: load "+path+": ") || strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("Load error %q: want one line beginning with the path", msg)
			}
			return
		}
		if s.LastEventID > MaxEventID || s.MemoryDeviceLastEventID > MaxEventID {
			t.Fatalf("Load accepted event IDs %d and %d, above %d", s.LastEventID, s.MemoryDeviceLastEventID, uint64(MaxEventID))
		}
		if err := Save(again, s); err != nil {
			t.Fatalf("Save of a state Load accepted: %v", err)
		}
		back, err := Load(again)
		if err != nil {
			t.Fatalf("Load of a state Save wrote: %v", err)
		}
		if diff := cmp.Diff(s, back); diff != "" {
			t.Fatalf("Save then Load changed the state (-loaded +reloaded):\n%s", diff)
		}
	})
}
