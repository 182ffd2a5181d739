package agent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/config"
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
