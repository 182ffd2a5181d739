// Package statefile persists the set of device interfaces the agent last announced, so that a
// restarted agent can announce exactly what changed while it was down, and where each configured
// callback stands in its delivery, so that it gets what it is owed. The file is JSON, owned by
// this package (its form does not follow the HTTP API's), and replaced atomically: a crash at any
// moment leaves either the old file or the new one, never a mix. What is written without waiting
// for the disk (Write) goes to a side file beside it, never over it, so that a crash of the
// machine cannot take the last state saved durably with it.
package statefile

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// Version is the file format version that Save writes and Load accepts.
const Version = 1

// MaxSize is the largest state file Load reads, and Save writes. The interfaces, about 330
// bytes each with every field at its widest, make most of a file: 1,024 CPUs, 8,192 memory
// blocks (1 TiB in 128 MiB blocks) and 1,024 memory devices make 2.8 MiB, and each configured
// callback of the memory class adds up to 3.4 MiB (a view of every block and 1,024 pending
// notifications), one of the processor class 0.7 MiB. So 32 MiB holds that machine's state with
// eight memory callbacks all as far behind as the file keeps them; a larger file is not one an
// agent wrote, and reading one would take hundreds of megabytes.
const MaxSize = 32 << 20

// maxEntries bounds the entries of a file's lists, all together: interfaces, memory devices,
// callbacks, their views and pending notifications, cpuset callbacks and their cgroups. Load
// counts them before decoding anything, as each entry decoded takes a hundred bytes or more
// however short it is written ("{}"). A file of MaxSize that Save wrote holds about 100,000 (a
// processor or a memory block takes 200 to 330 bytes); Save refuses more, which only a cpuset
// callback keeping a quarter of a million cgroups could reach.
const maxEntries = 1 << 18

// minEntryBytes is the fewest bytes for each entry of its lists that a file may have, on
// average: Save writes 64 or more for each (a cpuset callback's cgroup at the least, an
// interface 200 to 330), and even without the indentation no entry is shorter than 22. So the
// memory that Load takes follows the size of the file, as it does for the files Save writes.
const minEntryBytes = 32

// maxNumbers bounds the numbers that a file's kernel lists (the CPUs and memory blocks present,
// memory devices' blocks, cpuset callbacks' CPUs or nodes) expand to, all together: 4,194,304,
// 32 MiB of them. Some bytes ("0-1023") stand for many numbers, so the size of the file does not
// bound them. A real file holds the blocks present (8,192 for 1 TiB in 128 MiB blocks) and
// those of its memory devices, in the file and in each view, and a cpuset callback's CPUs for
// each cgroup it keeps, far fewer.
const maxNumbers = 1 << 22

// maxCpusetList bounds one list of a cpuset callback, which holds CPUs or NUMA nodes of one
// machine, so that a few bytes ("0-1048575") cannot stand for a million: 16,384 is twice the
// most CPUs a Linux kernel is built for (NR_CPUS, 8,192), and NUMA nodes are at most 1,024.
const maxCpusetList = 1 << 14

// MaxEventID is the largest event ID a state file may hold: 2^62. An agent without a state file
// starts from the microseconds since 1970 (about 2^51 in 2026) and would need a million
// notifications a second for over a hundred thousand years to get there, so a file above it is
// not one an agent wrote; and IDs counted on from it, up to 2^64, could never wrap to 0.
const MaxEventID = 1 << 62

// State is what the agent persists.
type State struct {
	// Version is the file format version: Version (Save writes it when zero).
	Version int
	// Interfaces is the set of interfaces announced as active, sorted with notify.Interface.Less.
	Interfaces []notify.Interface
	// LastEventID is the last id given to the event stream, so that ids stay resumable across
	// restarts; 0 until the stream numbers its events.
	LastEventID uint64
	// SavedAt is when the state was saved (Save writes the current time when zero).
	SavedAt time.Time
	// MemoryDevices are the memory devices announced as present to the registrations that
	// asked for whole devices (notify.Interface.IsMemoryDevice), sorted by first block, and
	// MemoryDeviceLastEventID the last id given to their notifications.
	MemoryDevices           []notify.Interface
	MemoryDeviceLastEventID uint64
	// Clean says the agent saved this at its orderly shutdown: the last event IDs are exactly
	// the last ones given. After any other save the agent may have gone on numbering
	// notifications before it was killed.
	Clean bool
	// Instance identifies the agent that keeps this file, for as long as it keeps it (the webhook
	// callbacks' Idempotency-Key is made from it); nil in a file written before it existed.
	Instance uuid.UUID
	// Callbacks are where the configured callbacks stand in their delivery, by name
	// (notify.Cursor): what each has seen and what it is still owed. Callbacks holds those of
	// per-block registrations (their pending notifications carry LastEventID's IDs),
	// MemoryDeviceCallbacks those of memory-device ones.
	Callbacks             map[string]notify.Cursor
	MemoryDeviceCallbacks map[string]notify.Cursor
	// Present are the CPUs and memory blocks present, online or not, when the state was saved:
	// what tells one hot-added while the agent was down from one an administrator took offline.
	// Nil in a file written before it was kept.
	Present *Present
	// BootMemory are the memory blocks the zone planner counts as boot memory, and the boot they
	// are of: what tells, after a restart, a block of no known device that the kernel hot-added
	// while an agent ran from one that was there at boot. Nil in a file written before it was
	// kept, or by an agent that could not read the boot ID.
	BootMemory *BootMemory
	// Cpusets are what the cpuset callbacks remember, by callback name.
	Cpusets map[string]Cpuset
}

// BootMemory is the memory present when the kernel booted, as far as the agent knows it.
type BootMemory struct {
	// BootID is the kernel's boot ID (/proc/sys/kernel/random/boot_id) when the state was saved:
	// Blocks hold for that boot only.
	BootID string
	// Blocks are the memory blocks of boot memory, sorted.
	Blocks []int
}

