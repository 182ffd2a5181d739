package statefile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

var savedAt = time.Date(2026, 11, 21, 23, 50, 0, 0, time.UTC)

func cpu(n int) notify.Interface {
	return notify.Interface{
		ClassGUID:    notify.GUIDDeviceProcessor,
		SymbolicLink: fmt.Sprintf("/sys/devices/system/cpu/cpu%d", n),
		Number:       n,
		Node:         0,
		State:        "online",
	}
}

func mem(n int) notify.Interface {
	return notify.Interface{
		ClassGUID:    notify.GUIDDeviceMemory,
		SymbolicLink: fmt.Sprintf("/sys/devices/system/memory/memory%d", n),
		Number:       n,
		Node:         -1,
		PhysStart:    uint64(n) << 27,
		Size:         128 << 20,
		State:        "online",
		Zones:        "Normal Movable",
	}
}

// dirNames lists the names in dir, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   State
		want State // zero: in
	}{
		{"nothing announced", State{Version: 1, Interfaces: []notify.Interface{}, SavedAt: savedAt}, State{}},
		{"nil interfaces", State{SavedAt: savedAt},
			State{Version: 1, Interfaces: []notify.Interface{}, SavedAt: savedAt}},
		{"processors and memory, sorted on save",
			State{Interfaces: []notify.Interface{mem(33), cpu(1), mem(0), cpu(0), cpu(10)}, LastEventID: 42, SavedAt: savedAt},
			State{Version: 1, Interfaces: []notify.Interface{cpu(0), cpu(1), cpu(10), mem(0), mem(33)}, LastEventID: 42, SavedAt: savedAt}},
		{"node unknown, going offline, large numbers",
			State{Version: 1, Interfaces: []notify.Interface{
				{ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: "/sys/devices/system/cpu/cpu999999999", Number: 999999999, Node: -1, State: "offline"},
				{ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: "/sys/devices/system/memory/memory7", Number: 7, Node: 3,
					PhysStart: 1 << 63, Size: 1<<64 - 1, State: "going-offline", Zones: "é \"quoted\"\ttab"},
			}, LastEventID: MaxEventID, SavedAt: savedAt, MemoryDeviceLastEventID: MaxEventID}, State{}},
		{"cpuset callbacks",
			State{Version: 1, Interfaces: []notify.Interface{}, SavedAt: savedAt, Cpusets: map[string]Cpuset{
				"workloads": {Resource: "cpus", Known: []int{0, 1, 2, 3}, Gone: []int{3},
					Held: map[string][]int{".": {0, 1, 2}, "docker/abc": {0, 2}}, Owed: map[string][]int{"docker/abc": {3}}},
				"mem": {Resource: "mems", Known: []int{0}, Held: map[string][]int{}, Owed: map[string][]int{}},
			}}, State{}},
		{"memory devices",
			State{Interfaces: []notify.Interface{mem(36), mem(32), mem(33), mem(34), mem(35)}, SavedAt: savedAt,
				MemoryDevices: []notify.Interface{dimm("PNP0C80:01", 36, 36), dimm("PNP0C80:00", 32, 35)}, MemoryDeviceLastEventID: 7},
			State{Version: 1, Interfaces: []notify.Interface{mem(32), mem(33), mem(34), mem(35), mem(36)}, SavedAt: savedAt,
				MemoryDevices: []notify.Interface{dimm("PNP0C80:00", 32, 35), dimm("PNP0C80:01", 36, 36)}, MemoryDeviceLastEventID: 7}},
		{"clean shutdown", State{Version: 1, Interfaces: []notify.Interface{cpu(0)}, LastEventID: 9, SavedAt: savedAt, Clean: true}, State{}},
		{"what is present", State{Version: 1, Interfaces: []notify.Interface{cpu(0)}, SavedAt: savedAt,
			Present: &Present{CPUs: []int{0, 1, 2, 3, 8}, MemoryBlocks: []int{0, 1, 32, 33}}}, State{}},
		{"boot memory", State{Version: 1, Interfaces: []notify.Interface{cpu(0)}, SavedAt: savedAt,
			BootMemory: &BootMemory{BootID: "4c7e0f5a-2b1d-4e8a-9f3c-6d5b2a1e0c97", Blocks: []int{0, 1, 2, 3, 4, 5, 6, 7, 16}}}, State{}},
		{"memory blocks beyond the largest CPU number", State{Version: 1, SavedAt: savedAt,
			Interfaces:    []notify.Interface{cpu(0), mem(1 << 20), mem(1<<20 + 1), mem(999_999_999)},
			MemoryDevices: []notify.Interface{dimm("PNP0C80:00", 1<<20, 1<<20+1), dimm("PNP0C80:01", 999_999_999, 999_999_999)},
			Present:       &Present{CPUs: []int{0}, MemoryBlocks: []int{0, 1 << 20, 1<<20 + 1, 999_999_999}}}, State{}},
		{"nothing present", State{Version: 1, Interfaces: []notify.Interface{}, SavedAt: savedAt,
			Present: &Present{CPUs: []int{}, MemoryBlocks: []int{}}}, State{}},
		{"saved at in another zone", State{Version: 1, Interfaces: []notify.Interface{cpu(2)},
			SavedAt: savedAt.In(time.FixedZone("CET", 3600))}, State{}},
		{"callbacks' cursors", State{Version: 1, Interfaces: []notify.Interface{cpu(0), cpu(2), mem(32), mem(33)}, LastEventID: 44, SavedAt: savedAt,
			MemoryDevices: []notify.Interface{dimm("PNP0C80:00", 32, 33)}, MemoryDeviceLastEventID: 3,
			Instance: uuid.MustParse("0b5e2e62-6a53-4a8b-9a55-1f3b5b8c2d10"),
			Callbacks: map[string]notify.Cursor{
				"grow-pool": {Class: notify.GUIDDeviceProcessor, View: []notify.Interface{cpu(0), cpu(1)}, Pending: []notify.Notification{
					pending(notify.GUIDDeviceInterfaceRemoval, cpu(1), 43, 817, notify.CauseUevent),
					pending(notify.GUIDDeviceInterfaceArrival, cpu(2), 44, 0, notify.CauseResync),
				}},
				"idle":    {Class: notify.GUIDDeviceProcessor},
				"blocks":  {Class: notify.GUIDDeviceMemory, View: []notify.Interface{mem(32), mem(33)}},
				"other.1": {Class: uuid.MustParse("53f56307-b6bf-11d0-94f2-00a0c91efb8b")},
			},
			MemoryDeviceCallbacks: map[string]notify.Cursor{
				"per-dimm": {Class: notify.GUIDDeviceMemory, Pending: []notify.Notification{
					pending(notify.GUIDDeviceInterfaceArrival, dimm("PNP0C80:00", 32, 33), 3, 0, notify.CauseStartup),
				}},
			},
		}, State{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "var", "lib", "hotplug-agent")
			path := filepath.Join(dir, "state.json")
			in := slices.Clone(tt.in.Interfaces)
			if err := Save(path, tt.in); err != nil {
				t.Fatalf("Save: %v", err)
			}
			if !slices.Equal(in, tt.in.Interfaces) {
				t.Errorf("Save reordered the caller's slice")
			}
			got, err := Load(path)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := tt.want
			if want.Version == 0 {
				want = tt.in
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Load after Save (-want +got):\n%s", diff)
			}
			for p, mode := range map[string]fs.FileMode{path: 0o600, dir: 0o700 | fs.ModeDir} {
				if fi, err := os.Stat(p); err != nil || fi.Mode() != mode {
					t.Errorf("%s: mode %v (%v); want %v", p, fi.Mode(), err, mode)
				}
			}
			if names := dirNames(t, dir); !slices.Equal(names, []string{"state.json"}) {
				t.Errorf("directory holds %q after Save; want only state.json", names)
			}
		})
	}
}

