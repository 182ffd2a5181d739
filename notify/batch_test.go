package notify

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/google/go-cmp/cmp"
)

// TestUnregisterDropsWhatWasTakenTogether: notifications published before the dispatch goroutine
// runs are handed to it together; when the entry is unregistered while the first callback of
// them runs, none of the others starts, and Entries counts them as queued until then.
func TestUnregisterDropsWhatWasTakenTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		defer closeRegistry(t, r)
		release := make(chan struct{})
		var rec recorder
		cb := func(ctx context.Context, n Notification, _ any) error {
			if rec.add(n) == 1 {
				<-release
			}
			return nil
		}
		e, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "leaver", cb, nil)
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		for seq := uint64(1); seq <= 4; seq++ {
			if seq%2 == 1 {
				r.Publish(arrival(cpu(1), seq))
			} else {
				r.Publish(removal(cpu(1), seq))
			}
		}
		synctest.Wait() // the first callback runs and blocks; the other three wait behind it
		if got := r.Entries(); len(got) != 1 || got[0].Queued != 3 {
			t.Errorf("Entries() = %+v while the first callback runs; want one entry with 3 queued", got)
		}
		if err := r.Unregister(e); err != nil {
			t.Fatalf("Unregister: %v", err)
		}
		close(release)
		synctest.Wait()
		if diff := cmp.Diff([]uint64{1}, seqnums(rec.list())); diff != "" {
			t.Errorf("callbacks run (-want +got):\n%s", diff)
		}
	})
}
