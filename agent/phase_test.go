//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// phaseJournal records what Go callbacks inside the agent received, in one sequence.
type phaseJournal struct {
	mu    sync.Mutex
	lines []string
	added chan struct{}
}

func newPhaseJournal() *phaseJournal { return &phaseJournal{added: make(chan struct{}, 100)} }

func (j *phaseJournal) add(s string) {
	j.mu.Lock()
	j.lines = append(j.lines, s)
	j.mu.Unlock()
	j.added <- struct{}{}
}

func (j *phaseJournal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.lines)
}

// wait waits until the journal holds n lines.
func (j *phaseJournal) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for len(j.list()) < n {
		select {
		case <-j.added:
		case <-deadline:
			t.Fatalf("journal has %d lines, want %d:\n%s", len(j.list()), n, strings.Join(j.list(), "\n"))
		}
	}
	return j.list()
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

// unplugBlock takes memory block n out of the sysfs tree at root and returns the function that
// puts it back, as the kernel's hot-add of the block would.
func unplugBlock(t *testing.T, root string, n int) func() {
	t.Helper()
	dir := filepath.Join(root, "devices/system/memory", fmt.Sprintf("memory%d", n))
	aside := filepath.Join(t.TempDir(), filepath.Base(dir))
	if err := os.Rename(dir, aside); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.Rename(aside, dir); err != nil {
			t.Fatal(err)
		}
	}
}