// TestWrite: Write writes the state as Save does, only without waiting for the disk and beside
// the file, not over it; Load takes what it wrote until the next Save, which removes it.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if side := sidePath(path); side != filepath.Join(dir, ".state.json.unsynced") {
		t.Fatalf("sidePath(%s) = %s; want .state.json.unsynced beside it", path, side)
	}
	for k, s := range []State{
		{Version: 1, Interfaces: []notify.Interface{cpu(0)}, LastEventID: 1, SavedAt: savedAt},
		{Version: 1, Interfaces: []notify.Interface{cpu(0), cpu(1)}, LastEventID: 2, SavedAt: savedAt,
			Callbacks: map[string]notify.Cursor{"cb": {Class: notify.GUIDDeviceProcessor, View: []notify.Interface{cpu(0)},
				Pending: []notify.Notification{pending(notify.GUIDDeviceInterfaceArrival, cpu(1), 2, 5, notify.CauseUevent)}}}},
	} {
		if err := Write(path, s); err != nil {
			t.Fatalf("Write %d: %v", k, err)
		}
		got, err := Load(path)
		if err != nil {
			t.Fatalf("Load after Write %d: %v", k, err)
		}
		if diff := cmp.Diff(s, got); diff != "" {
			t.Errorf("Load after Write %d (-want +got):\n%s", k, diff)
		}
		if names := dirNames(t, dir); !slices.Equal(names, []string{".state.json.unsynced"}) {
			t.Errorf("directory holds %q after Write; want only .state.json.unsynced", names)
		}
		if fi, err := os.Stat(sidePath(path)); err != nil {
			t.Errorf("the side file: %v", err)
		} else if fi.Mode() != 0o600 {
			t.Errorf("the side file has mode %v; want 0600", fi.Mode())
		}
	}
	saved := State{Version: 1, Interfaces: []notify.Interface{cpu(2)}, LastEventID: 3, SavedAt: savedAt}
	if err := Save(path, saved); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(path); err != nil || !cmp.Equal(saved, got) {
		t.Errorf("Load after Save = %+v, %v; want %+v", got, err, saved)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"state.json"}) {
		t.Errorf("directory holds %q after Save; want only state.json", names)
	}
	if err := Write(path, State{Interfaces: []notify.Interface{{ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: "/etc"}}}); err == nil {
		t.Errorf("Write of a state Load refuses: no error")
	}
}

// forgetSeqs forgets the files this process wrote and loaded, as a new process would.
func forgetSeqs() {
	seqMu.Lock()
	defer seqMu.Unlock()
	clear(seqs)
}

// TestWriteLeavesTheDurableFile: Write never replaces the file Save wrote durably, so that a crash
// of the machine before the next Save, which may leave what Write wrote empty (XFS, ext4 with
// noauto_da_alloc) or as it was before, costs what was written since that Save, not the whole
// state. Load passes over a side file that does not load, and one older than the file, which the
// wall clock cannot tell.
func TestWriteLeavesTheDurableFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	state := func(id uint64, at time.Time) State {
		return State{Version: 1, Interfaces: []notify.Interface{cpu(int(id))}, LastEventID: id, SavedAt: at}
	}
	load := func(want State, when string) {
		t.Helper()
		if got, err := Load(path); err != nil || !cmp.Equal(want, got) {
			t.Errorf("Load %s: last event ID %d, %v; want %d", when, got.LastEventID, err, want.LastEventID)
		}
	}
	saved := state(1, savedAt)
	if err := Save(path, saved); err != nil {
		t.Fatal(err)
	}
	durable, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// The clock went back an hour: the state written is newer all the same.
	written := state(2, savedAt.Add(-time.Hour))
	if err := Write(path, written); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(path)
	if now, _ := os.ReadFile(path); err != nil || !bytes.Equal(now, durable) || !os.SameFile(before, after) {
		t.Fatalf("Write replaced the file Save wrote durably")
	}
	load(written, "after Write")

	// A crash of the machine: what was written without waiting for the disk is lost, the side
	// file left empty, or cut short.
	for _, left := range []string{"", "{\n  \"version\": 1,\n"} {
		if err := os.WriteFile(sidePath(path), []byte(left), 0o600); err != nil {
			t.Fatal(err)
		}
		load(saved, fmt.Sprintf("with a side file holding %q", left))
	}

	// A side file older than the file: a crash undid a Save's removal of it.
	if err := Write(path, written); err != nil {
		t.Fatal(err)
	}
	stale, err := os.ReadFile(sidePath(path))
	if err != nil {
		t.Fatal(err)
	}
	third := state(3, savedAt.Add(-2*time.Hour))
	if err := Save(path, third); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sidePath(path), stale, 0o600); err != nil {
		t.Fatal(err)
	}
	load(third, "with a side file older than the file")

	// A process that has neither written nor loaded the file numbers its files after those there.
	forgetSeqs()
	fourth := state(4, savedAt.Add(-3*time.Hour))
	if err := Write(path, fourth); err != nil {
		t.Fatal(err)
	}
	forgetSeqs()
	load(fourth, "after a Write by another process")
}

