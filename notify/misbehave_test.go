package notify

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// latencyObserver records the dispatch latency of one owner's callbacks, and counts panics and
// queue overflows per owner.
type latencyObserver struct {
	owner string
	done  map[string]chan struct{} // per owner given to newLatencyObserver: one value per CallbackDone

	mu        sync.Mutex
	latencies []time.Duration
	panics    map[string]int
	overflows map[string]int
}

// newLatencyObserver measures owner's dispatch latency; CallbackDone of owner and of each of
// paced is signalled on o.done[who] (publishPaced waits for it).
func newLatencyObserver(owner string, paced ...string) *latencyObserver {
	o := &latencyObserver{owner: owner, done: map[string]chan struct{}{}, panics: map[string]int{}, overflows: map[string]int{}}
	for _, who := range append(paced, owner) {
		o.done[who] = make(chan struct{}, 1)
	}
	return o
}

func (o *latencyObserver) CallbackStarted(owner string, _ *Notification, latency time.Duration) {
	if owner == o.owner {
		o.mu.Lock()
		o.latencies = append(o.latencies, latency)
		o.mu.Unlock()
	}
}

func (o *latencyObserver) CallbackDone(owner string, _ *Notification, _ time.Duration, err error) {
	var pe *PanicError
	if errors.As(err, &pe) {
		o.mu.Lock()
		o.panics[owner]++
		o.mu.Unlock()
	}
	if ch := o.done[owner]; ch != nil {
		ch <- struct{}{}
	}
}

func (o *latencyObserver) QueueOverflow(owner string, dropped int) {
	o.mu.Lock()
	o.overflows[owner] += dropped
	o.mu.Unlock()
}

func (o *latencyObserver) panicsOf(owner string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.panics[owner]
}

// percentiles returns the 50th and 99th percentiles of ds.
func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	s := slices.Sorted(slices.Values(ds))
	return s[len(s)*50/100], s[len(s)*99/100]
}

// signalling is a callback that records what it receives and then says so on a channel.
type signalling struct {
	recorder
	got chan struct{}
}

func newSignalling() *signalling { return &signalling{got: make(chan struct{}, 1)} }

func (s *signalling) callback(_ context.Context, n Notification, _ any) error {
	s.add(n)
	s.got <- struct{}{}
	return nil
}

// waitGot waits until s has received one more notification; a minute without one is a hang.
func (s *signalling) waitGot(t *testing.T, who string, seq uint64) {
	t.Helper()
	select {
	case <-s.got:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not receive notification %d within a minute", who, seq)
	}
}

// toggles returns n notifications that take 8 CPUs online and offline in turn, with seqnums
// first+1, first+2, ...; start says which of the 8 are active before the first.
func toggles(n int, first uint64, start map[int]bool) []Notification {
	active := map[int]bool{}
	maps.Copy(active, start)
	out := make([]Notification, n)
	for k := range out {
		c := k % 8
		if active[c] {
			out[k] = removal(cpu(c), first+uint64(k)+1)
		} else {
			out[k] = arrival(cpu(c), first+uint64(k)+1)
		}
		active[c] = !active[c]
	}
	return out
}

// publishPaced publishes ns one at a time, each stamped with the time it is published, and waits
// until every one of waitOn has received it, and, with obs, has finished with it (returned or
// panicked) before the next: the dispatch latency measured is that of one notification, not of
// a queue nor of the previous notification's callbacks still running.
func publishPaced(t *testing.T, r *Registry, ns []Notification, waitOn map[string]*signalling, obs *latencyObserver) {
	t.Helper()
	for _, n := range ns {
		n.ReadAt = time.Now()
		if !r.Publish(n) {
			t.Fatalf("Publish(%s %s, seqnum %d) refused", EventName(n.Event), n.SymbolicLinkName, n.Seqnum)
		}
		for who, s := range waitOn {
			s.waitGot(t, who, n.Seqnum)
			if obs == nil {
				continue
			}
			select {
			case <-obs.done[who]:
			case <-time.After(time.Minute):
				t.Fatalf("%s's callback did not finish notification %d within a minute", who, n.Seqnum)
			}
		}
	}
}