// Cpuset is what one cpuset callback remembers (callback.CpusetMemory): the CPUs or nodes it has
// seen online and those removed and not back, and for each named cgroup (a path relative to the
// cgroup mount) what its cpuset held at the last look and what a removal took from it.
type Cpuset struct {
	Resource   string // "cpus" or "mems"
	Known      []int
	Gone       []int
	Held, Owed map[string][]int
}

// Present is a set of CPUs and memory blocks by number, each list sorted.
type Present struct {
	CPUs, MemoryBlocks []int
}

// fileJSON is the JSON form of the whole file.
type fileJSON struct {
	Version int `json:"version"`
	// Seq numbers the files Save and Write write to one path, in the order written: it tells
	// which of the file and its side file is newer, as SavedAt cannot (the clock may go back).
	// Optional: a file written before it existed has none (0).
	Seq         uint64       `json:"seq,omitempty"`
	SavedAt     time.Time    `json:"saved_at"`
	LastEventID uint64       `json:"last_event_id"`
	Interfaces  []recordJSON `json:"interfaces"`
	// Optional: a file written before memory devices existed has neither.
	MemoryDevices           []deviceJSON `json:"memory_devices,omitempty"`
	MemoryDeviceLastEventID uint64       `json:"memory_device_last_event_id,omitempty"`
	CleanShutdown           bool         `json:"clean_shutdown,omitempty"`
	// Optional: a file written before callbacks were resumed has none of these.
	Instance              string         `json:"instance,omitempty"`
	Callbacks             []callbackJSON `json:"callbacks,omitempty"`
	MemoryDeviceCallbacks []callbackJSON `json:"memory_device_callbacks,omitempty"`
	// Optional: a file written before it was kept has none.
	Present *presentJSON `json:"present,omitempty"`
	// Optional: a file written before it was kept, or without a boot ID, has none.
	BootMemory *bootMemoryJSON `json:"boot_memory,omitempty"`
	// Optional: only with cpuset callbacks.
	Cpusets []cpusetJSON `json:"cpusets,omitempty"`
}

// cpusetJSON is the JSON form of a cpuset callback's memory; lists are kernel lists ("0-3").
type cpusetJSON struct {
	Name     string             `json:"name"`
	Resource string             `json:"resource"`
	Known    string             `json:"known"`
	Gone     string             `json:"gone,omitempty"`
	Cgroups  []cpusetCgroupJSON `json:"cgroups,omitempty"`
}

// cpusetCgroupJSON is one named cgroup of a cpuset callback.
type cpusetCgroupJSON struct {
	Path string `json:"path"`
	Held string `json:"held"`
	Owed string `json:"owed,omitempty"`
}

// bootMemoryJSON holds the boot memory blocks as a kernel list ("0-7").
type bootMemoryJSON struct {
	BootID string `json:"boot_id"`
	Blocks string `json:"blocks"`
}

// bootID matches a boot ID as the kernel writes it: a UUID in lower case.
var bootID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// presentJSON holds the present CPUs and memory blocks as kernel CPU lists ("0-191").
type presentJSON struct {
	CPUs         string `json:"cpus"`
	MemoryBlocks string `json:"memory_blocks"`
}

// callbackJSON is the JSON form of one configured callback's cursor: its view holds interfaces
// (or, in memory_device_callbacks, memory devices), and each pending notification the
// interface (or the device) it is about.
type callbackJSON struct {
	Name      string        `json:"name"`
	ClassGUID string        `json:"class_guid"`
	View      []recordJSON  `json:"view,omitempty"`
	Devices   []deviceJSON  `json:"view_devices,omitempty"`
	Pending   []pendingJSON `json:"pending,omitempty"`
}

// pendingJSON is the JSON form of a notification still owed to a callback.
type pendingJSON struct {
	ID        uint64      `json:"id"`
	Event     string      `json:"event"`
	Cause     string      `json:"cause"`
	Seqnum    uint64      `json:"seqnum,omitempty"`
	ReadAt    time.Time   `json:"read_at"`
	Interface *recordJSON `json:"interface,omitempty"`
	Device    *deviceJSON `json:"device,omitempty"`
}

// deviceJSON is the JSON form of one memory device in the file.
type deviceJSON struct {
	ID           string `json:"id"`
	SymbolicLink string `json:"symbolic_link"`
	Blocks       string `json:"blocks"`
	Node         int    `json:"node"`
	PhysStart    uint64 `json:"phys_start"`
	Size         uint64 `json:"size"`
}

// recordJSON is the JSON form of one interface in the file.
type recordJSON struct {
	ClassGUID    string `json:"class_guid"`
	SymbolicLink string `json:"symbolic_link"`
	Number       int    `json:"number"`
	Node         int    `json:"node"`
	PhysStart    uint64 `json:"phys_start,omitempty"`
	Size         uint64 `json:"size,omitempty"`
	State        string `json:"state,omitempty"`
	Zones        string `json:"zones,omitempty"`
}

// saveMu serialises Save and Write calls in this process: each one removes the temporary files
// that earlier, interrupted, saves left behind, and must not remove another call's; and each
// numbers its file after the last one.
var saveMu sync.Mutex

// seqs holds, by path, the Seq of the newest file written to it or loaded from it in this
// process, if known. seqMu guards it; saveMu is taken first when both are.
var (
	seqMu sync.Mutex
	seqs  = map[string]uint64{}
)

// Save writes s to path atomically and durably: it writes a temporary file in the same directory,
// syncs it, renames it over path and syncs the directory, so that a crash at any moment leaves
// the old file or the new one; then it removes the side file that Write writes. The file has mode
// 0600; a missing directory is created with mode 0700. Temporary files left by an interrupted
// earlier Save or Write are removed. s is validated as Load validates it, and a State that Load
// would refuse is not written, but for event IDs above MaxEventID, which are written (no agent
// gets there; one that did would still save, and start numbering anew at its next start, when
// Load refuses the file). Interfaces are sorted in the file; s is not modified.
//
// Save replaces nothing but a regular file: when Load would refuse the path or its side file
// with ErrRefused (a device, a FIFO, a symbolic link, a file of another user, a directory others
// may write to), Save returns an error wrapping ErrRefused and leaves both as they are.
//
// Save blocks on the disk (two fsyncs), never on opening anything. It is safe for concurrent use
// within a process (calls are serialised); two processes must not save to the same path.
func Save(path string, s State) error {
	return save(path, s, true)
}