func TestSavedAtDefaultsToNow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	before := time.Now()
	if err := Save(path, State{Interfaces: []notify.Interface{cpu(0)}}); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.SavedAt.Before(before.Truncate(time.Second)) || got.SavedAt.After(time.Now()) {
		t.Errorf("SavedAt = %v; want the time of Save (after %v)", got.SavedAt, before)
	}
}

func TestLoadMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	_, err := Load(path)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Load of a missing file: %v; want an error wrapping fs.ErrNotExist that names %s", err, path)
	}
}

// valid is a state file as Save writes it, with a processor and a memory block.
const valid = `{
  "version": 1,
  "saved_at": "2026-11-21T23:50:00Z",
  "last_event_id": 0,
  "interfaces": [
    {
      "class_guid": "97fadb10-4e33-40ae-359c-8bef029dbdd0",
      "symbolic_link": "/sys/devices/system/cpu/cpu1",
      "number": 1,
      "node": 0,
      "state": "online"
    },
    {
      "class_guid": "3fd0f03d-92e0-45fb-b75c-5ed8ffb01021",
      "symbolic_link": "/sys/devices/system/memory/memory32",
      "number": 32,
      "node": -1,
      "phys_start": 4294967296,
      "size": 134217728,
      "state": "online",
      "zones": "Normal"
    }
  ]
}
`

// withInterface is a valid file whose only interface is the JSON object rec.
func withInterface(rec string) string {
	return `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "interfaces": [` + rec + `]}`
}

func cpuRecord(link string, number int) string {
	return fmt.Sprintf(`{"class_guid": "97fadb10-4e33-40ae-359c-8bef029dbdd0", "symbolic_link": %q, "number": %d, "node": 0}`, link, number)
}

const (
	processor = "97fadb10-4e33-40ae-359c-8bef029dbdd0"
	memory    = "3fd0f03d-92e0-45fb-b75c-5ed8ffb01021"
	deviceRec = `{"id": "PNP0C80:00", "symbolic_link": "/sys/devices/PNP0C80:00", "blocks": "32-33", "node": 0, "phys_start": 0, "size": 0}`
)

// withField is a valid file with no interface and the JSON member field.
func withField(field string) string {
	return `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "interfaces": [], ` + field + `}`
}

// withCallback is a valid file whose callbacks are the JSON objects recs.
func withCallback(recs string) string { return withField(`"callbacks": [` + recs + `]`) }

// withPending is a valid file with one processor callback owed one notification, whose members
// are fields.
func withPending(fields string) string {
	return withCallback(`{"name": "a", "class_guid": "` + processor + `", "pending": [{` + fields + `}]}`)
}

// checkLoadError checks that err is a one-line error that names path and says want.
func checkLoadError(t *testing.T, err error, path, want string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("Load succeeded; want an error saying %q", want)
	case !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), want):
		t.Errorf("Load error %q; want one naming %s and saying %q", err, path, want)
	case strings.ContainsAny(err.Error(), "\n\r"):
		t.Errorf("Load error %q spans lines", err)
	}
}

