package dispatch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
)

// note is a test notification: the arrival or removal of interface iface (its key is its
// name, its details its value).
type note struct {
	arrival bool
	key     string
	iface   int
}

func (n note) String() string {
	if n.arrival {
		return fmt.Sprintf("+%s=%d", n.key, n.iface)
	}
	return fmt.Sprintf("-%s=%d", n.key, n.iface)
}

// testSpec keys an interface by its value as a string.
func testSpec(limit int) *Spec[note, int] {
	return &Spec[note, int]{
		Limit:   limit,
		Read:    func(n note) (string, bool, int) { return n.key, n.arrival, n.iface },
		Note:    func(arrival bool, i int, _ time.Time) note { return note{arrival, fmt.Sprint("k", i%10), i} },
		Compare: cmp.Compare[int],
	}
}

// takeAll takes everything queued, as the goroutine would, one Take after another.
func takeAll(m *Mailbox[note, int]) []note {
	var out []note
	for m.Len() > 0 {
		out = m.Take(out, 10)
	}
	return out
}

func strs(ns []note) []string {
	out := make([]string, len(ns))
	for k, n := range ns {
		out[k] = n.String()
	}
	return out
}

// TestMailboxWakesOnlyAWaitingGoroutine: an Offer asks to wake the goroutine only when it said
// it waits, once.
func TestMailboxWakesOnlyAWaitingGoroutine(t *testing.T) {
	var m Mailbox[note, int]
	m.Init(testSpec(0))
	if m.Offer(note{true, "k1", 1}) {
		t.Error("Offer to a busy goroutine asked to wake it")
	}
	m.Wait()
	if !m.Offer(note{false, "k1", 1}) {
		t.Error("Offer to a waiting goroutine did not ask to wake it")
	}
	if m.Offer(note{true, "k1", 1}) {
		t.Error("a second Offer asked to wake the goroutine again")
	}
	got := m.Take(nil, 2)
	if diff := gocmp.Diff([]string{"+k1=1", "-k1=1"}, strs(got)); diff != "" {
		t.Errorf("Take(2) (-want +got):\n%s", diff)
	}
	if m.Len() != 1 || m.Pushed() != 3 {
		t.Errorf("Len %d, Pushed %d after taking 2 of 3; want 1 and 3", m.Len(), m.Pushed())
	}
}

// TestMailboxOverflowResyncs: a full mailbox drops its queue, counts what it dropped, and
// then owes the resync from what was taken to the truth; a removed one takes nothing.
func TestMailboxOverflowResyncs(t *testing.T) {
	var m Mailbox[note, int]
	m.Init(testSpec(2))
	m.Start([]int{1, 2}, func(i int) string { return fmt.Sprint("k", i) }, false, nil)
	m.Offer(note{false, "k1", 1})
	m.Offer(note{true, "k3", 3})
	m.Offer(note{false, "k2", 2}) // over the limit: all three dropped
	m.Offer(note{true, "k4", 4})  // stale: dropped too
	if !m.Stale() || m.Len() != 0 || m.Dropped() != 4 {
		t.Fatalf("Stale %v, Len %d, Dropped %d; want true, 0, 4", m.Stale(), m.Len(), m.Dropped())
	}
	if o := m.TakeOverflow(); o != 4 {
		t.Errorf("TakeOverflow = %d; want 4", o)
	}
	truth := map[string]int{"k2": 22, "k3": 3, "k4": 4}
	m.Resync(truth, func(i int) bool { return i != 4 }, nil)
	want := []string{"-k1=1", "-k2=2", "+k3=3", "+k2=22"}
	if diff := gocmp.Diff(want, strs(takeAll(&m))); diff != "" {
		t.Errorf("resync (-want +got):\n%s", diff)
	}
	if diff := gocmp.Diff(map[string]int{"k2": 22, "k3": 3}, m.View()); diff != "" {
		t.Errorf("view after the resync (-want +got):\n%s", diff)
	}
	if !m.Remove() || m.Remove() {
		t.Error("Remove: want true, then false")
	}
	if m.Offer(note{true, "k5", 5}) || m.Len() != 0 {
		t.Error("a removed mailbox took an Offer")
	}
}