// Write writes s as Save does, without waiting for the disk, and not over path: over its side
// file, a hidden file beside it (".state.json.unsynced" for "state.json") with the same mode and
// the same checks, which the next Save removes. Load takes the side file when it is newer than
// path and whole. So what Write writes survives the agent's death at any moment (the kernel holds
// it), and a crash of the machine, which may leave the side file empty or as it was, costs no
// more than what was written since the last Save: path still holds that. The agent writes with
// it what a callback is about to be given, which must be on file before the callback runs,
// without waiting for the disk; its next Save makes it durable. Write blocks on writing, not on
// the disk, and is safe for concurrent use as Save is.
func Write(path string, s State) error {
	return save(path, s, false)
}

// sidePath returns the side file of the state file at path, which Write writes and Load reads.
func sidePath(path string) string {
	dir, base := filepath.Split(path)
	return dir + "." + base + ".unsynced"
}

// save is Save when durable, else Write.
func save(path string, s State, durable bool) error {
	if s.Version == 0 {
		s.Version = Version
	}
	if s.Version != Version {
		return fmt.Errorf("statefile: save %s: format version %d: this agent writes version %d", path, s.Version, Version)
	}
	if s.SavedAt.IsZero() {
		s.SavedAt = time.Now()
	}
	dir, base := filepath.Split(path)
	if base == "" {
		return fmt.Errorf("statefile: save %s: the path names a directory, not a file", path)
	}
	if dir == "" {
		dir = "."
	}
	ifaces := slices.Clone(s.Interfaces)
	slices.SortFunc(ifaces, compare)
	f := fileJSON{
		Version:                 s.Version,
		SavedAt:                 s.SavedAt,
		LastEventID:             s.LastEventID,
		Interfaces:              make([]recordJSON, len(ifaces)),
		MemoryDeviceLastEventID: s.MemoryDeviceLastEventID,
		CleanShutdown:           s.Clean,
		Callbacks:               encodeCallbacks(s.Callbacks, false),
		MemoryDeviceCallbacks:   encodeCallbacks(s.MemoryDeviceCallbacks, true),
		Cpusets:                 encodeCpusets(s.Cpusets),
	}
	for k, i := range ifaces {
		f.Interfaces[k] = record(i)
	}
	for _, d := range s.MemoryDevices {
		f.MemoryDevices = append(f.MemoryDevices, deviceRecord(d))
	}
	if s.Instance != uuid.Nil {
		f.Instance = s.Instance.String()
	}
	if s.Present != nil {
		f.Present = &presentJSON{CPUs: sysfs.FormatCPUList(s.Present.CPUs), MemoryBlocks: sysfs.FormatCPUList(s.Present.MemoryBlocks)}
	}
	if b := s.BootMemory; b != nil {
		f.BootMemory = &bootMemoryJSON{BootID: b.BootID, Blocks: sysfs.FormatCPUList(b.Blocks)}
	}
	if _, err := f.state(true); err != nil {
		return fmt.Errorf("statefile: save %s: %w", path, err)
	}

	saveMu.Lock()
	defer saveMu.Unlock()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("statefile: save %s: %w", path, err)
	}
	if err := checkDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("statefile: save %s: %w", path, err)
	}
	// Only a regular file of ours is replaced or removed: the rename would put a file in the
	// place of a device (--path.state=/dev/null), a FIFO, a socket or a symbolic link.
	side := sidePath(path)
	for _, p := range []string{path, side} {
		switch fi, err := os.Lstat(p); {
		case err == nil:
			if err := checkFile(p, fi); err != nil {
				return fmt.Errorf("statefile: save %s: %w: not replaced", p, err)
			}
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("statefile: save %s: %w", p, bare(err))
		}
	}
	if err := removeStale(dir, base); err != nil {
		return fmt.Errorf("statefile: save %s: %w", path, err)
	}
	seq, err := nextSeq(path)
	if err != nil {
		return fmt.Errorf("statefile: save %s: %w", path, err)
	}
	f.Seq = seq
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("statefile: save %s: %w", path, err)
	}
	data = append(data, '\n')
	if len(data) > MaxSize {
		return fmt.Errorf("statefile: save %s: %d bytes, more than the %d that Load reads", path, len(data), MaxSize)
	}
	target := path
	if !durable {
		target = side
	}
	tmp, err := os.CreateTemp(dir, tempPrefix(base)+"*") // mode 0600
	if err != nil {
		return fmt.Errorf("statefile: save %s: %w", path, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("statefile: save %s: %w", path, err)
	}
	if durable {
		if err := tmp.Sync(); err != nil {
			return fmt.Errorf("statefile: save %s: %w", path, err)
		}
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("statefile: save %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return fmt.Errorf("statefile: save %s: %w", path, err)
	}
	renamed = true
	remember(path, seq)
	if !durable {
		return nil
	}
	// The rename is durable only once the directory is.
	d, err := os.OpenFile(dir, os.O_RDONLY|dirFlags, 0)
	if err != nil {
		return fmt.Errorf("statefile: save %s: fsync directory: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("statefile: save %s: fsync directory: %w", path, err)
	}
	// The side file is older now. Its removal need not be durable: if a crash undoes it, its
	// Seq tells Load that path is newer.
	if err := os.Remove(side); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("statefile: save %s: remove %s: %w", path, side, bare(err))
	}
	return nil
}

// nextSeq returns the Seq of the next file written for path, above that of any file written to
// it or loaded from it in this process, or, when there was none, above those of path and its side
// file as they are. saveMu is held.
func nextSeq(path string) (uint64, error) {
	seqMu.Lock()
	last, known := seqs[path]
	seqMu.Unlock()
	if !known {
		for _, p := range []string{path, sidePath(path)} {
			_, seq, err := loadFile(p)
			switch {
			case err == nil:
				last = max(last, seq)
			case errors.Is(err, fs.ErrNotExist), errors.Is(err, ErrCorrupt):
				// Nothing there to come after: a file that does not load is never taken.
			default:
				return 0, fmt.Errorf("%s: %w", p, err)
			}
		}
	}
	if last >= MaxEventID {
		// No agent writes so many files; counting on could make the next file look older.
		return 0, fmt.Errorf("sequence number %d: no more files can be written after it", last)
	}
	return last + 1, nil
}

// remember records that a file of Seq seq was written to path or loaded from it.
func remember(path string, seq uint64) {
	seqMu.Lock()
	defer seqMu.Unlock()
	seqs[path] = max(seqs[path], seq)
}

// removeStale removes the temporary files that a Save killed before its rename left in dir.
func removeStale(dir, base string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix(base)) && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove stale temporary file: %w", err)
			}
		}
	}
	return nil
}