// TestMisbehavingCallbacks is guarantee 5 at the registry: a callback that panics on every
// notification, one that blocks forever and one that takes a second per notification, registered
// beside a well-behaved one. The well-behaved one receives every notification in order, without a
// drop, the panicking one keeps receiving, the queues of the stuck ones stay bounded (they are
// resynchronised instead), UnregisterEx of the blocked one gives up at its deadline with an error
// naming it, and the registry carries on. The well-behaved one's dispatch latency, alone and with
// the others, is logged (the report records it; tests do not assert timings).
func TestMisbehavingCallbacks(t *testing.T) {
	n := 500
	if v := os.Getenv("HOTPLUG_MISBEHAVE_NOTIFICATIONS"); v != "" { // the long form: 20000
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			t.Fatalf("HOTPLUG_MISBEHAVE_NOTIFICATIONS=%q: want a number of at least 100", v)
		}
	}
	const limit = 64

	// Alone: the same well-behaved callback in a registry of its own. The two registries take
	// the notifications in alternating chunks, so that what else the machine does at the time
	// weighs on both measurements alike.
	aloneObs := newLatencyObserver("good")
	alone := NewRegistry(Options{Observer: aloneObs, QueueLimit: limit})
	defer closeRegistry(t, alone)
	goodAlone := newSignalling()
	if _, err := alone.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "good", goodAlone.callback, nil); err != nil {
		t.Fatal(err)
	}
	aloneSeq := toggles(n, 0, nil)

	// With the misbehaving ones.
	obs := newLatencyObserver("good", "panics")
	r := NewRegistry(Options{Observer: obs, QueueLimit: limit})
	release := make(chan struct{})
	defer func() {
		close(release) // the blocked callback can return at last
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	good, panicky := newSignalling(), newSignalling()
	var blocked, slow recorder
	callbacks := []struct {
		owner string
		cb    Callback
	}{
		{"panics", func(ctx context.Context, n Notification, u any) error {
			panicky.callback(ctx, n, u)
			panic("callback bug on " + n.SymbolicLinkName)
		}},
		{"blocked", func(_ context.Context, n Notification, _ any) error {
			blocked.add(n)
			<-release // ignores its context: blocked for good
			return nil
		}},
		{"slow", func(_ context.Context, n Notification, _ any) error {
			slow.add(n)
			time.Sleep(time.Second)
			return nil
		}},
		{"good", good.callback},
	}
	entries := map[string]*Entry{}
	for _, c := range callbacks {
		e, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, c.owner, c.cb, nil)
		if err != nil {
			t.Fatalf("Register(%s): %v", c.owner, err)
		}
		entries[c.owner] = e
	}
	published := toggles(n, 0, nil)
	const chunk = 50
	for k := 0; k < n; k += chunk {
		end := min(k+chunk, n)
		publishPaced(t, alone, aloneSeq[k:end], map[string]*signalling{"good": goodAlone}, aloneObs)
		publishPaced(t, r, published[k:end], map[string]*signalling{"good": good, "panics": panicky}, obs)
	}

	if diff := seqDiff(published, good.list()); diff != "" {
		t.Errorf("the well-behaved callback beside misbehaving ones: %s", diff)
	}
	if diff := seqDiff(published, panicky.list()); diff != "" {
		t.Errorf("the panicking callback: %s", diff)
	}
	for deadline := time.Now().Add(time.Minute); obs.panicsOf("panics") < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d panics reported to the Observer after a minute; want %d", obs.panicsOf("panics"), n)
		}
	}
	if got := len(blocked.list()); got != 1 {
		t.Errorf("the blocked callback was called %d times; want 1 (it never returns)", got)
	}
	for _, info := range r.Entries() {
		switch info.Owner {
		case "good", "panics":
			if info.Dropped != 0 || info.Delivered != uint64(n) {
				t.Errorf("%s: delivered %d, dropped %d; want %d delivered, none dropped", info.Owner, info.Delivered, info.Dropped, n)
			}
		case "blocked", "slow":
			// Memory stays bounded: the queue never holds more than the limit; what does not fit
			// is dropped and replaced by a resync.
			if info.Queued > limit || info.Dropped == 0 {
				t.Errorf("%s: %d queued, %d dropped; want at most %d queued and drops counted", info.Owner, info.Queued, info.Dropped, limit)
			}
		}
	}

	// UnregisterEx of the blocked one gives up at its deadline and says why.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err := r.UnregisterEx(ctx, entries["blocked"])
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "blocked") {
		t.Errorf("UnregisterEx of the blocked callback: %v; want an error naming blocked and wrapping context.DeadlineExceeded", err)
	}
	for _, info := range r.Entries() {
		if info.Owner == "blocked" {
			t.Errorf("blocked is still registered after UnregisterEx gave up waiting")
		}
	}
	// The registry carries on for the others.
	more := toggles(8, uint64(n), activeAfter(published))
	publishPaced(t, r, more, map[string]*signalling{"good": good, "panics": panicky}, obs)
	if diff := seqDiff(append(slices.Clone(published), more...), good.list()); diff != "" {
		t.Errorf("the well-behaved callback after UnregisterEx timed out: %s", diff)
	}

	p50a, p99a := percentiles(aloneObs.latencies)
	p50, p99 := percentiles(obs.latencies)
	t.Logf("dispatch latency of the well-behaved callback over %d notifications: alone p50 %v p99 %v; "+
		"beside a panicking, a blocked and a 1 s callback p50 %v p99 %v (p99 ratio %.2f)",
		n, p50a, p99a, p50, p99, float64(p99)/float64(p99a))
}