func writeAttr(t *testing.T, root, rel, v string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, rel), []byte(v+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readAttr(t *testing.T, root, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestTwoPhaseHotAdd plays the kernel hot-adding memory33 under the online policy: AddStart, the
// agent's write, AddComplete, and the arrival published only after AddComplete returned although
// the kernel's online uevent was handled while AddComplete still ran. Then a vetoed hot-add
// (memory23) stays offline with AddFailure and a counted veto; then a replay with add-existing.
func TestTwoPhaseHotAdd(t *testing.T) {
	root := fixture(t)
	const state33, state23 = "devices/system/memory/memory33/state", "devices/system/memory/memory23/state"
	writeAttr(t, root, state33, "offline")
	writeAttr(t, root, state23, "offline")
	// Both blocks are hot-added: absent when the agent starts, there when the kernel says add.
	plug33 := unplugBlock(t, root, 33)
	plug23 := unplugBlock(t, root, 23)
	a, src, _, _ := runAgent(t, Options{SysfsPath: root, Config: &config.Config{Online: config.Online{Memory: "online"}}})

	j := newPhaseJournal()
	heldWhileComplete := make(chan bool, 1)
	_, err := a.ChangeRegistry().Register(context.Background(), notify.GUIDDeviceMemory, 0, "pool",
		func(ctx context.Context, n notify.ChangeNotification, _ any) error {
			line := fmt.Sprintf("pool %s %s seqnum=%d", n.State, n.SymbolicLinkName, n.Seqnum)
			if n.Status != nil {
				line += " [" + n.Status.Error() + "]"
			}
			j.add(line)
			switch {
			case n.State == notify.AddStart && n.Interface.Number == 23:
				return errors.New("no room for memory23")
			case n.State == notify.AddComplete && n.Interface.Number == 33:
				// The kernel's online uevent, caused by the write, reaches the agent now; the
				// event loop handles it completely before this callback returns.
				src.send(t, "online", "/devices/system/memory/memory33", "memory", 101)
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					if counterValue(a.metrics.Uevents.WithLabelValues("memory", "online")) == 1 && a.busy.Load() == 0 {
						break
					}
				}
				heldWhileComplete <- !slices.ContainsFunc(a.registry.Active(), func(i notify.Interface) bool {
					return i.SymbolicLink == n.SymbolicLinkName
				})
			}
			return nil
		}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Registry().Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.GUIDDeviceMemory, "watch",
		func(ctx context.Context, n notify.Notification, _ any) error {
			j.add(fmt.Sprintf("watch %s %s seqnum=%d", notify.EventName(n.Event), n.SymbolicLinkName, n.Seqnum))
			return nil
		}, nil); err != nil {
		t.Fatal(err)
	}

	plug33()
	src.send(t, "add", "/devices/system/memory/memory33", "memory", 100)
	want := []string{
		"pool add_start /sys/devices/system/memory/memory33 seqnum=100",
		"pool add_complete /sys/devices/system/memory/memory33 seqnum=100",
		"watch arrival /sys/devices/system/memory/memory33 seqnum=101",
	}
	if diff := cmp.Diff(want, j.wait(t, 3)); diff != "" {
		t.Errorf("hot-add (-want +got):\n%s", diff)
	}
	if !<-heldWhileComplete {
		t.Error("the arrival was published while AddComplete still ran")
	}
	if got := readAttr(t, root, state33); got != "online" {
		t.Errorf("memory33 state %q; want online, written by the agent", got)
	}

	// A veto: no write, AddFailure with the veto, counted.
	plug23()
	src.send(t, "add", "/devices/system/memory/memory23", "memory", 102)
	want = append(want,
		"pool add_start /sys/devices/system/memory/memory23 seqnum=102",
		"pool add_failure /sys/devices/system/memory/memory23 seqnum=102 [vetoed by pool at add_start: no room for memory23]")
	if diff := cmp.Diff(want, j.wait(t, 5)); diff != "" {
		t.Errorf("vetoed hot-add (-want +got):\n%s", diff)
	}
	if got := readAttr(t, root, state23); got != "offline" {
		t.Errorf("memory23 state %q after a veto; want offline", got)
	}
	if v := counterValue(a.phases.Vetoes.WithLabelValues("add_start", "memory", "pool", "error")); v != 1 {
		t.Errorf("vetoes_total{add_start,memory,pool,error} = %v; want 1", v)
	}

	// Add-existing: a replay of the online blocks, AddStart for each, then AddComplete for each.
	r := newPhaseJournal()
	if _, err := a.ChangeRegistry().Register(context.Background(), notify.GUIDDeviceMemory, notify.FlagAddExisting, "late",
		func(ctx context.Context, n notify.ChangeNotification, _ any) error {
			r.add(fmt.Sprintf("%s %s %s", n.State, n.SymbolicLinkName, n.Cause))
			return nil
		}, nil); err != nil {
		t.Fatal(err)
	}
	var wantReplay []string
	for _, s := range []string{"add_start", "add_complete"} {
		for _, b := range []int{0, 1, 32, 33} { // memory23 stayed offline
			wantReplay = append(wantReplay, fmt.Sprintf("%s /sys/devices/system/memory/memory%d existing", s, b))
		}
	}
	if diff := cmp.Diff(wantReplay, r.list()); diff != "" {
		t.Errorf("add-existing replay (-want +got):\n%s", diff)
	}
}

// TestSurpriseRemoval: a block that goes offline without the agent asking gives its target
// registration remove-complete (not requested), and the removal.
func TestSurpriseRemoval(t *testing.T) {
	root := fixture(t)
	a, src, _, _ := runAgent(t, Options{SysfsPath: root})
	j := newPhaseJournal()
	if _, err := a.TargetRegistry().Register("/sys/devices/system/memory/memory32", "guard",
		func(ctx context.Context, n notify.TargetNotification, _ any) error {
			j.add(fmt.Sprintf("guard %s requested=%v seqnum=%d", notify.EventName(n.Event), n.Requested, n.Seqnum))
			return nil
		}, nil); err != nil {
		t.Fatal(err)
	}
	writeAttr(t, root, "devices/system/memory/memory32/state", "offline")
	src.send(t, "offline", "/devices/system/memory/memory33", "memory", 200) // not the target
	src.send(t, "offline", "/devices/system/memory/memory32", "memory", 201)
	if diff := cmp.Diff([]string{"guard remove_complete requested=false seqnum=201"}, j.wait(t, 1)); diff != "" {
		t.Errorf("surprise removal (-want +got):\n%s", diff)
	}
}

// TestMemoryBlockBasics: the onliner's read of a block is sysfs's, without valid_zones.
func TestMemoryBlockBasics(t *testing.T) {
	fs, err := sysfs.NewFS(fixture(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 32, 33} {
		full, err := fs.MemoryBlock(n)
		if err != nil {
			t.Fatal(err)
		}
		basics, err := fs.MemoryBlockBasics(n)
		if err != nil {
			t.Fatal(err)
		}
		full.ValidZones = ""
		if diff := cmp.Diff(full, basics); diff != "" {
			t.Errorf("memory%d (-sysfs without zones +basics):\n%s", n, diff)
		}
	}
	if _, err := fs.MemoryBlockBasics(999); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("MemoryBlockBasics(999) = %v; want an error wrapping fs.ErrNotExist", err)
	}
}
