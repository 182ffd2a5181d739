package notify

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// ownerObs is an OwnerObserver that records which of its owners' Observers saw which calls.
type ownerObs struct {
	mu    sync.Mutex
	calls []string
}

func (o *ownerObs) record(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, s)
}

func (o *ownerObs) CallbackStarted(owner string, _ *Notification, _ time.Duration) {
	o.record("registry started " + owner)
}

func (o *ownerObs) CallbackDone(owner string, _ *Notification, _ time.Duration, _ error) {
	o.record("registry done " + owner)
}

func (o *ownerObs) QueueOverflow(owner string, _ int) { o.record("registry overflow " + owner) }

func (o *ownerObs) ForOwner(owner string) Observer {
	o.record("for " + owner)
	return boundObs{o, owner}
}

// boundObs is the Observer ownerObs gives one owner.
type boundObs struct {
	o     *ownerObs
	bound string
}

func (b boundObs) CallbackStarted(owner string, _ *Notification, _ time.Duration) {
	b.o.record(b.bound + " started " + owner)
}

func (b boundObs) CallbackDone(owner string, _ *Notification, _ time.Duration, _ error) {
	b.o.record(b.bound + " done " + owner)
}

func (b boundObs) QueueOverflow(owner string, _ int) { b.o.record(b.bound + " overflow " + owner) }

// TestOwnerObserver: with an OwnerObserver, each registration reports to the Observer ForOwner
// gave for its owner, asked once when it registers.
func TestOwnerObserver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := &ownerObs{}
		r := NewRegistry(Options{Observer: obs})
		defer closeRegistry(t, r)
		noop := func(context.Context, Notification, any) error { return nil }
		for _, owner := range []string{"a", "b"} {
			if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, owner, noop, nil); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
		}
		r.Publish(arrival(cpu(1), 1))
		synctest.Wait()
		r.Publish(removal(cpu(1), 2))
		synctest.Wait()
		obs.mu.Lock()
		defer obs.mu.Unlock()
		count := map[string]int{}
		for _, c := range obs.calls {
			count[c]++
		}
		want := map[string]int{"for a": 1, "for b": 1, "a started a": 2, "a done a": 2, "b started b": 2, "b done b": 2}
		if diff := cmp.Diff(want, count); diff != "" {
			t.Errorf("Observer calls (-want +got):\n%s", diff)
		}
	})
}
