//go:build linux

package agent

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/udev"
)

// soakEvents is how many events TestSoak pushes: 1,000,000 with HOTPLUG_SOAK_EVENTS=1000000
// (the long form), 200,000 by default and in CI, 20,000 with -short.
func soakEvents(t *testing.T) int {
	if v := os.Getenv("HOTPLUG_SOAK_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 10 {
			t.Fatalf("HOTPLUG_SOAK_EVENTS=%q: want a number of at least 10", v)
		}
		return n
	}
	if testing.Short() {
		return 20000
	}
	return 200000
}

// TestSoak is guarantee 7 through a fake source: uevents as raw kernel bytes, parsed, tracked
// against a sysfs fixture, published and dispatched to a callback, each one a notification.
// Resident memory may grow by less than 5% between the 10% and 100% marks (under the race
// detector, whose own memory dominates, the Go heap and stacks by less than 512 KiB), and the
// goroutines and file descriptors after the agent stops are those before it started.
func TestSoak(t *testing.T) {
	root := fixture(t)
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)

	src := newFakeSource()
	a, err := New(Options{SysfsPath: root, Source: src, ListenAddresses: []string{"127.0.0.1:0"},
		Config: nil, Logger: nil})
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	if _, err := a.Registry().Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.GUIDDeviceProcessor, "soak",
		func(context.Context, notify.Notification, any) error { got.Add(1); return nil }, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	n := soakEvents(t)
	raw := [2][]byte{}
	var rss10, heap10 int64
	start := time.Now()
	for i := range n {
		action := "offline" // cpu1 starts online
		if i%2 == 1 {
			action = "online"
		}
		seq := uint64(i + 1)
		raw[i%2] = fmt.Appendf(raw[i%2][:0], "%s@/devices/system/cpu/cpu1\x00ACTION=%s\x00DEVPATH=/devices/system/cpu/cpu1\x00SUBSYSTEM=cpu\x00SEQNUM=%d\x00", action, action, seq)
		ev, err := udev.Parse(raw[i%2])
		if err != nil {
			t.Fatal(err)
		}
		ev.ReadAt = time.Now()
		src.ch <- ev
		if i+1 == n/10 {
			waitFor(t, &got, int64(i+1))
			rss10, heap10 = rss(t), goMemory()
		}
	}
	waitFor(t, &got, int64(n))
	rss100, heap100 := rss(t), goMemory()
	elapsed := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	growth := float64(rss100-rss10) / float64(rss10) * 100
	heapGrowth := float64(heap100-heap10) / float64(heap10) * 100
	t.Logf("%d notifications in %s (%.0f/s); RSS at 10%%: %d KiB, at 100%%: %d KiB (%+.1f%%); Go heap and stacks in use: %d KiB, %d KiB (%+.1f%%)",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), rss10>>10, rss100>>10, growth, heap10>>10, heap100>>10, heapGrowth)
	switch {
	case raceDetector && heap100-heap10 >= raceHeapSlack:
		// Under the race detector most of the resident memory is its own shadow and history,
		// which grow with the addresses the heap has ever spanned, under load more than
		// without: there the agent's memory is the Go heap and stacks. They are some 3 MiB,
		// and the runtime moves them by 100 to 150 KiB from run to run, so the bound is
		// absolute: a leak of a few bytes per notification exceeds it.
		t.Errorf("the Go heap and stacks in use grew by %d KiB between the 10%% and 100%% marks; want under %d KiB", (heap100-heap10)>>10, raceHeapSlack>>10)
	case !raceDetector && growth >= 5:
		t.Errorf("resident memory grew by %.1f%% between the 10%% and 100%% marks; want under 5%%", growth)
	}
	// Goroutines and descriptors: what the agent started has ended.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > goroutines {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d before, %d after the agent stopped:\n%s", goroutines, g, buf[:runtime.Stack(buf, true)])
	}
	if f := openFDs(t); f > fds {
		t.Errorf("file descriptors: %d before, %d after the agent stopped", fds, f)
	}
}

func waitFor(t *testing.T, got *atomic.Int64, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for got.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d notifications delivered within 5 minutes", got.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// rss is the resident set after a collection, so that garbage not yet collected does not count.
// raceHeapSlack bounds the growth of the Go heap and stacks in TestSoak under the race detector.
const raceHeapSlack = 512 << 10

// goMemory is the Go heap and stacks in use after a collection: what a leak in the agent grows.
func goMemory() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}

func rss(t *testing.T) int64 {
	runtime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
