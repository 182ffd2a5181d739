package dispatch

import (
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
)

// TestTimerCoasts: quick callbacks are timed from one reading per CoastGroup of them, each given
// the mean of the group before, the last of a group what remains; a sudden long one shows on
// the last of its group and ends the coasting until a reading finds them quick again; the end
// of a batch is always read.
func TestTimerCoasts(t *testing.T) {
	var clock time.Duration
	reads := 0
	tm := Timer{at: noReading, read: func() time.Duration { reads++; return clock }}
	// run times callbacks of the given durations as one batch and returns their starts and
	// durations as the Timer gave them.
	run := func(took ...time.Duration) (starts, durs []time.Duration) {
		for k, d := range took {
			starts = append(starts, tm.Start())
			clock += d
			durs = append(durs, tm.Done(k == len(took)-1))
		}
		return starts, durs
	}
	us := time.Microsecond
	// The first batch: read before and after each callback until they prove quick.
	ns500 := 500 * time.Nanosecond
	_, durs := run(ns500, ns500)
	if diff := gocmp.Diff([]time.Duration{ns500, ns500}, durs); diff != "" || reads != 3 {
		t.Fatalf("first batch (-want +got):\n%s%d readings; want 3", diff, reads)
	}
	// Quick ones: a reading per CoastGroup; the estimates are the mean of the group before.
	reads = 0
	took := make([]time.Duration, 2*CoastGroup)
	for k := range took {
		took[k] = ns500
	}
	took[CoastGroup-1] = 2 * ns500            // a little slower: its group's last gets what remains
	took[CoastGroup+2] = 3 * time.Millisecond // sudden
	before := clock
	starts, durs := run(took...)
	var sum time.Duration
	for _, d := range durs {
		sum += d
	}
	if sum != clock-before {
		t.Errorf("durations add up to %s; the batch took %s", sum, clock-before)
	}
	if reads != 3 { // the start, the end of the first group, the end of the batch
		t.Errorf("%d readings for %d callbacks; want 3", reads, len(took))
	}
	if durs[0] != ns500 || durs[CoastGroup-1] != 2*ns500 {
		t.Errorf("first group: %v; want the estimate of %s, then what remains", durs[:CoastGroup], ns500)
	}
	est := (CoastGroup + 1) * ns500 / CoastGroup
	if durs[CoastGroup] != est || durs[len(durs)-1] < 2*time.Millisecond {
		t.Errorf("second group: %v; want the new estimate %s, then the long one last", durs[CoastGroup:], est)
	}
	if starts[1] != starts[0]+ns500 {
		t.Errorf("second start %s after the first; want the estimate %s", starts[1]-starts[0], ns500)
	}
	// After the long one: the first is read at once, and proves them quick again.
	reads = 0
	_, durs = run(us, us, us)
	if diff := gocmp.Diff([]time.Duration{us, us, us}, durs); diff != "" || reads != 3 {
		t.Errorf("after a slow group (-want +got):\n%s%d readings; want 3", diff, reads)
	}
}
