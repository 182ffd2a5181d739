package agent

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/statefile"
	"github.com/hotplug-agent/hotplug-agent/udev"
)

// plugCPU adds CPU n to the sysfs tree at root, offline, as the kernel's hot-add leaves it, and
// returns its online file.
func plugCPU(t *testing.T, root string, n int) string {
	t.Helper()
	dir := filepath.Join(root, "devices/system/cpu", "cpu"+strconv.Itoa(n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	online := filepath.Join(dir, "online")
	if err := os.WriteFile(online, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return online
}

// waitFile waits until the file at p holds want (trimmed).
func waitFile(t *testing.T, p, want, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(p)
		if strings.TrimSpace(string(b)) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s holds %q after 10 s; want %q", what, p, b, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHotAddedWhileDown: a CPU and a memory block that came while the agent was stopped (their add
// uevents reached no socket) are hot-adds at its next start: the online policy onlines them. A
// CPU that was there, offline, before the stop (an administrator's) is left offline.
func TestHotAddedWhileDown(t *testing.T) {
	root := fixture(t)
	statePath := filepath.Join(t.TempDir(), "state.json")
	cfg := &config.Config{Online: config.Online{CPU: "online", Memory: "online"}}
	adminOff := plugCPU(t, root, 5)
	const state33 = "devices/system/memory/memory33/state"
	writeAttr(t, root, state33, "offline")
	plug33 := unplugBlock(t, root, 33)
	_, _, stop, done := runAgent(t, Options{SysfsPath: root, StatePath: statePath, Config: cfg})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for runAgent's cleanup

	hotCPU := plugCPU(t, root, 6)
	plug33()
	runAgent(t, Options{SysfsPath: root, StatePath: statePath, Config: cfg})
	waitFile(t, hotCPU, "1", "cpu6, hot-added while the agent was down")
	waitFile(t, filepath.Join(root, state33), "online", "memory33, hot-added while the agent was down")
	if b, _ := os.ReadFile(adminOff); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("cpu5, offline since before the first start, is %q: the agent onlined a CPU that was not hot-added", b)
	}
}

// overflowSource is a fake source that can also report a receive queue overflow.
type overflowSource struct {
	*fakeSource
	overflow chan struct{}
}

func (s *overflowSource) Read(ctx context.Context) (udev.Event, error) {
	select {
	case <-ctx.Done():
		return udev.Event{}, ctx.Err()
	case <-s.closed:
		return udev.Event{}, net.ErrClosed
	case ev := <-s.ch:
		return ev, nil
	case <-s.overflow:
		return udev.Event{}, udev.ErrOverflow
	}
}

// TestHotAddLostInOverflow: a CPU whose add uevent was lost when the socket's queue overflowed is
// found by the rescan that follows, and onlined under the policy as its add would have had it.
func TestHotAddLostInOverflow(t *testing.T) {
	root := fixture(t)
	cfg := &config.Config{Online: config.Online{CPU: "online"}}
	src := &overflowSource{fakeSource: newFakeSource(), overflow: make(chan struct{})}
	a, err := New(Options{SysfsPath: root, Source: src, ListenAddresses: []string{"127.0.0.1:0"}, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	hotCPU := plugCPU(t, root, 6)
	src.overflow <- struct{}{}
	waitFile(t, hotCPU, "1", "cpu6, whose add uevent was lost in an overflow")
}

// TestBootMemoryAcrossRestarts: the state file keeps which memory blocks are boot memory, for
// the boot it names. A restart within that boot counts the blocks hot-added while an earlier run
// ran, or while the agent was down, as hot-added memory (the zone planner's count); after a
// reboot, what is present at the first start is the boot memory.
func TestBootMemoryAcrossRestarts(t *testing.T) {
	root := fixture(t) // memory blocks 0, 1, 23, 32 and 33
	dir := t.TempDir()
	statePath, bootID := filepath.Join(dir, "state.json"), filepath.Join(dir, "boot_id")
	const boot1, boot2 = "4c7e0f5a-2b1d-4e8a-9f3c-6d5b2a1e0c97", "9a0d3e5c-7f21-4b6e-8c4d-2e1f0a9b8c76"
	if err := os.WriteFile(bootID, []byte(boot1+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeAttr(t, root, "devices/system/memory/memory33/state", "offline")
	plug23, plug33 := unplugBlock(t, root, 23), unplugBlock(t, root, 33)
	var logs testenv.Buffer
	o := Options{SysfsPath: root, StatePath: statePath, BootIDPath: bootID, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	run := func(during func(a *Agent, src *fakeSource)) []int {
		t.Helper()
		a, src, stop, done := runAgent(t, o)
		during(a, src)
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		done <- nil // for runAgent's cleanup
		s, err := statefile.Load(statePath)
		if err != nil {
			t.Fatal(err)
		}
		if s.BootMemory == nil || s.BootMemory.BootID != readAttr(t, dir, "boot_id") {
			t.Fatalf("boot memory in the state file: %+v; want that of boot %s", s.BootMemory, readAttr(t, dir, "boot_id"))
		}
		return s.BootMemory.Blocks
	}

	got := run(func(a *Agent, src *fakeSource) {
		plug33()
		src.send(t, "add", "/devices/system/memory/memory33", "memory", 900)
		waitUntil(t, "memory33 present", func() bool {
			_, found := slices.BinarySearch(a.tracker.Present().MemoryBlocks, 33)
			return found
		})
	})
	if want := []int{0, 1, 32}; !slices.Equal(got, want) {
		t.Errorf("boot memory after memory33's hot-add: %v; want %v", got, want)
	}

	plug23() // while the agent is down
	logs.Take()
	got = run(func(*Agent, *fakeSource) {})
	if want := []int{0, 1, 32}; !slices.Equal(got, want) {
		t.Errorf("boot memory after a restart: %v; want %v", got, want)
	}
	if !strings.Contains(logs.String(), "memory blocks hot-added earlier in this boot") || !strings.Contains(logs.String(), "memory_blocks=33") {
		t.Errorf("no line says that memory33 was hot-added earlier in this boot:\n%s", logs.String())
	}

	if err := os.WriteFile(bootID, []byte(boot2+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := run(func(*Agent, *fakeSource) {}); !slices.Equal(got, []int{0, 1, 23, 32, 33}) {
		t.Errorf("boot memory after a reboot: %v; want every block present", got)
	}
}

// TestHotRemoveLostInOverflow: a memory block whose remove uevent was lost when the socket's
// queue overflowed is found gone by the rescan that follows, and the online policy forgets it as
// the remove would have had it: it is no longer boot memory in the state file, so that the zone
// planner does not count memory the machine no longer has.
func TestHotRemoveLostInOverflow(t *testing.T) {
	root := fixture(t) // memory blocks 0, 1, 23, 32 and 33
	dir := t.TempDir()
	statePath, bootID := filepath.Join(dir, "state.json"), filepath.Join(dir, "boot_id")
	if err := os.WriteFile(bootID, []byte("4c7e0f5a-2b1d-4e8a-9f3c-6d5b2a1e0c97\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := &overflowSource{fakeSource: newFakeSource(), overflow: make(chan struct{})}
	a, err := New(Options{SysfsPath: root, Source: src, ListenAddresses: []string{"127.0.0.1:0"},
		StatePath: statePath, BootIDPath: bootID})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
		}
	})

	unplugBlock(t, root, 32)
	src.overflow <- struct{}{}
	waitUntil(t, "memory32 gone after the rescan", func() bool {
		_, found := slices.BinarySearch(a.tracker.Present().MemoryBlocks, 32)
		return !found
	})
	cancel()
	stopped = true
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s, err := statefile.Load(statePath)
	if err != nil {
		t.Fatal(err)
	}
	if s.BootMemory == nil || !slices.Equal(s.BootMemory.Blocks, []int{0, 1, 23, 33}) {
		t.Errorf("boot memory in the state file after memory32's removal was lost in an overflow: %+v; want [0 1 23 33]", s.BootMemory)
	}
}
