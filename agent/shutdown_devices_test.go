//go:build linux

package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// TestShutdownStopsEveryRegistryAtOnce: at SIGTERM nothing more starts and a callback in flight
// gets the grace, in the memory-device registry too, while the per-block registry waits for a
// callback of its own that takes the whole grace.
func TestShutdownStopsEveryRegistryAtOnce(t *testing.T) {
	a, _, cancel, done := runAgent(t, Options{SysfsPath: fixture(t), ShutdownGrace: 2 * time.Second})
	blockStarted := make(chan struct{})
	// A per-block callback that takes 2.5 s: registry.Stop waits the whole grace for it.
	if _, err := a.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.GUIDDeviceProcessor, "slow-block",
		func(ctx context.Context, n notify.Notification, _ any) error {
			close(blockStarted)
			time.Sleep(2500 * time.Millisecond)
			return nil
		}, nil); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var starts []time.Time
	var cut []time.Duration // how long a device callback ran before its context was cancelled
	if _, err := a.Register(notify.EventCategoryDeviceInterfaceChange, notify.FlagMemoryDevices, notify.GUIDDeviceMemory, "dev",
		func(ctx context.Context, n notify.Notification, _ any) error {
			start := time.Now()
			mu.Lock()
			starts = append(starts, start)
			mu.Unlock()
			select {
			case <-time.After(700 * time.Millisecond): // well within the 2 s grace
			case <-ctx.Done():
				mu.Lock()
				cut = append(cut, time.Since(start))
				mu.Unlock()
			}
			return nil
		}, nil); err != nil {
		t.Fatal(err)
	}
	a.registry.Publish(notify.NewNotification(notify.GUIDDeviceInterfaceArrival, notify.Interface{
		ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: "/sys/devices/system/cpu/cpu42", Number: 42}, 1, time.Now(), notify.CauseUevent))
	for i := range 6 {
		a.devices.Publish(notify.NewNotification(notify.GUIDDeviceInterfaceArrival, notify.Interface{
			ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: "/sys/devices/fake/dimm" + string(rune('0'+i)), Number: i}, 1, time.Now(), notify.CauseUevent))
	}
	<-blockStarted
	// The first memory-device callback is in flight before the stop: one whose goroutine is slow
	// to start could otherwise begin between stopAt and the registry's Stop, correctly, and count
	// as started after SIGTERM.
	waitStarted(t, &mu, &starts)
	stopAt := time.Now()
	cancel() // SIGTERM
	<-done
	done <- nil
	mu.Lock()
	defer mu.Unlock()
	if after := startedAfter(starts, stopAt); after > 0 {
		t.Errorf("%d memory-device callbacks started after SIGTERM (README: nothing more starts)", after)
	}
	if len(cut) > 0 {
		t.Errorf("memory-device callbacks cancelled after running %v, inside the 2 s grace", cut)
	}
}