// tempPrefix is how the temporary files of Save and Write for a file named base begin. They are
// hidden, and Load never reads them.
func tempPrefix(base string) string { return "." + base + ".tmp-" }

// Load reads the state saved at path: that of its side file (see Write) when that is whole and
// newer (written later: each file is numbered), else that of path. A missing file (or directory)
// gives an error wrapping fs.ErrNotExist (the agent's first start). A path that cannot be trusted
// gives an error wrapping ErrRefused, and nothing is opened that could block or change anything:
// something other than a regular file (a device, a FIFO, a socket, a directory, a symbolic link,
// which is not followed), a file owned by another user than the one this process runs as or
// writable by group or others, or one in a directory that another user could replace it in; the
// same goes for the side file. A file that is empty, truncated, not JSON, of another format
// version, larger than MaxSize or larger than a state file in what it stands for (more entries in
// its lists than a file of MaxSize holds, entries written shorter than Save writes them, lists of
// CPUs, nodes or memory blocks that stand for more numbers than a machine has), that holds an
// invalid interface (a class other than processor or memory, a symbolic link that is not exactly
// /sys/devices/system/cpu/cpuN or /sys/devices/system/memory/memoryN for its Number, a duplicate),
// an event ID above MaxEventID, or a callback's cursor that could not be the agent's (a name the
// configuration refuses, twice the same name, interfaces or notifications of another class than the
// callback's, an event or a cause a notification cannot have, a pending notification with an ID
// above the last one given) gives a one-line error wrapping ErrCorrupt, naming path and what is
// wrong. A side file of such contents (as a crash of the machine may leave it) is passed over: the
// state is that of path. Any other error (a file could not be opened or read: permission denied, an
// I/O error) wraps neither: what the file holds is not known. Interfaces are returned sorted with
// notify.Interface.Less.
//
// Load blocks on the disk, never on the file (it opens with O_NONBLOCK). It is safe for concurrent
// use, also with Save and Write: it reads the side file first, then path, which only grows newer,
// so it sees a state at least as new as the newest at its start.
func Load(path string) (State, error) {
	if err := checkDir(filepath.Dir(path)); err != nil {
		return State{}, fmt.Errorf("statefile: load %s: %w", path, err)
	}
	// The side file first: a Save that replaces path after this removes the side file, and
	// path is then newer than what was read here.
	side := sidePath(path)
	ss, sseq, serr := loadFile(side)
	s, seq, err := loadFile(path)
	switch {
	case err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrCorrupt):
		return State{}, fmt.Errorf("statefile: load %s: %w", path, err)
	case serr != nil && !errors.Is(serr, fs.ErrNotExist) && !errors.Is(serr, ErrCorrupt):
		return State{}, fmt.Errorf("statefile: load %s: %w", side, serr)
	}
	remember(path, max(seq, sseq)) // 0 for a file that does not load: it is never taken
	switch {
	case serr == nil && (err != nil || sseq > seq):
		return ss, nil
	case err != nil:
		return State{}, fmt.Errorf("statefile: load %s: %w", path, err)
	}
	return s, nil
}

// loadFile reads and decodes the file at path, whose directory is checked, and returns its state
// and its Seq. Its errors do not name path.
func loadFile(path string) (State, uint64, error) {
	// Lstat first, so that a device or a FIFO is refused without being opened at all; then the
	// open file is checked again, in case the path changed in between.
	fi, err := os.Lstat(path)
	if err != nil {
		return State{}, 0, bare(err)
	}
	if err := checkFile(path, fi); err != nil {
		return State{}, 0, err
	}
	f, err := openFile(path)
	if err != nil {
		return State{}, 0, bare(err)
	}
	defer f.Close()
	fi, err = f.Stat()
	if err != nil {
		return State{}, 0, bare(err)
	}
	if err := checkFile(path, fi); err != nil {
		return State{}, 0, err
	}
	if fi.Size() > MaxSize {
		return State{}, 0, corruption{fmt.Errorf("%d bytes, more than the %d a state file may have", fi.Size(), MaxSize)}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return State{}, 0, bare(err)
	}
	if len(data) > MaxSize {
		return State{}, 0, corruption{fmt.Errorf("more than the %d bytes a state file may have", MaxSize)}
	}
	s, seq, err := decode(data)
	if err != nil {
		return State{}, 0, corruption{err}
	}
	return s, seq, nil
}

