//go:build linux

package agent

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// TestShutdownWithStuckLoopStartsNothing: with the event loop wedged on a sysfs read, SIGTERM
// stops the callbacks at once: none queued starts while the shutdown waits for the loop.
func TestShutdownWithStuckLoopStartsNothing(t *testing.T) {
	root := fixture(t)
	a, src, cancel, done := runAgent(t, Options{SysfsPath: root, ShutdownGrace: 2 * time.Second})
	var mu sync.Mutex
	var starts []time.Time
	if _, err := a.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.GUIDDeviceProcessor, "slow",
		func(ctx context.Context, n notify.Notification, _ any) error {
			mu.Lock()
			starts = append(starts, time.Now())
			mu.Unlock()
			time.Sleep(time.Second) // the next would start long after the stop
			return nil
		}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		a.registry.Publish(notify.NewNotification(notify.GUIDDeviceInterfaceArrival, notify.Interface{
			ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: "/sys/devices/system/cpu/cpu" + string(rune('a'+i)), Number: 100 + i}, 1, time.Now(), notify.CauseUevent))
	}
	cpu7 := filepath.Join(root, "devices/system/cpu/cpu7")
	os.MkdirAll(cpu7, 0o755)
	if err := syscall.Mkfifo(filepath.Join(cpu7, "online"), 0o644); err != nil {
		t.Fatal(err)
	}
	src.send(t, "online", "/devices/system/cpu/cpu7", "cpu", 100) // the loop blocks reading the FIFO
	// The loop is wedged once it has the FIFO open for reading: only then does a writer open
	// without blocking. The writer stays open, with nothing written, so that the read waits on.
	var w *os.File
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		var err error
		if w, err = os.OpenFile(filepath.Join(cpu7, "online"), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the event loop did not open cpu7's online FIFO within 10 s: %v", err)
		}
	}
	defer func() {
		// Unwedge the FIFO reader left behind.
		w.Write([]byte("1\n"))
		w.Close()
	}()
	waitStarted(t, &mu, &starts)
	stopAt := time.Now()
	cancel()
	<-done
	done <- nil
	mu.Lock()
	defer mu.Unlock()
	if after := startedAfter(starts, stopAt); after > 0 {
		t.Errorf("%d callbacks started after SIGTERM while shutdown waited for the wedged loop", after)
	}
}

// startedAfter counts the starts after at.
// waitStarted waits (up to 10 s) until *starts, guarded by mu, holds a callback's start.
func waitStarted(t *testing.T, mu *sync.Mutex, starts *[]time.Time) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		n := len(*starts)
		mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no callback started within 10 s")
		}
	}
}

func startedAfter(starts []time.Time, at time.Time) int {
	n := 0
	for _, s := range starts {
		if s.After(at) {
			n++
		}
	}
	return n
}