// TestMailboxStartIncludesExisting: with include, each existing interface arrives once, before
// what is offered later.
func TestMailboxStartIncludesExisting(t *testing.T) {
	var m Mailbox[note, int]
	m.Init(testSpec(0))
	m.Start([]int{1, 2}, func(i int) string { return fmt.Sprint("k", i) }, true,
		func(n note) note { n.iface *= 10; return n })
	m.Offer(note{false, "k1", 10})
	if diff := gocmp.Diff([]string{"+k1=10", "+k2=20", "-k1=10"}, strs(takeAll(&m))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestWorkerWait: Wait from the worker's own goroutine returns at once; from another it waits
// for the goroutine's end, or for its context; WaitAll names who still runs.
func TestWorkerWait(t *testing.T) {
	w := NewWorker()
	release := make(chan struct{})
	inside := make(chan error, 1)
	var exited bool
	w.Start(func() {
		inside <- w.Wait(context.Background())
		<-release
	}, func(clean bool) { exited = clean })
	if err := <-inside; err != nil {
		t.Fatalf("Wait from the worker's goroutine = %v; want nil at once", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := w.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait while it runs = %v; want the context's error", err)
	}
	if got := WaitAll(ctx, []*Worker{w, w}, func(w *Worker) *Worker { return w },
		func(*Worker) string { return "busy" }); len(got) != 1 || got[0] != "busy" {
		t.Errorf("WaitAll = %q; want [busy]", got)
	}
	close(release)
	if err := w.Wait(context.Background()); err != nil {
		t.Errorf("Wait once it ends = %v", err)
	}
	if !exited || w.Context().Err() == nil {
		t.Errorf("after the end: exited clean %v, context %v; want true and cancelled", exited, w.Context().Err())
	}
}

// TestSet: registrations stay in order, stay live after Delete until Exited, and a closed set
// refuses more.
func TestSet(t *testing.T) {
	var s Set[string]
	for _, r := range []string{"a", "b", "c"} {
		s.Add(r)
	}
	if !s.Delete("b") || s.Delete("b") {
		t.Error("Delete: want true, then false")
	}
	s.Exited("c")
	if diff := gocmp.Diff([]string{"a"}, s.Registered()); diff != "" {
		t.Errorf("Registered (-want +got):\n%s", diff)
	}
	reg, live := s.Close()
	slices.Sort(live)
	if diff := gocmp.Diff([]string{"a"}, reg); diff != "" {
		t.Errorf("Close registered (-want +got):\n%s", diff)
	}
	if diff := gocmp.Diff([]string{"a", "b"}, live); diff != "" {
		t.Errorf("Close live (-want +got):\n%s", diff)
	}
	if s.Add("d") || !s.Closed() || len(s.Registered()) != 0 {
		t.Error("a closed set took a registration")
	}
}

// TestMailboxCountsOnlyMissedNotifications: what was made for the registration alone (its
// existing interfaces, a resync) is taken one at a time and, dropped by an overflow, not counted
// as missed; notifications taken and not started count against the bound.
func TestMailboxCountsOnlyMissedNotifications(t *testing.T) {
	var m Mailbox[note, int]
	m.Init(testSpec(3))
	m.Start([]int{1, 2, 3}, func(i int) string { return fmt.Sprint("k", i) }, true, nil)
	if got := m.Take(nil, 10); len(got) != 1 {
		t.Fatalf("Take(10) of made notifications took %d; want 1", len(got))
	}
	m.Offer(note{true, "k4", 4}) // 2 made + 1 held: at the bound, dropped
	if m.Dropped() != 1 || !m.Stale() || m.Held() != 1 {
		t.Fatalf("Dropped %d, Stale %v, Held %d; want 1 (the offer, not the made ones), true, 1", m.Dropped(), m.Stale(), m.Held())
	}
	m.Started()
	m.Resync(map[string]int{"k1": 1, "k2": 2}, nil, nil) // the view holds k1: one made arrival
	m.Offer(note{true, "k5", 5})
	m.Offer(note{true, "k6", 6})
	if got := m.Take(nil, 10); len(got) != 1 || strs(got)[0] != "+k2=2" {
		t.Errorf("Take(10) after a resync = %v; want the made +k2=2 alone", strs(got))
	}
	if got := m.Take(nil, 10); len(got) != 2 || m.Held() != 3 {
		t.Errorf("then Take(10) = %v with %d held; want the two offered, 3 held", strs(got), m.Held())
	}
}

// tracked is a notification of an interface that says what it replaced, for a Tracking mailbox.
type tracked struct {
	note
	prior int
}

// TestMailboxTrackingMatchesView: a mailbox that Tracks the truth, keeping no view, takes,
// overflows and resyncs exactly as one that keeps its view, through random offers of arrivals,
// removals and changes (a removal and an arrival of other details), takes and a mid-way Seed of
// a truth no notification announced.
func TestMailboxTrackingMatchesView(t *testing.T) {
	resyncs := 0
	for seed := range int64(50) {
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		plain := &Spec[tracked, int]{
			Limit: 4,
			Read:  func(n tracked) (string, bool, int) { return n.key, n.arrival, n.iface },
			Note: func(arrival bool, i int, _ time.Time) tracked {
				return tracked{note{arrival, fmt.Sprint("k", i%10), i}, i}
			},
			Compare: cmp.Compare[int],
		}
		withPrior := *plain
		withPrior.Prior = func(n tracked) (int, bool) { return n.prior, !n.arrival }
		truth := map[string]int{"k1": 1, "k2": 2, "k7": 7}
		keep := func(i int) bool { return i%10 != 9 } // the registration's class: not k9
		var eager, lazy Mailbox[tracked, int]
		eager.Init(plain)
		lazy.Init(&withPrior)
		lazy.Track(func() map[string]int { return truth }, keep)
		existing := []int{1, 2, 7}
		include := seed%2 == 0
		eager.Start(existing, func(i int) string { return fmt.Sprint("k", i%10) }, include, nil)
		lazy.Start(existing, func(i int) string { return fmt.Sprint("k", i%10) }, include, nil)
		var gotE, gotL []tracked
		for step := range 200 {
			switch r := rng.IntN(10); {
			case r < 5: // publish a change of one key
				k := rng.IntN(10)
				key := fmt.Sprint("k", k)
				cur, ok := truth[key]
				var n tracked
				if ok {
					n = tracked{note{false, key, cur}, cur}
					delete(truth, key)
				} else {
					v := k + 10*rng.IntN(5)
					n = tracked{note: note{true, key, v}}
					truth[key] = v
				}
				if keep(n.iface) {
					eager.Offer(n)
					lazy.Offer(n)
				}
			case r < 9: // the goroutine takes some, or resyncs
				if eager.Stale() != lazy.Stale() {
					t.Fatalf("seed %d step %d: stale %v and %v", seed, step, eager.Stale(), lazy.Stale())
				}
				if eager.Stale() {
					resyncs++
					eager.Resync(truth, keep, nil)
					lazy.Resync(truth, keep, nil)
				}
				most := 1 + rng.IntN(3)
				gotE = eager.Take(gotE, most)
				gotL = lazy.Take(gotL, most)
				for range eager.Held() {
					eager.Started()
				}
				for range lazy.Held() {
					lazy.Started()
				}
			default: // a Seed: the truth changes without a notification
				lazy.Freeze()
				k := rng.IntN(10)
				truth[fmt.Sprint("k", k)] = k + 50
			}
		}
		if diff := gocmp.Diff(gotE, gotL, gocmp.AllowUnexported(tracked{}, note{})); diff != "" {
			t.Fatalf("seed %d: taken (-keeping a view +tracking):\n%s", seed, diff)
		}
		if diff := gocmp.Diff(eager.View(), lazy.View()); diff != "" {
			t.Fatalf("seed %d: view (-keeping +tracking):\n%s", seed, diff)
		}
	}
	if resyncs == 0 {
		t.Error("no queue overflowed: the test did not try a resync")
	}
}

// BenchmarkMailbox is one notification through a registration's queue: the publisher's Offer
// and the goroutine's Take (in batches of 64, as the registries take them), for a mailbox that
// keeps its own view and for one that Tracks the truth; the notifications alternate removals
// and arrivals of 64 of 1,024 interfaces.
func BenchmarkMailbox(b *testing.B) {
	for _, tracking := range []bool{false, true} {
		b.Run(fmt.Sprintf("tracking=%v", tracking), func(b *testing.B) {
			spec := &Spec[*tracked, int]{
				Read: func(n *tracked) (string, bool, int) { return n.key, n.arrival, n.iface },
				Note: func(arrival bool, i int, _ time.Time) *tracked {
					return &tracked{note{arrival, fmt.Sprint("k", i), i}, i}
				},
				Compare: cmp.Compare[int],
				Prior:   func(n *tracked) (int, bool) { return n.prior, !n.arrival },
			}
			truth := make(map[string]int)
			var existing []int
			for i := range 1024 {
				truth[fmt.Sprint("k", i)] = i
				existing = append(existing, i)
			}
			var m Mailbox[*tracked, int]
			m.Init(spec)
			if tracking {
				m.Track(func() map[string]int { return truth }, nil)
			}
			m.Start(existing, func(i int) string { return fmt.Sprint("k", i) }, false, nil)
			var notes []*tracked
			for i := range 64 {
				key := fmt.Sprint("k", i)
				notes = append(notes, &tracked{note{false, key, i}, i}, &tracked{note: note{true, key, i}})
			}
			batch := make([]*tracked, 0, 64)
			b.ReportAllocs()
			k := 0
			for b.Loop() {
				m.Offer(notes[k%len(notes)])
				k++
				if m.Len() == 64 {
					batch = m.Take(batch[:0], 64)
					for range batch {
						m.Started()
					}
				}
			}
		})
	}
}
