package notify

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestCloseWaitsForSelfUnregistered: a callback that unregisters its own entry (UnregisterEx
// semantics: from inside, it returns at once) and then goes on running is still a callback in
// flight, and Close waits for it: up to its ctx, naming the owner when that ends first, and until
// it returns otherwise. In every registry.
func TestCloseWaitsForSelfUnregistered(t *testing.T) {
	// Each case registers "self" with cb, makes the registry call it once, and returns Close.
	type setup func(t *testing.T, cb func(ctx context.Context, unregister func() error)) (closeFn func(context.Context) error)
	tests := []struct {
		name  string
		setup setup
	}{
		{"device interface", func(t *testing.T, cb func(context.Context, func() error)) func(context.Context) error {
			r := NewRegistry(Options{})
			var e *Entry
			e, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "self",
				func(ctx context.Context, _ Notification, _ any) error {
					cb(ctx, func() error { return r.UnregisterEx(context.Background(), e) })
					return nil
				}, nil)
			if err != nil {
				t.Fatal(err)
			}
			r.Publish(arrival(cpu(1), 1))
			return r.Close
		}},
		{"two-phase", func(t *testing.T, cb func(context.Context, func() error)) func(context.Context) error {
			r := NewChangeRegistry(ChangeOptions{Timeout: time.Hour})
			var e *ChangeEntry
			e = mustRegisterChange(t, r, GUIDDeviceProcessor, 0, "self", func(ctx context.Context, _ ChangeNotification, _ any) error {
				cb(ctx, func() error { return r.Unregister(context.Background(), e) })
				return nil
			})
			go func() {
				if add, err := r.Begin(context.Background(), offlineCPU(1), 0, testTime, CauseUevent); err == nil {
					add.Complete()
				}
			}()
			return r.Close
		}},
		{"target device", func(t *testing.T, cb func(context.Context, func() error)) func(context.Context) error {
			r := NewTargetRegistry(TargetOptions{Timeout: time.Hour})
			var e *TargetEntry
			e = mustRegisterTarget(t, r, cpu1Link, "self", func(ctx context.Context, _ TargetNotification, _ any) error {
				cb(ctx, func() error { return r.Unregister(context.Background(), e) })
				return nil
			})
			r.Removed(removal(cpu(1), 1))
			return r.Close
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				unregistered := make(chan error, 1)
				release, returned := make(chan struct{}), make(chan struct{})
				closeFn := tt.setup(t, func(_ context.Context, unregister func() error) {
					unregistered <- unregister()
					<-release
					close(returned)
				})
				releaseOnce := sync.OnceFunc(func() { close(release) })
				defer func() { // a failing test must not leave the bubble's goroutines blocked
					releaseOnce()
					closeFn(context.Background())
				}()
				if err := <-unregistered; err != nil {
					t.Fatalf("unregister from inside the callback: %v", err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				err := closeFn(ctx)
				if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "self") {
					t.Fatalf("Close while the self-unregistered callback runs = %v; want its deadline, naming self", err)
				}
				closed := make(chan error, 1)
				go func() { closed <- closeFn(context.Background()) }()
				synctest.Wait()
				select {
				case err := <-closed:
					t.Fatalf("Close returned (%v) while the callback runs", err)
				default:
				}
				releaseOnce()
				if err := <-closed; err != nil {
					t.Fatalf("Close once the callback returned: %v", err)
				}
				select {
				case <-returned:
				default:
					t.Error("Close returned before the callback did")
				}
			})
		})
	}
}