// decode parses and validates the contents of a state file, and returns its state and its Seq.
func decode(data []byte) (State, uint64, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return State{}, 0, errors.New("empty file")
	}
	// The version first, leniently: the rest of a file of another version may not parse as this
	// one, and "unknown version" says more than an unknown field would.
	var v struct {
		Version *json.RawMessage `json:"version"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return State{}, 0, syntaxError(data, err)
	}
	if v.Version == nil {
		return State{}, 0, errors.New("no version field: not a state file")
	}
	if n, err := strconv.Atoi(string(*v.Version)); err != nil || n != Version {
		return State{}, 0, fmt.Errorf("format version %.20q: this agent reads version %d", *v.Version, Version)
	}

	// The lists' entries are counted before anything is decoded: each one decoded takes a
	// hundred bytes or more, however short it is written ("{}").
	n, err := countEntries(data)
	switch {
	case err != nil:
		return State{}, 0, err
	case n > maxEntries:
		return State{}, 0, fmt.Errorf("%d entries in lists, more than the %d a state file may have", n, maxEntries)
	case n > len(data)/minEntryBytes:
		return State{}, 0, fmt.Errorf("not a valid state file: %d entries in lists in %d bytes, fewer than %d bytes each", n, len(data), minEntryBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f fileJSON
	if err := dec.Decode(&f); err != nil {
		return State{}, 0, syntaxError(data, err)
	}
	if f.Interfaces == nil {
		return State{}, 0, errors.New("no interfaces field")
	}
	if f.SavedAt.IsZero() {
		return State{}, 0, errors.New("no saved_at field")
	}
	if f.Seq > MaxEventID {
		return State{}, 0, fmt.Errorf("seq %d is above %d, the most files an agent writes: not a state file an agent wrote", f.Seq, uint64(MaxEventID))
	}
	st, err := f.state(false)
	return st, f.Seq, err
}

// countEntries counts the entries of the lists in data, valid JSON, at every depth, reading no
// more of it than strings, brackets and commas. It refuses lists and objects nested deeper than
// maxDepth: a state file's are nested five deep at most.
func countEntries(data []byte) (int, error) {
	const maxDepth = 16
	var lists uint64 // bit d is set when what is open at depth d is a list
	depth, n := 0, 0
	first := false // just after '[': a value here is the list's first entry
	for i := 0; i < len(data); i++ {
		c := data[i]
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			continue
		}
		if first && c != ']' {
			n++
		}
		first = false
		switch c {
		case '"':
			for i++; i < len(data) && data[i] != '"'; i++ {
				if data[i] == '\\' {
					i++
				}
			}
		case '[', '{':
			if depth == maxDepth {
				return 0, fmt.Errorf("not a valid state file: lists and objects nested more than %d deep (at byte %d)", maxDepth, i)
			}
			if c == '[' {
				lists |= 1 << depth
				first = true
			} else {
				lists &^= 1 << depth
			}
			depth++
		case ']', '}':
			depth = max(depth-1, 0)
		case ',':
			if depth > 0 && lists&(1<<(depth-1)) != 0 {
				n++
			}
		}
	}
	return n, nil
}

// state validates f, the JSON form of a whole file, and returns the State it holds. saving says
// that f is what Save is about to write: last event IDs above MaxEventID are let through.
func (f *fileJSON) state(saving bool) (State, error) {
	if n := f.entries(); n > maxEntries {
		return State{}, fmt.Errorf("%d entries in lists, more than the %d a state file may have", n, maxEntries)
	}
	var c checker
	ifaces, err := c.interfaces("interfaces", f.Interfaces)
	if err != nil {
		return State{}, err
	}
	devices, err := c.devices("memory_devices", f.MemoryDevices)
	if err != nil {
		return State{}, err
	}
	if !saving {
		if err := checkEventID("last_event_id", f.LastEventID); err != nil {
			return State{}, err
		}
		if err := checkEventID("memory_device_last_event_id", f.MemoryDeviceLastEventID); err != nil {
			return State{}, err
		}
	}
	s := State{Version: f.Version, Interfaces: ifaces, LastEventID: f.LastEventID, SavedAt: f.SavedAt,
		MemoryDevices: devices, MemoryDeviceLastEventID: f.MemoryDeviceLastEventID, Clean: f.CleanShutdown}
	if f.Instance != "" {
		if s.Instance, err = uuid.Parse(f.Instance); err != nil || len(f.Instance) != 36 || s.Instance == uuid.Nil {
			return State{}, fmt.Errorf("instance %.40q: want a UUID", f.Instance)
		}
	}
	if s.Callbacks, err = c.callbacks("callbacks", f.Callbacks, false, "last_event_id", f.LastEventID); err != nil {
		return State{}, err
	}
	if s.MemoryDeviceCallbacks, err = c.callbacks("memory_device_callbacks", f.MemoryDeviceCallbacks, true,
		"memory_device_last_event_id", f.MemoryDeviceLastEventID); err != nil {
		return State{}, err
	}
	if f.Present != nil {
		if s.Present, err = c.present(f.Present); err != nil {
			return State{}, err
		}
	}
	if bm := f.BootMemory; bm != nil {
		if !bootID.MatchString(bm.BootID) {
			return State{}, fmt.Errorf("boot_memory.boot_id %.40q: want a UUID", bm.BootID)
		}
		s.BootMemory = &BootMemory{BootID: bm.BootID}
		if s.BootMemory.Blocks, err = c.memoryBlocks(bm.Blocks); err != nil {
			return State{}, fmt.Errorf("boot_memory.blocks: %w", err)
		}
	}
	if s.Cpusets, err = c.cpusets(f.Cpusets); err != nil {
		return State{}, err
	}
	return s, nil
}

// entries counts the entries of f's lists, as countEntries counts them in the file.
func (f *fileJSON) entries() int {
	n := len(f.Interfaces) + len(f.MemoryDevices) + len(f.Callbacks) + len(f.MemoryDeviceCallbacks) + len(f.Cpusets)
	for _, l := range [][]callbackJSON{f.Callbacks, f.MemoryDeviceCallbacks} {
		for _, c := range l {
			n += len(c.View) + len(c.Devices) + len(c.Pending)
		}
	}
	for _, c := range f.Cpusets {
		n += len(c.Cgroups)
	}
	return n
}

// checker validates the records of one file, counting the numbers its kernel lists expand to.
type checker struct {
	numbers int
}

// take counts n more numbers from the lists, and refuses more than maxNumbers in all.
func (c *checker) take(n int) error {
	if c.numbers += n; c.numbers > maxNumbers {
		return fmt.Errorf("the lists of CPUs, nodes and memory blocks hold more than %d numbers in all", maxNumbers)
	}
	return nil
}

// present validates the JSON form of the CPUs and memory blocks present. Memory block numbers go
// up to maxNumber, not only to the largest CPU number: they are physical addresses divided by
// the block size.
func (c *checker) present(p *presentJSON) (*Present, error) {
	cpus, err := sysfs.ParseCPUList(p.CPUs)
	if err == nil {
		err = c.take(len(cpus))
	}
	if err != nil {
		return nil, fmt.Errorf("present.cpus: %w", err)
	}
	blocks, err := c.memoryBlocks(p.MemoryBlocks)
	if err != nil {
		return nil, fmt.Errorf("present.memory_blocks: %w", err)
	}
	return &Present{CPUs: cpus, MemoryBlocks: blocks}, nil
}

// memoryBlocks parses a list of memory block numbers and counts them (take).
func (c *checker) memoryBlocks(list string) ([]int, error) {
	blocks, err := sysfs.ParseMemoryBlockList(list, 0)
	if err == nil {
		err = c.take(len(blocks))
	}
	return blocks, err
}

// encodeCpusets turns the cpuset callbacks' memories into their JSON form, sorted.
func encodeCpusets(m map[string]Cpuset) []cpusetJSON {
	var out []cpusetJSON
	for _, name := range slices.Sorted(maps.Keys(m)) {
		c := m[name]
		j := cpusetJSON{Name: name, Resource: c.Resource, Known: sysfs.FormatCPUList(c.Known), Gone: sysfs.FormatCPUList(c.Gone)}
		for _, p := range slices.Sorted(maps.Keys(c.Held)) {
			j.Cgroups = append(j.Cgroups, cpusetCgroupJSON{Path: p, Held: sysfs.FormatCPUList(c.Held[p]), Owed: sysfs.FormatCPUList(c.Owed[p])})
		}
		out = append(out, j)
	}
	return out
}

// cpusets validates the JSON form of the cpuset callbacks' memories.
func (c *checker) cpusets(recs []cpusetJSON) (map[string]Cpuset, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	out := map[string]Cpuset{}
	list := func(at, s string) ([]int, error) {
		l, err := sysfs.ParseCPUListLimit(s, maxCpusetList)
		if err != nil {
			return nil, fmt.Errorf("%s %.40q: want a list like 0-3, of at most %d CPUs or nodes", at, s, maxCpusetList)
		}
		if err := c.take(len(l)); err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		if len(l) == 0 {
			return nil, nil
		}
		return l, nil
	}
	for k, r := range recs {
		at := fmt.Sprintf("cpusets[%d]", k)
		if !callbackName.MatchString(r.Name) {
			return nil, fmt.Errorf("%s: name %.80q: want letters, digits, '_', '-' or '.', at most 64", at, r.Name)
		}
		if _, dup := out[r.Name]; dup {
			return nil, fmt.Errorf("cpusets: %s is listed twice", r.Name)
		}
		if r.Resource != "cpus" && r.Resource != "mems" {
			return nil, fmt.Errorf("%s (%s): resource %.20q: want cpus or mems", at, r.Name, r.Resource)
		}
		cs := Cpuset{Resource: r.Resource, Held: map[string][]int{}, Owed: map[string][]int{}}
		var err error
		if cs.Known, err = list(at+": known", r.Known); err != nil {
			return nil, err
		}
		if cs.Gone, err = list(at+": gone", r.Gone); err != nil {
			return nil, err
		}
		for j, g := range r.Cgroups {
			gat := fmt.Sprintf("%s (%s): cgroups[%d]", at, r.Name, j)
			if g.Path == "" || filepath.IsAbs(g.Path) || filepath.Clean(g.Path) != g.Path || g.Path == ".." || strings.HasPrefix(g.Path, "../") {
				return nil, fmt.Errorf("%s: path %.80q: want a clean relative path", gat, g.Path)
			}
			if _, dup := cs.Held[g.Path]; dup {
				return nil, fmt.Errorf("%s: %s is listed twice", gat, g.Path)
			}
			if cs.Held[g.Path], err = list(gat+": held", g.Held); err != nil {
				return nil, err
			}
			owed, err := list(gat+": owed", g.Owed)
			if err != nil {
				return nil, err
			}
			if len(owed) > 0 {
				cs.Owed[g.Path] = owed
			}
		}
		out[r.Name] = cs
	}
	return out, nil
}

// callbackName is what a configured callback's name may look like (the configuration's rule).
var callbackName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// encodeCallbacks turns cursors into their JSON form, sorted by name. devices says they are of
// memory-device registrations.
func encodeCallbacks(cursors map[string]notify.Cursor, devices bool) []callbackJSON {
	var out []callbackJSON
	for _, name := range slices.Sorted(maps.Keys(cursors)) {
		c := cursors[name]
		cb := callbackJSON{Name: name, ClassGUID: c.Class.String()}
		for _, i := range c.View {
			if devices {
				cb.Devices = append(cb.Devices, deviceRecord(i))
			} else {
				cb.View = append(cb.View, record(i))
			}
		}
		for _, n := range c.Pending {
			p := pendingJSON{ID: n.ID, Event: notify.EventName(n.Event), Cause: string(n.Cause), Seqnum: n.Seqnum, ReadAt: n.ReadAt}
			if devices {
				d := deviceRecord(n.Interface)
				p.Device = &d
			} else {
				r := record(n.Interface)
				p.Interface = &r
			}
			cb.Pending = append(cb.Pending, p)
		}
		out = append(out, cb)
	}
	return out
}

// callbacks validates the JSON form of cursors and returns them by name; field names the list in
// errors, devices says they are of memory-device registrations. Their pending notifications have
// IDs the agent gave, so none above last, the last ID the file says was given (lastField).
func (c *checker) callbacks(field string, recs []callbackJSON, devices bool, lastField string, last uint64) (map[string]notify.Cursor, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	out := make(map[string]notify.Cursor, len(recs))
	for k, r := range recs {
		at := fmt.Sprintf("%s[%d]", field, k)
		if !callbackName.MatchString(r.Name) {
			return nil, fmt.Errorf("%s: name %.80q: want letters, digits, '_', '-' or '.', at most 64", at, r.Name)
		}
		at = fmt.Sprintf("%s (%s)", at, r.Name)
		if _, dup := out[r.Name]; dup {
			return nil, fmt.Errorf("%s: %s is listed twice", field, r.Name)
		}
		class, err := uuid.Parse(r.ClassGUID)
		if err != nil || len(r.ClassGUID) != 36 {
			return nil, fmt.Errorf("%s: class_guid %.40q: want a GUID", at, r.ClassGUID)
		}
		if devices && class != notify.GUIDDeviceMemory {
			return nil, fmt.Errorf("%s: class %s: memory devices are of the memory class", at, class)
		}
		cur := notify.Cursor{Class: class}
		var view []notify.Interface
		if devices {
			if len(r.View) > 0 {
				return nil, fmt.Errorf("%s: view: a memory-device callback's view is view_devices", at)
			}
			view, err = c.devices(at+": view_devices", r.Devices)
		} else {
			if len(r.Devices) > 0 {
				return nil, fmt.Errorf("%s: view_devices: only a memory-device callback has them", at)
			}
			view, err = c.interfaces(at+": view", r.View)
		}
		if err != nil {
			return nil, err
		}
		for _, i := range view {
			if i.ClassGUID != class {
				return nil, fmt.Errorf("%s: view: %s is not of the callback's class %s", at, i.SymbolicLink, class)
			}
		}
		if len(view) > 0 {
			cur.View = view
		}
		for j, p := range r.Pending {
			n, err := c.pending(fmt.Sprintf("%s: pending[%d]", at, j), p, devices)
			if err != nil {
				return nil, err
			}
			if n.InterfaceClassGUID != class {
				return nil, fmt.Errorf("%s: pending[%d]: %s is not of the callback's class %s", at, j, n.SymbolicLinkName, class)
			}
			if n.ID > last {
				// A callback given it would drop, as already handled, every notification given
				// after a clean restart up to that ID.
				return nil, fmt.Errorf("%s: pending[%d]: id %d is above %s %d, the last given: not a state file an agent wrote",
					at, j, n.ID, lastField, last)
			}
			cur.Pending = append(cur.Pending, n)
		}
		out[r.Name] = cur
	}
	return out, nil
}

// pending validates the JSON form of a pending notification, named at in errors, and returns it.
func (c *checker) pending(at string, p pendingJSON, devices bool) (notify.Notification, error) {
	var event uuid.UUID
	switch p.Event {
	case "arrival":
		event = notify.GUIDDeviceInterfaceArrival
	case "removal":
		event = notify.GUIDDeviceInterfaceRemoval
	default:
		return notify.Notification{}, fmt.Errorf("%s: event %.40q: want arrival or removal", at, p.Event)
	}
	cause := notify.Cause(p.Cause)
	switch cause {
	case notify.CauseUevent, notify.CauseExisting, notify.CauseResync, notify.CauseStartup:
	default:
		return notify.Notification{}, fmt.Errorf("%s: cause %.40q: want uevent, existing, resync or startup", at, p.Cause)
	}
	if err := checkEventID("id", p.ID); err != nil {
		return notify.Notification{}, fmt.Errorf("%s: %w", at, err)
	}
	var iface notify.Interface
	var err error
	switch {
	case devices && p.Device != nil && p.Interface == nil:
		iface, err = c.device(at+".device", -1, *p.Device)
	case !devices && p.Interface != nil && p.Device == nil:
		if err = checkRecord(at+".interface", -1, *p.Interface); err == nil {
			iface = p.Interface.iface()
		}
	case devices:
		err = fmt.Errorf("%s: a memory-device callback's notification names its device (device), not an interface", at)
	default:
		err = fmt.Errorf("%s: a callback's notification names its interface (interface), not a device", at)
	}
	if err != nil {
		return notify.Notification{}, err
	}
	n := notify.NewNotification(event, iface, p.Seqnum, p.ReadAt, cause)
	n.ID = p.ID
	return n, nil
}

// record is the JSON form of a processor or memory block.
func record(i notify.Interface) recordJSON {
	return recordJSON{ClassGUID: i.ClassGUID.String(), SymbolicLink: i.SymbolicLink, Number: i.Number, Node: i.Node,
		PhysStart: i.PhysStart, Size: i.Size, State: i.State, Zones: i.Zones}
}

// deviceRecord is the JSON form of a memory device.
func deviceRecord(d notify.Interface) deviceJSON {
	return deviceJSON{ID: d.Device, SymbolicLink: d.SymbolicLink, Blocks: d.Blocks, Node: d.Node, PhysStart: d.PhysStart, Size: d.Size}
}

// checkEventID refuses an event ID above MaxEventID; field is its name in the file.
func checkEventID(field string, id uint64) error {
	if id > MaxEventID {
		return fmt.Errorf("%s %d is above %d, the largest an agent gives: not a state file an agent wrote", field, id, uint64(MaxEventID))
	}
	return nil
}

// syntaxError describes a JSON error in one line, with the byte offset where it can. data holds
// more than white space.
func syntaxError(data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	// An object ends with its closing brace: a file that opens one and ends otherwise was cut.
	trimmed := bytes.TrimSpace(data)
	cut := trimmed[0] == '{' && trimmed[len(trimmed)-1] != '}'
	switch {
	case errors.As(err, &se) && strings.Contains(se.Error(), "after top-level value"):
		return fmt.Errorf("not a valid state file: more data after the JSON object (at byte %d)", se.Offset)
	case cut, errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &se) && se.Error() == "unexpected end of JSON input":
		return fmt.Errorf("truncated: the JSON ends unfinished at byte %d", len(data))
	case errors.As(err, &se):
		return fmt.Errorf("not a valid state file: %v (at byte %d)", err, se.Offset)
	case errors.As(err, &te) && te.Field == "":
		return fmt.Errorf("not a valid state file: a JSON %s where an object is wanted", te.Value)
	case errors.As(err, &te):
		return fmt.Errorf("not a valid state file: field %s: %s where %s is wanted (at byte %d)", te.Field, te.Value, te.Type, te.Offset)
	}
	return fmt.Errorf("not a valid state file: %v", err)
}

// deviceID is what a memory device id may look like: PNP0C80:00, virtio5.
var deviceID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9:_.-]{0,63}$`)