// seqDiff compares the seqnums and events of got with want and describes the first difference.
func seqDiff(want, got []Notification) string {
	for k := range min(len(want), len(got)) {
		if want[k].Seqnum != got[k].Seqnum || want[k].Event != got[k].Event || want[k].SymbolicLinkName != got[k].SymbolicLinkName {
			return fmt.Sprintf("notification %d is the %s of %s (seqnum %d); want the %s of %s (seqnum %d)", k,
				EventName(got[k].Event), got[k].SymbolicLinkName, got[k].Seqnum,
				EventName(want[k].Event), want[k].SymbolicLinkName, want[k].Seqnum)
		}
	}
	if len(want) != len(got) {
		return fmt.Sprintf("received %d notifications; want %d", len(got), len(want))
	}
	return ""
}

// activeAfter returns which of the 8 CPUs of toggles are active after ns.
func activeAfter(ns []Notification) map[int]bool {
	m := map[int]bool{}
	for _, n := range ns {
		m[n.Interface.Number] = n.IsArrival()
	}
	return m
}

// TestStuckRegistrationLargeChange: a registration blocked while more interfaces change than its
// queue holds (a large memory hot-add) must cost Publish no more than a queued notification does,
// and count each notification it misses once. The resync it is owed is computed when it can
// take notifications again, against the interfaces active then.
func TestStuckRegistrationLargeChange(t *testing.T) {
	const blocks, limit = 1000, 16
	r := NewRegistry(Options{QueueLimit: limit})
	release, entered := make(chan struct{}), make(chan struct{})
	var stuck recorder
	if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceMemory, "stuck", func(_ context.Context, n Notification, _ any) error {
		if stuck.add(n) == 1 {
			close(entered)
			<-release
		}
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	goodSig := &signalling{got: make(chan struct{}, 1)}
	if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceMemory, "good", goodSig.callback, nil); err != nil {
		t.Fatal(err)
	}
	var published []Notification
	for k := range blocks {
		published = append(published, arrival(mem(k), uint64(k+1)))
	}
	// The first notification blocks the stuck callback; the rest come while it is blocked (were
	// they published before its goroutine took the first, the resync of that first overflow
	// would be dropped in turn and counted again).
	publishPaced(t, r, published[:1], map[string]*signalling{"good": goodSig}, nil)
	select {
	case <-entered:
	case <-time.After(time.Minute):
		t.Fatal("the stuck callback was not called within a minute")
	}
	publishPaced(t, r, published[1:], map[string]*signalling{"good": goodSig}, nil)
	if diff := seqDiff(published, goodSig.list()); diff != "" {
		t.Errorf("the well-behaved registration: %s", diff)
	}
	for _, info := range r.Entries() {
		if info.Owner == "stuck" && (info.Dropped > blocks || info.Queued > limit) {
			t.Errorf("stuck registration: %d dropped, %d queued after %d notifications; want at most %d queued and each missed notification counted once", info.Dropped, info.Queued, blocks, limit)
		}
	}
	close(release)
	// Once free, it receives the arrivals it missed (as a resync), ending in the true state.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		view := map[string]bool{}
		for _, n := range stuck.list() {
			view[n.SymbolicLinkName] = n.IsArrival()
		}
		if len(view) == blocks {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stuck registration, released, knows %d of the %d active blocks after a minute", len(view), blocks)
		}
	}
	closeRegistry(t, r)
}