func TestLoadRejects(t *testing.T) {
	if _, _, err := decode([]byte(valid)); err != nil {
		t.Fatalf("the valid file is refused: %v", err)
	}
	memRec := `{"class_guid": "3fd0f03d-92e0-45fb-b75c-5ed8ffb01021", "symbolic_link": "/sys/devices/system/memory/memory3", "number": 3, "node": 0}`
	tests := []struct {
		name, content, want string
	}{
		{"empty", "", "empty file"},
		{"blank", " \n\t\n", "empty file"},
		{"truncated", valid[:len(valid)/2], "truncated"},
		{"truncated inside a string", valid[:strings.Index(valid, "/sys/devices/system/mem")+8], "truncated"},
		{"NUL bytes", "\x00\x00\x00\x00", "not a valid state file"},
		{"garbage", "this is not\nJSON at all", "not a valid state file"},
		{"array", `[{"version": 1}]`, "a JSON array where an object is wanted"},
		{"string", `"version"`, "a JSON string where an object is wanted"},
		{"null", `null`, "no version field"},
		{"no version", `{"interfaces": []}`, "no version field"},
		{"version null", `{"version": null, "interfaces": []}`, "no version field"},
		{"version 2", strings.Replace(valid, `"version": 1`, `"version": 2`, 1), `format version "2": this agent reads version 1`},
		{"version 0", strings.Replace(valid, `"version": 1`, `"version": 0`, 1), `format version "0"`},
		{"version as a string", strings.Replace(valid, `"version": 1`, `"version": "1"`, 1), `format version "\"1\""`},
		{"version as an object", strings.Replace(valid, `"version": 1`, "\"version\": {\n\"major\": 1}", 1), `format version "{\n`},
		{"two documents", valid + valid, "more data after the JSON object (at byte 569)"},
		{"trailing garbage", valid + "x", "more data after the JSON object"},
		{"unknown field", strings.Replace(valid, `"last_event_id": 0`, `"last_event": 0`, 1), `unknown field "last_event"`},
		{"cpuset path escapes", `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "interfaces": [], "cpusets": [{"name": "w", "resource": "cpus", "known": "0", "cgroups": [{"path": "../etc", "held": "0"}]}]}`, `cpusets[0] (w): cgroups[0]: path "../etc": want a clean relative path`},
		{"cpuset bad resource", `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "interfaces": [], "cpusets": [{"name": "w", "resource": "io", "known": "0"}]}`, `cpusets[0] (w): resource "io": want cpus or mems`},
		{"cpuset bad list", `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "interfaces": [], "cpusets": [{"name": "w", "resource": "cpus", "known": "0", "cgroups": [{"path": "a", "held": "x"}]}]}`, `cpusets[0] (w): cgroups[0]: held "x": want a list like 0-3`},
		{"present CPUs not a list", `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "interfaces": [], "present": {"cpus": "3-1", "memory_blocks": ""}}`, "present.cpus"},
		{"boot memory of no boot", `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "interfaces": [], "boot_memory": {"boot_id": "", "blocks": "0-7"}}`, "boot_memory.boot_id"},
		{"boot memory not a list", `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "interfaces": [], "boot_memory": {"boot_id": "4c7e0f5a-2b1d-4e8a-9f3c-6d5b2a1e0c97", "blocks": "7-0"}}`, "boot_memory.blocks"},
		{"present blocks beyond any machine", `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "interfaces": [], "present": {"cpus": "0", "memory_blocks": "0-99999999"}}`,
			`present.memory_blocks: sysfs: invalid memory block list "0-99999999": 100000000 memory blocks, more than the 4194304 a list may hold`},
		{"present block beyond nine digits", `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "interfaces": [], "present": {"cpus": "0", "memory_blocks": "1000000000"}}`,
			`present.memory_blocks: sysfs: invalid memory block list "1000000000": item "1000000000": memory block number out of range (0 to 999999999)`},
		{"more list entries than a state file has", withInterface(strings.Repeat("{},", maxEntries) + "{}"), "262145 entries in lists, more than the 262144 a state file may have"},
		{"list entries written shorter than Save writes them", withInterface(strings.Repeat("{},", 99) + "{}"), "not a valid state file: 100 entries in lists in 367 bytes, fewer than 32 bytes each"},
		{"nested deeper than a state file", withField(`"x": ` + strings.Repeat("[", 17) + strings.Repeat("]", 17)), "not a valid state file: lists and objects nested more than 16 deep (at byte 89)"},
		{"cpuset list of more CPUs than a machine has", withField(`"cpusets": [{"name": "w", "resource": "cpus", "known": "0", "cgroups": [{"path": "a", "held": "0-1048575"}]}]`),
			`cpusets[0] (w): cgroups[0]: held "0-1048575": want a list like 0-3, of at most 16384 CPUs or nodes`},
		{"cpuset lists of more numbers than a state file holds", withField(`"cpusets": [{"name": "w", "resource": "cpus", "known": "0-16383", "cgroups": [` + cgroups(256, "0-16383") + `]}]`),
			"cpusets[0] (w): cgroups[255]: held: the lists of CPUs, nodes and memory blocks hold more than 4194304 numbers in all"},
		{"memory blocks of more numbers than a state file holds", strings.Replace(withDevice(deviceRec), `"interfaces"`, `"present": {"cpus": "0", "memory_blocks": "0-4194303"}, "interfaces"`, 1),
			"present.memory_blocks: the lists of CPUs, nodes and memory blocks hold more than 4194304 numbers in all"},
		{"unknown interface field", withInterface(`{"class_guid": "97fadb10-4e33-40ae-359c-8bef029dbdd0", "symbolic_link": "/sys/devices/system/cpu/cpu0", "number": 0, "online": true}`), `unknown field "online"`},
		{"number as a string", strings.Replace(valid, `"number": 1`, `"number": "1"`, 1), "field interfaces.number: string where int is wanted"},
		{"negative phys_start", strings.Replace(valid, `"phys_start": 4294967296`, `"phys_start": -1`, 1), "interfaces.phys_start: number -1 where uint64 is wanted"},
		{"no interfaces", `{"version": 1, "saved_at": "2026-11-21T23:50:00Z"}`, "no interfaces field"},
		{"interfaces null", `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "interfaces": null}`, "no interfaces field"},
		{"no saved_at", `{"version": 1, "interfaces": []}`, "no saved_at field"},
		{"bad saved_at", `{"version": 1, "saved_at": "yesterday", "interfaces": []}`, "not a valid state file"},
		{"class not a GUID", withInterface(`{"class_guid": "processor", "symbolic_link": "/sys/devices/system/cpu/cpu0", "number": 0}`), `interfaces[0]: class_guid "processor"`},
		{"class of disks", withInterface(`{"class_guid": "53f56307-b6bf-11d0-94f2-00a0c91efb8b", "symbolic_link": "/sys/devices/system/cpu/cpu0", "number": 0}`), "interfaces[0]: class 53f56307-b6bf-11d0-94f2-00a0c91efb8b is neither processor"},
		{"link of another number", withInterface(cpuRecord("/sys/devices/system/cpu/cpu4", 5)), `symbolic link "/sys/devices/system/cpu/cpu4" is not that of processor 5 (/sys/devices/system/cpu/cpu5)`},
		{"link of another class", withInterface(cpuRecord("/sys/devices/system/memory/memory0", 0)), "is not that of processor 0"},
		{"link leaving /sys/devices/system", withInterface(cpuRecord("/sys/devices/system/cpu/../../../cpu0", 0)), "is not that of processor 0"},
		{"link with a doubled slash", withInterface(cpuRecord("/sys/devices/system//cpu/cpu0", 0)), "is not that of processor 0"},
		{"link with a leading zero", withInterface(cpuRecord("/sys/devices/system/cpu/cpu01", 1)), "is not that of processor 1"},
		{"link with a trailing slash", withInterface(cpuRecord("/sys/devices/system/cpu/cpu1/", 1)), "is not that of processor 1"},
		{"link with a newline", withInterface(cpuRecord("/sys/devices/system/cpu/cpu1\n", 1)), `"/sys/devices/system/cpu/cpu1\n" is not that of processor 1`},
		{"link without /sys", withInterface(cpuRecord("/devices/system/cpu/cpu1", 1)), "is not that of processor 1"},
		{"negative number", withInterface(cpuRecord("/sys/devices/system/cpu/cpu-1", -1)), "processor number -1 out of range"},
		{"ten-digit number", withInterface(cpuRecord("/sys/devices/system/cpu/cpu1000000000", 1000000000)), "processor number 1000000000 out of range"},
		{"number beyond int", withInterface(`{"class_guid": "97fadb10-4e33-40ae-359c-8bef029dbdd0", "symbolic_link": "/sys/devices/system/cpu/cpu0", "number": 99999999999999999999}`), "where int is wanted"},
		{"node -2", withInterface(`{"class_guid": "97fadb10-4e33-40ae-359c-8bef029dbdd0", "symbolic_link": "/sys/devices/system/cpu/cpu0", "number": 0, "node": -2}`), "node -2 out of range"},
		{"device id with a slash", withDevice(`{"id": "../x", "symbolic_link": "/sys/devices/x", "blocks": "32", "node": 0, "phys_start": 0, "size": 0}`), `memory_devices[0]: id "../x"`},
		{"device link outside /sys/devices", withDevice(`{"id": "PNP0C80:00", "symbolic_link": "/etc/PNP0C80:00", "blocks": "32", "node": 0, "phys_start": 0, "size": 0}`), "is not a clean /sys/devices path"},
		{"device link not clean", withDevice(`{"id": "PNP0C80:00", "symbolic_link": "/sys/devices/../PNP0C80:00", "blocks": "32", "node": 0, "phys_start": 0, "size": 0}`), "is not a clean /sys/devices path"},
		{"device link of another id", withDevice(`{"id": "PNP0C80:00", "symbolic_link": "/sys/devices/PNP0C80:01", "blocks": "32", "node": 0, "phys_start": 0, "size": 0}`), "ending in the id"},
		{"device without blocks", withDevice(`{"id": "PNP0C80:00", "symbolic_link": "/sys/devices/PNP0C80:00", "blocks": "", "node": 0, "phys_start": 0, "size": 0}`), `blocks "": want a list`},
		{"device blocks beyond nine digits", withDevice(`{"id": "PNP0C80:00", "symbolic_link": "/sys/devices/PNP0C80:00", "blocks": "1000000000", "node": 0, "phys_start": 0, "size": 0}`), `blocks "1000000000": want a list`},
		{"device blocks not a list", withDevice(`{"id": "PNP0C80:00", "symbolic_link": "/sys/devices/PNP0C80:00", "blocks": "35-32", "node": 0, "phys_start": 0, "size": 0}`), `blocks "35-32": want a list`},
		{"device twice", withDevice(`{"id": "PNP0C80:00", "symbolic_link": "/sys/devices/PNP0C80:00", "blocks": "32", "node": 0, "phys_start": 0, "size": 0}, {"id": "PNP0C80:00", "symbolic_link": "/sys/devices/PNP0C80:00", "blocks": "33", "node": 0, "phys_start": 0, "size": 0}`), "memory_devices: PNP0C80:00 is listed twice"},
		{"unknown device field", withDevice(`{"id": "PNP0C80:00", "symbolic_link": "/sys/devices/PNP0C80:00", "blocks": "32", "online": true}`), `unknown field "online"`},
		{"duplicate", withInterface(memRec + "," + cpuRecord("/sys/devices/system/cpu/cpu0", 0) + "," + memRec), "interfaces: /sys/devices/system/memory/memory3 is listed twice"},
		{"last event id at the uint64 maximum", strings.Replace(valid, `"last_event_id": 0`, `"last_event_id": 18446744073709551615`, 1),
			"last_event_id 18446744073709551615 is above 4611686018427387904, the largest an agent gives"},
		{"last event id just above the largest", strings.Replace(valid, `"last_event_id": 0`, `"last_event_id": 4611686018427387905`, 1),
			"last_event_id 4611686018427387905 is above 4611686018427387904"},
		{"memory device last event id at the uint64 maximum", strings.Replace(valid, `"last_event_id": 0`, `"last_event_id": 0, "memory_device_last_event_id": 18446744073709551615`, 1),
			"memory_device_last_event_id 18446744073709551615 is above 4611686018427387904"},
		{"last event id beyond uint64", strings.Replace(valid, `"last_event_id": 0`, `"last_event_id": 18446744073709551616`, 1),
			"field last_event_id: number 18446744073709551616 where uint64 is wanted"},
		{"seq beyond any agent's", strings.Replace(valid, `"version": 1,`, `"version": 1, "seq": 4611686018427387905,`, 1),
			"seq 4611686018427387905 is above 4611686018427387904, the most files an agent writes"},
		{"instance not a UUID", withField(`"instance": "host-1"`), `instance "host-1": want a UUID`},
		{"instance nil", withField(`"instance": "00000000-0000-0000-0000-000000000000"`), `want a UUID`},
		{"callback name with a slash", withCallback(`{"name": "../x", "class_guid": "` + processor + `"}`), `callbacks[0]: name "../x"`},
		{"callback name empty", withCallback(`{"name": "", "class_guid": "` + processor + `"}`), `callbacks[0]: name ""`},
		{"callback twice", withCallback(`{"name": "a", "class_guid": "` + processor + `"}, {"name": "a", "class_guid": "` + processor + `"}`), "callbacks: a is listed twice"},
		{"callback class not a GUID", withCallback(`{"name": "a", "class_guid": "processor"}`), `callbacks[0] (a): class_guid "processor"`},
		{"callback view of another class", withCallback(`{"name": "a", "class_guid": "` + processor + `", "view": [` + memRec + `]}`), "view: /sys/devices/system/memory/memory3 is not of the callback's class"},
		{"callback view with a bad interface", withCallback(`{"name": "a", "class_guid": "` + processor + `", "view": [` + cpuRecord("/sys/devices/system/cpu/cpu4", 5) + `]}`), `callbacks[0] (a): view[0]: symbolic link "/sys/devices/system/cpu/cpu4" is not that of processor 5`},
		{"callback view twice", withCallback(`{"name": "a", "class_guid": "` + processor + `", "view": [` + cpuRecord("/sys/devices/system/cpu/cpu4", 4) + "," + cpuRecord("/sys/devices/system/cpu/cpu4", 4) + `]}`), "callbacks[0] (a): view: /sys/devices/system/cpu/cpu4 is listed twice"},
		{"callback with devices in its view", withCallback(`{"name": "a", "class_guid": "` + memory + `", "view_devices": [` + deviceRec + `]}`), "view_devices: only a memory-device callback"},
		{"pending event unknown", withPending(`"event": "query_remove", "cause": "uevent", "read_at": "2026-11-21T23:50:00Z", "interface": ` + cpuRecord("/sys/devices/system/cpu/cpu1", 1)), `pending[0]: event "query_remove"`},
		{"pending cause unknown", withPending(`"event": "arrival", "cause": "magic", "read_at": "2026-11-21T23:50:00Z", "interface": ` + cpuRecord("/sys/devices/system/cpu/cpu1", 1)), `pending[0]: cause "magic"`},
		{"pending id above the largest", withPending(`"id": 4611686018427387905, "event": "arrival", "cause": "uevent", "read_at": "2026-11-21T23:50:00Z", "interface": ` + cpuRecord("/sys/devices/system/cpu/cpu1", 1)), "id 4611686018427387905 is above"},
		{"pending id above the last given", withField(`"last_event_id": 5, "clean_shutdown": true, "callbacks": [{"name": "a", "class_guid": "` + processor +
			`", "pending": [{"id": 5, "event": "arrival", "cause": "uevent", "read_at": "2026-11-21T23:50:00Z", "interface": ` + cpuRecord("/sys/devices/system/cpu/cpu1", 1) +
			`}, {"id": 4000000, "event": "removal", "cause": "uevent", "read_at": "2026-11-21T23:50:00Z", "interface": ` + cpuRecord("/sys/devices/system/cpu/cpu1", 1) + `}]}]`),
			"callbacks[0] (a): pending[1]: id 4000000 is above last_event_id 5, the last given: not a state file an agent wrote"},
		{"memory-device pending id above the last given", withField(`"last_event_id": 9, "memory_device_last_event_id": 2, "memory_device_callbacks": [{"name": "d", "class_guid": "` + memory +
			`", "pending": [{"id": 3, "event": "removal", "cause": "startup", "read_at": "2026-11-21T23:50:00Z", "device": ` + deviceRec + `}]}]`),
			"memory_device_callbacks[0] (d): pending[0]: id 3 is above memory_device_last_event_id 2, the last given"},
		{"pending without an interface", withPending(`"event": "arrival", "cause": "uevent", "read_at": "2026-11-21T23:50:00Z"`), "names its interface (interface), not a device"},
		{"pending with a device", withPending(`"event": "arrival", "cause": "uevent", "read_at": "2026-11-21T23:50:00Z", "device": ` + deviceRec), "names its interface (interface), not a device"},
		{"pending of another class", withPending(`"event": "arrival", "cause": "uevent", "read_at": "2026-11-21T23:50:00Z", "interface": ` + memRec), "pending[0]: /sys/devices/system/memory/memory3 is not of the callback's class"},
		{"pending with a bad interface", withPending(`"event": "arrival", "cause": "uevent", "read_at": "2026-11-21T23:50:00Z", "interface": ` + cpuRecord("/sys/devices/system/cpu/cpu01", 1)), `callbacks[0] (a): pending[0].interface: symbolic link "/sys/devices/system/cpu/cpu01" is not that of processor 1`},
		{"pending unknown field", withPending(`"event": "arrival", "cause": "uevent", "read_at": "2026-11-21T23:50:00Z", "phase": "add_start", "interface": ` + cpuRecord("/sys/devices/system/cpu/cpu1", 1)), `unknown field "phase"`},
		{"device callback of the processor class", withField(`"memory_device_callbacks": [{"name": "a", "class_guid": "` + processor + `"}]`), "memory_device_callbacks[0] (a): class 97fadb10"},
		{"device callback with interfaces in its view", withField(`"memory_device_callbacks": [{"name": "a", "class_guid": "` + memory + `", "view": [` + memRec + `]}]`), "a memory-device callback's view is view_devices"},
		{"device callback's pending with an interface", withField(`"memory_device_callbacks": [{"name": "a", "class_guid": "` + memory + `", "pending": [{"event": "arrival", "cause": "uevent", "read_at": "2026-11-21T23:50:00Z", "interface": ` + memRec + `}]}]`), "names its device (device), not an interface"},
		{"device callback's bad device", withField(`"memory_device_callbacks": [{"name": "a", "class_guid": "` + memory + `", "view_devices": [{"id": "../x", "symbolic_link": "/sys/devices/x", "blocks": "32"}]}]`), `memory_device_callbacks[0] (a): view_devices[0]: id "../x"`},
		{"device callback's pending with a bad device", withField(`"memory_device_last_event_id": 1, "memory_device_callbacks": [{"name": "a", "class_guid": "` + memory +
			`", "pending": [{"id": 1, "event": "arrival", "cause": "uevent", "read_at": "2026-11-21T23:50:00Z", "device": ` + strings.Replace(deviceRec, "32-33", "33-32", 1) + `}]}]`),
			`memory_device_callbacks[0] (a): pending[0].device (PNP0C80:00): blocks "33-32": want a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			checkLoadError(t, err, path, tt.want)
			if err != nil && !errors.Is(err, ErrCorrupt) {
				t.Errorf("Load error %q does not wrap ErrCorrupt", err)
			}
			t.Log(err)
		})
	}
}

// cgroups is n cgroups of a cpuset callback, each holding the list held.
func cgroups(n int, held string) string {
	var l []string
	for k := range n {
		l = append(l, fmt.Sprintf(`{"path": "c%d", "held": %q}`, k, held))
	}
	return strings.Join(l, ", ")
}

// allocated returns the bytes that f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestLoadMemoryFollowsSize: what Load allocates for a file it refuses follows the file's size,
// however short its lists are written: entries shorter than Save writes them ("{}") are refused
// before any is decoded, a cpuset callback's list cannot stand for more CPUs than a machine has,
// and interfaces are all checked before any is made.
func TestLoadMemoryFollowsSize(t *testing.T) {
	tests := []struct{ name, content, want string }{
		{"cpuset cgroups holding a million CPUs each", withField(`"cpusets": [{"name": "w", "resource": "cpus", "known": "0", "cgroups": [` + cgroups(32, "0-1048575") + `]}]`),
			"want a list like 0-3, of at most 16384"},
		{"a million empty interfaces", withInterface(strings.Repeat("{},", 1<<20-1) + "{}"), "1048576 entries in lists"},
		{"empty pending notifications", withCallback(`{"name": "a", "class_guid": "` + processor + `", "pending": [` + strings.Repeat("{},", 1<<16-1) + "{}]}"),
			"65537 entries in lists in 196774 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			var err error
			n := allocated(func() { _, err = Load(path) })
			checkLoadError(t, err, path, tt.want)
			if limit := 8*uint64(len(tt.content)) + 1<<20; n > limit {
				t.Errorf("Load of %d bytes allocated %d MiB; want at most %d KiB", len(tt.content), n>>20, limit>>10)
			}
		})
	}
	t.Run("interfaces checked before made", func(t *testing.T) {
		recs := make([]recordJSON, 1<<16)
		for k := range recs {
			recs[k] = record(cpu(k))
		}
		recs[len(recs)-1].SymbolicLink = "/etc"
		var c checker
		var err error
		if n := allocated(func() { _, err = c.interfaces("interfaces", recs) }); err == nil || n > 1<<20 {
			t.Errorf("checking %d interfaces, the last one bad: %v, %d KiB allocated; want an error, and not the interfaces made", len(recs), err, n>>10)
		}
	})
}

// TestLoadEveryTruncation cuts a valid file at every byte: each cut that loses more than the
// final newline must be refused as truncated, with a one-line error.
func TestLoadEveryTruncation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	body := strings.TrimRight(valid, "\n")
	for n := range len(body) {
		if err := os.WriteFile(path, []byte(valid[:n]), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		want := "truncated"
		if strings.TrimSpace(valid[:n]) == "" {
			want = "empty file"
		}
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Load of the first %d of %d bytes: %v; want a one-line error saying %q", n, len(valid), err, want)
		}
	}
}

func TestLoadNotAFile(t *testing.T) {
	dir := t.TempDir()
	t.Run("oversized", func(t *testing.T) {
		path := filepath.Join(dir, "huge.json")
		// Sparse: the size is there without writing 64 MiB.
		if err := os.WriteFile(path, []byte(valid), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, MaxSize+1); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		checkLoadError(t, err, path, fmt.Sprintf("%d bytes, more than the %d", MaxSize+1, MaxSize))
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("Load error %q does not wrap ErrCorrupt", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		_, err := Load(dir)
		checkLoadError(t, err, dir, "is a directory")
	})
}

func TestSaveRefuses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	before := State{Interfaces: []notify.Interface{cpu(0)}, SavedAt: savedAt}
	if err := Save(path, before); err != nil {
		t.Fatal(err)
	}
	bad := cpu(3)
	bad.SymbolicLink = "/sys/devices/system/cpu/../cpu3"
	noClass := cpu(4)
	noClass.ClassGUID = notify.AllClasses
	tests := []struct {
		name string
		s    State
		want string
	}{
		{"version 2", State{Version: 2}, "format version 2"},
		{"bad link", State{Interfaces: []notify.Interface{cpu(1), bad}}, `symbolic link "/sys/devices/system/cpu/../cpu3" is not that of processor 3`},
		{"no class", State{Interfaces: []notify.Interface{noClass}}, "is neither processor"},
		{"duplicate", State{Interfaces: []notify.Interface{mem(1), cpu(1), mem(1)}}, "memory1 is listed twice"},
		{"pending above the last event ID", State{LastEventID: 5, Callbacks: map[string]notify.Cursor{"a": {Class: notify.GUIDDeviceProcessor,
			Pending: []notify.Notification{pending(notify.GUIDDeviceInterfaceArrival, cpu(1), 6, 0, notify.CauseUevent)}}}},
			"callbacks[0] (a): pending[0]: id 6 is above last_event_id 5"},
		{"CPU present beyond any machine", State{Present: &Present{CPUs: []int{1 << 20}}}, "present.cpus: sysfs: invalid CPU list"},
		{"more numbers than a state file holds", State{Present: &Present{CPUs: []int{0}, MemoryBlocks: numbers(1 << 22)}},
			"present.memory_blocks: the lists of CPUs, nodes and memory blocks hold more than 4194304 numbers in all"},
		{"more list entries than a state file has", State{Cpusets: map[string]Cpuset{"w": {Resource: "cpus", Held: manyCgroups(maxEntries)}}},
			"262145 entries in lists, more than the 262144 a state file may have"},
		{"memory block present beyond nine digits", State{Present: &Present{MemoryBlocks: []int{1_000_000_000}}},
			`present.memory_blocks: sysfs: invalid memory block list "1000000000"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Save(path, tt.s)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Save: %v; want an error naming %s and saying %q", err, path, tt.want)
			}
			got, err := Load(path)
			if err != nil || !cmp.Equal(got.Interfaces, before.Interfaces) {
				t.Errorf("after a refused Save, Load = %v, %v; want the earlier state", got.Interfaces, err)
			}
			if names := dirNames(t, dir); !slices.Equal(names, []string{"state.json"}) {
				t.Errorf("a refused Save left %q", names)
			}
		})
	}
	t.Run("path is a directory", func(t *testing.T) {
		err := Save(dir+"/", State{})
		if err == nil || !strings.Contains(err.Error(), "names a directory") {
			t.Errorf("Save(%s/): %v; want an error saying it names a directory", dir, err)
		}
	})
	t.Run("parent is a file", func(t *testing.T) {
		p := filepath.Join(path, "state.json")
		err := Save(p, State{})
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "mkdir") {
			t.Errorf("Save(%s): %v; want an error naming it and saying mkdir failed", p, err)
		}
	})
}