// entry names entry k of the list field in errors, as field[k]; k < 0 names a record that is not
// in a list (a pending notification's interface or device) field alone.
func entry(field string, k int) string {
	if k < 0 {
		return field
	}
	return fmt.Sprintf("%s[%d]", field, k)
}

// devices validates the memory-device records of the list field and returns them as interfaces,
// sorted by first block. An error names the record field[k].
func (c *checker) devices(field string, recs []deviceJSON) ([]notify.Interface, error) {
	var out []notify.Interface
	seen := map[string]bool{}
	for k, r := range recs {
		d, err := c.device(field, k, r)
		if err != nil {
			return nil, err
		}
		if seen[r.ID] {
			return nil, fmt.Errorf("%s: %s is listed twice", field, r.ID)
		}
		seen[r.ID] = true
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b notify.Interface) int { return cmp.Compare(a.Number, b.Number) })
	return out, nil
}

// device validates the memory-device record r, named entry(field, k) in errors, and returns it as
// an interface.
func (c *checker) device(field string, k int, r deviceJSON) (notify.Interface, error) {
	if !deviceID.MatchString(r.ID) {
		return notify.Interface{}, fmt.Errorf("%s: id %.40q: want a sysfs device name like PNP0C80:00", entry(field, k), r.ID)
	}
	if !strings.HasPrefix(r.SymbolicLink, "/sys/devices/") || path.Clean(r.SymbolicLink) != r.SymbolicLink || path.Base(r.SymbolicLink) != r.ID {
		return notify.Interface{}, fmt.Errorf("%s (%s): symbolic link %.80q is not a clean /sys/devices path ending in the id",
			entry(field, k), r.ID, r.SymbolicLink)
	}
	if r.Node < -1 || r.Node > maxNumber {
		return notify.Interface{}, fmt.Errorf("%s (%s): node %d out of range -1-%d", entry(field, k), r.ID, r.Node, maxNumber)
	}
	blocks, err := sysfs.ParseMemoryBlockList(r.Blocks, 0)
	if err != nil || len(blocks) == 0 {
		return notify.Interface{}, fmt.Errorf("%s (%s): blocks %.40q: want a list of block numbers like 32-35", entry(field, k), r.ID, r.Blocks)
	}
	if err := c.take(len(blocks)); err != nil {
		return notify.Interface{}, fmt.Errorf("%s (%s): blocks: %w", entry(field, k), r.ID, err)
	}
	return notify.Interface{ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: r.SymbolicLink, Number: blocks[0],
		Node: r.Node, PhysStart: r.PhysStart, Size: r.Size, State: "online", Device: r.ID, Blocks: sysfs.FormatCPUList(blocks)}, nil
}