// numbers returns 0 to n-1.
func numbers(n int) []int {
	l := make([]int, n)
	for k := range l {
		l[k] = k
	}
	return l
}

// manyCgroups returns n cgroups that hold CPU 0.
func manyCgroups(n int) map[string][]int {
	m := make(map[string][]int, n)
	for k := range n {
		m[fmt.Sprintf("c%d", k)] = []int{0}
	}
	return m
}

// TestLargestStateFits: the state of the largest machine the agent is measured on (1,024 CPUs,
// 8,192 memory blocks, 1,024 memory devices, every field at its widest) with eight callbacks of
// the memory class, each as far behind as the file keeps them, is saved and loaded back within
// MaxSize and the bounds on the lists.
func TestLargestStateFits(t *testing.T) {
	if testing.Short() {
		t.Skip("saves and loads 30 MB")
	}
	var cpus, blocks, devices []notify.Interface
	for n := range 1024 {
		c := cpu(n)
		c.Node = 999
		cpus = append(cpus, c)
		devices = append(devices, dimm(fmt.Sprintf("PNP0C80:%03x", n), 8*n, 8*n+7))
	}
	for n := range 8192 {
		m := mem(n)
		m.Node, m.State, m.Zones = 999, "going-offline", "DMA32 Normal Movable"
		blocks = append(blocks, m)
	}
	s := State{Version: 1, Interfaces: slices.Concat(cpus, blocks), LastEventID: MaxEventID, SavedAt: savedAt,
		MemoryDevices: devices, MemoryDeviceLastEventID: MaxEventID, Instance: uuid.New(), Callbacks: map[string]notify.Cursor{},
		Present: &Present{CPUs: numbers(1024), MemoryBlocks: numbers(8192)}}
	for k := range 8 {
		var owed []notify.Notification
		for j := range 1024 {
			owed = append(owed, pending(notify.GUIDDeviceInterfaceArrival, blocks[j], MaxEventID-1024+uint64(j), 1<<40, notify.CauseResync))
		}
		s.Callbacks[fmt.Sprintf("memory-callback-%d", k)] = notify.Cursor{Class: notify.GUIDDeviceMemory, View: blocks, Pending: owed}
	}
	path := filepath.Join(t.TempDir(), "state.json")
	if err := Save(path, s); err != nil {
		t.Fatalf("Save: %v", err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !cmp.Equal(s, got) {
		t.Errorf("Load after Save gave another state")
	}
	fi, _ := os.Stat(path)
	t.Logf("%d bytes (MaxSize %d)", fi.Size(), MaxSize)
}

// TestSaveEventIDAboveMax: an event ID above MaxEventID is saved (an agent that got there must
// still save), and Load then refuses the file, so that the agent starts numbering anew.
func TestSaveEventIDAboveMax(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := Save(path, State{Interfaces: []notify.Interface{cpu(0)}, LastEventID: MaxEventID + 1}); err != nil {
		t.Fatalf("Save: %v", err)
	}
	_, err := Load(path)
	checkLoadError(t, err, path, "last_event_id 4611686018427387905 is above 4611686018427387904")
}

// TestCrashBeforeRename leaves what a Save killed between writing its temporary file and renaming
// it leaves: Load must not see it, and the next Save must remove it.
func TestCrashBeforeRename(t *testing.T) {
	for _, existed := range []bool{true, false} {
		t.Run(fmt.Sprintf("earlier file %v", existed), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			old := State{Version: 1, Interfaces: []notify.Interface{cpu(0), cpu(1)}, SavedAt: savedAt}
			if existed {
				if err := Save(path, old); err != nil {
					t.Fatal(err)
				}
			}
			// A complete new file and a half-written one, as two crashed saves would leave them.
			stray := []string{tempPrefix("state.json") + "1234", tempPrefix("state.json") + "99"}
			os.WriteFile(filepath.Join(dir, stray[0]), []byte(withInterface(cpuRecord("/sys/devices/system/cpu/cpu7", 7))), 0o600)
			os.WriteFile(filepath.Join(dir, stray[1]), []byte(valid[:100]), 0o600)
			// A file of another name that merely looks alike is not Save's to remove.
			other := ".state.json.bak"
			os.WriteFile(filepath.Join(dir, other), []byte("keep"), 0o600)

			got, err := Load(path)
			if existed {
				if err != nil || !cmp.Equal(old, got) {
					t.Errorf("Load with stray temporary files = %+v, %v; want the earlier state", got, err)
				}
			} else if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Load with only stray temporary files: %v; want fs.ErrNotExist", err)
			}

			next := State{Version: 1, Interfaces: []notify.Interface{cpu(2)}, SavedAt: savedAt}
			if err := Save(path, next); err != nil {
				t.Fatal(err)
			}
			if got, err := Load(path); err != nil || !cmp.Equal(next, got) {
				t.Errorf("Load after the next Save = %+v, %v; want %+v", got, err, next)
			}
			if names, want := dirNames(t, dir), []string{other, "state.json"}; !slices.Equal(names, want) {
				t.Errorf("after the next Save the directory holds %q; want %q", names, want)
			}
		})
	}
}

// withDevice returns the valid file with the memory-device records recs.
func withDevice(recs string) string {
	return strings.Replace(valid, `"interfaces": [`, `"memory_devices": [`+recs+`], "interfaces": [`, 1)
}

// dimm is an ACPI memory device of blocks first..last.
// pending is a notification owed to a callback, as the agent keeps it.
func pending(event uuid.UUID, i notify.Interface, id, seqnum uint64, cause notify.Cause) notify.Notification {
	n := notify.NewNotification(event, i, seqnum, savedAt.Add(-time.Duration(id)*time.Microsecond), cause)
	n.ID = id
	return n
}

func dimm(id string, first, last int) notify.Interface {
	var blocks []int
	for b := first; b <= last; b++ {
		blocks = append(blocks, b)
	}
	return notify.Interface{ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: "/sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04/" + id,
		Number: first, Node: 0, PhysStart: uint64(first) << 27, Size: uint64(last-first+1) << 27, State: "online", Device: id,
		Blocks: sysfs.FormatCPUList(blocks)}
}