// interfaces validates the records of the list field and returns them as interfaces, sorted. An
// error names the record field[k]. Every record is checked before the interfaces are made, so
// that a list refused costs no more than its decoding.
func (c *checker) interfaces(field string, recs []recordJSON) ([]notify.Interface, error) {
	for k, r := range recs {
		if err := checkRecord(field, k, r); err != nil {
			return nil, err
		}
	}
	out := make([]notify.Interface, len(recs))
	for k, r := range recs {
		out[k] = r.iface()
	}
	slices.SortFunc(out, compare)
	for k := 1; k < len(out); k++ {
		if out[k].SymbolicLink == out[k-1].SymbolicLink {
			return nil, fmt.Errorf("%s: %s is listed twice", field, out[k].SymbolicLink)
		}
	}
	return out, nil
}

// checkRecord validates the record r of a processor or memory block, named entry(field, k) in
// errors. It allocates nothing for a valid record.
func checkRecord(field string, k int, r recordJSON) error {
	class, err := uuid.Parse(r.ClassGUID)
	if err != nil {
		return fmt.Errorf("%s: class_guid %.40q: %v", entry(field, k), r.ClassGUID, err)
	}
	var prefix string
	switch class {
	case notify.GUIDDeviceProcessor:
		prefix = "/sys/devices/system/cpu/cpu"
	case notify.GUIDDeviceMemory:
		prefix = "/sys/devices/system/memory/memory"
	default:
		return fmt.Errorf("%s: class %s is neither processor (%s) nor memory (%s)",
			entry(field, k), class, notify.GUIDDeviceProcessor, notify.GUIDDeviceMemory)
	}
	name := notify.ClassName(class)
	if r.Number < 0 || r.Number > maxNumber {
		return fmt.Errorf("%s: %s number %d out of range 0-%d", entry(field, k), name, r.Number, maxNumber)
	}
	var digits [20]byte // the link compared without making it
	if rest, ok := strings.CutPrefix(r.SymbolicLink, prefix); !ok || rest != string(strconv.AppendInt(digits[:0], int64(r.Number), 10)) {
		return fmt.Errorf("%s: symbolic link %.80q is not that of %s %d (%s%d)", entry(field, k), r.SymbolicLink, name, r.Number, prefix, r.Number)
	}
	if r.Node < -1 || r.Node > maxNumber {
		return fmt.Errorf("%s (%s): node %d out of range -1-%d", entry(field, k), r.SymbolicLink, r.Node, maxNumber)
	}
	return nil
}

// iface is the interface of r, a record checkRecord accepts.
func (r recordJSON) iface() notify.Interface {
	return notify.Interface{
		ClassGUID:    uuid.MustParse(r.ClassGUID),
		SymbolicLink: r.SymbolicLink,
		Number:       r.Number,
		Node:         r.Node,
		PhysStart:    r.PhysStart,
		Size:         r.Size,
		State:        r.State,
		Zones:        r.Zones,
	}
}

// maxNumber bounds CPU numbers, memory block indexes and NUMA nodes: nine digits, as in the
// DEVPATHs the tracker accepts (sysfs.MaxMemoryBlock).
const maxNumber = sysfs.MaxMemoryBlock

// compare orders interfaces with notify.Interface.Less, then by symbolic link, so that duplicates
// (and interfaces of one number with different links) end up next to each other.
func compare(a, b notify.Interface) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return strings.Compare(a.SymbolicLink, b.SymbolicLink)
}
