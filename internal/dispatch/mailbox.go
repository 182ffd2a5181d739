package dispatch

import (
	"slices"
	"sync/atomic"
	"time"
)

// Spec tells the mailboxes of one registry how to read and make its notifications N about
// interfaces I. It is a plain value, shared by the mailboxes.
type Spec[N any, I comparable] struct {
	// Limit bounds a mailbox's queue; a mailbox that would hold more is dropped for a resync.
	// 0 means no bound.
	Limit int
	// Read returns n's interface key (its symbolic link), whether n is an arrival, and the
	// interface.
	Read func(n N) (key string, arrival bool, iface I)
	// Note makes the arrival (or removal) of iface that a resync or a start delivers at now (one
	// reading of the clock for all of them).
	Note func(arrival bool, iface I, now time.Time) N
	// Compare orders the interfaces of a resync.
	Compare func(a, b I) int
	// Prior, when set, returns what n's key held before n: for a removal, the interface removed,
	// with ok; for an arrival, ok false. It lets a mailbox that Tracks the truth keep no view of
	// its own (see Track).
	Prior func(n N) (i I, ok bool)
}

// Mailbox is a registration's queue of notifications N about interfaces I: ordered, bounded by
// its Spec's Limit, and dropped for a resync when a notification would exceed it (the
// registration then gets, once its goroutine is free, the removals and arrivals that take what
// it has seen to the truth, instead of what it missed). It keeps the registration's view: the
// interfaces announced by the notifications taken off it so far.
//
// A Mailbox does not block and is not safe for concurrent use: the registration's lock guards
// every method but Dropped. Its zero value is not usable: call Init.
type Mailbox[N any, I comparable] struct {
	spec     *Spec[N, I]
	q        Ring[N]
	view     map[string]I // nil while Tracking and the view follows from the truth (see Track)
	truth    func() map[string]I
	keep     func(I) bool
	removed  bool
	stale    bool         // the queue overflowed: a resync is owed
	overflow int          // dropped by overflows and not yet reported
	waiting  bool         // the goroutine waits for an Offer
	pushed   uint64       // notifications ever queued: the head of the queue is number pushed-Len+1
	made     int          // the queued notifications made for this registration (Push): the first ones
	held     atomic.Int64 // taken off the queue, their callback not started yet (Started); see hold
	dropped  atomic.Uint64
}

// Init readies m for spec, with an empty view. It must be called before m is shared.
func (m *Mailbox[N, I]) Init(spec *Spec[N, I]) {
	m.spec = spec
	m.view = make(map[string]I)
}

// Track makes m keep no view while it keeps up, for a registry whose every notification follows
// from its truth: truth returns the registry's interfaces as they are (with every notification
// offered so far applied), of which the registration sees those keep accepts (nil: all). The
// view is then the truth with the queued notifications undone (Spec.Prior), and is worked out
// only when it is needed: an overflow, View, Resync; so a notification taken costs no map update.
// The view stays explicit (and follows what is taken) from SetView or Freeze until the next
// Resync. truth is called under the lock that guards the truth, which every method of m but
// Take is called under too. Track must be called after Init, before Start, and needs
// Spec.Prior.
func (m *Mailbox[N, I]) Track(truth func() map[string]I, keep func(I) bool) {
	m.truth, m.keep = truth, keep
	m.view = nil
}

// Freeze makes the view explicit: the truth may change from now on without a notification (a
// registry's Seed), and the view must not follow it.
func (m *Mailbox[N, I]) Freeze() {
	if m.view == nil {
		m.view = m.worked()
	}
}

// worked returns the view of a Tracking mailbox: the truth it sees, with the queued
// notifications, and extra (offered but not queued; at most one), undone, newest first.
func (m *Mailbox[N, I]) worked(extra ...N) map[string]I {
	view := make(map[string]I, len(m.truth()))
	for k, i := range m.truth() {
		if m.keep == nil || m.keep(i) {
			view[k] = i
		}
	}
	undo := func(n N) {
		key, _, _ := m.spec.Read(n)
		if i, ok := m.spec.Prior(n); ok {
			view[key] = i
		} else {
			delete(view, key)
		}
	}
	for k := len(extra) - 1; k >= 0; k-- {
		undo(extra[k])
	}
	for k := m.q.Len() - 1; k >= 0; k-- {
		undo(m.q.At(k))
	}
	return view
}

// Offer appends n for the registration's goroutine, or, when the queue is full, drops the
// queue (and then every Offer until the goroutine computed the resync it is owed). It returns
// true when the goroutine waits for it (Wait) and must be woken: a goroutine busy with earlier
// notifications is not woken again. A removed mailbox takes nothing.
func (m *Mailbox[N, I]) Offer(n N) (wake bool) {
	if m.removed {
		return false
	}
	switch {
	case m.stale: // the resync owed will cover n
		m.overflow++
		m.dropped.Add(1)
	case m.spec.Limit <= 0 || m.q.Len()+int(m.held.Load()) < m.spec.Limit:
		m.q.Push(n)
		m.pushed++
	default:
		// The goroutine computes the resync when it is free again (Resync), so that a stuck
		// registration holds no queue and, past this overflow, costs the publisher nothing more.
		// What was made for this registration alone (a resync, the existing interfaces) is
		// dropped too, but is not counted: the notifications it stood for were counted when they
		// were missed. A Tracking mailbox works out its view first, here, once per overflow
		// (a walk of the active set and the queue, under the publisher's lock): what was taken
		// before the queue.
		if m.view == nil {
			m.view = m.worked(n)
		}
		dropped := m.q.Len() - m.made + 1
		m.q.Reset()
		m.made = 0
		m.stale = true
		m.overflow += dropped
		m.dropped.Add(uint64(dropped))
	}
	wake, m.waiting = m.waiting, false
	return wake
}

// Push appends n whatever the bound: a notification made for this registration alone (an
// existing interface, a resync). It must come before any Offer still queued: the queue is empty,
// or holds only such notifications.
func (m *Mailbox[N, I]) Push(n N) {
	m.q.Push(n)
	m.pushed++
	m.made++
}

// Pushed counts the notifications ever queued, dropped ones included: the next one taken is
// number Pushed()-Len()+1, the first being 1.
func (m *Mailbox[N, I]) Pushed() uint64 { return m.pushed }

// Start sets the view to the interfaces of existing (the registration starts there and is not
// told of them), or, with include, queues an arrival of each (Spec.Note) and leaves the view
// empty, for the arrivals to fill as they are taken: so the registration gets each existing
// interface once, and later notifications after them, with no gap. note, when not nil, rewrites
// each queued arrival.
func (m *Mailbox[N, I]) Start(existing []I, key func(I) string, include bool, note func(N) N) {
	var now time.Time
	if include && len(existing) > 0 {
		now = time.Now()
	}
	if m.view == nil && !include {
		return // Tracking: the view is the truth, which existing is
	}
	if !include && len(m.view) == 0 {
		m.view = make(map[string]I, len(existing))
	}
	for _, i := range existing {
		if !include {
			m.view[key(i)] = i
			continue
		}
		n := m.spec.Note(true, i, now)
		if note != nil {
			n = note(n)
		}
		m.Push(n)
	}
}

// Len returns the number of notifications queued.
func (m *Mailbox[N, I]) Len() int { return m.q.Len() }

// At returns the k-th oldest queued notification. k must be below Len.
func (m *Mailbox[N, I]) At(k int) N { return m.q.At(k) }

// Take moves up to most queued notifications, oldest first, to the end of dst and returns it;
// the view follows them (they count as delivered from now on: a Tracking mailbox's view needs
// no update). Until the goroutine calls
// Started for each, they count against the bound with the queue, and Held counts them. Those
// made for this registration alone (Push) are taken one at a time, so that the rest stays
// droppable for a newer resync.
func (m *Mailbox[N, I]) Take(dst []N, most int) []N {
	if m.made > 0 {
		most = 1
	}
	from := len(dst)
	dst = m.q.PopInto(dst, most)
	m.made = max(m.made-(len(dst)-from), 0)
	m.hold(len(dst) - from)
	if m.view != nil {
		for _, n := range dst[from:] {
			m.follow(n)
		}
	}
	return dst
}

// follow applies n to the view.
func (m *Mailbox[N, I]) follow(n N) {
	key, arrival, i := m.spec.Read(n)
	if arrival {
		m.view[key] = i
	} else {
		delete(m.view, key)
	}
}

// View returns the view: the interfaces the notifications taken so far announced, by key; the
// map itself (the caller must not keep it beyond the lock) or, from a Tracking mailbox that keeps
// up, one worked out for the call.
func (m *Mailbox[N, I]) View() map[string]I {
	if m.view == nil {
		return m.worked()
	}
	return m.view
}

// SetView replaces the view.
func (m *Mailbox[N, I]) SetView(view map[string]I) { m.view = view }

// Hold counts a notification the goroutine takes from elsewhere than the queue (a replay) as
// Take does: Started follows it.
func (m *Mailbox[N, I]) Hold() { m.hold(1) }

// Started records that the callback of one notification taken by Take (or held with Hold)
// starts, or that it is skipped. It may be called without the lock.
func (m *Mailbox[N, I]) Started() { m.hold(-1) }

// hold adds k to held. Only the registration's goroutine writes held (Take, Hold, Started), so a
// load and a store do, without the locked read-modify-write of an Add, which costs more than
// the rest of a Started; Offer, on another goroutine, only loads it.
func (m *Mailbox[N, I]) hold(k int) { m.held.Store(m.held.Load() + int64(k)) }

// Held returns the number of notifications taken and not Started. It may be called without the
// lock.
func (m *Mailbox[N, I]) Held() int { return int(m.held.Load()) }

// Wait records that the goroutine is about to wait for an Offer: the next Offer returns true.
func (m *Mailbox[N, I]) Wait() { m.waiting = true }

// Waiting reports whether the goroutine waits for an Offer (Wait, and no Offer since).
func (m *Mailbox[N, I]) Waiting() bool { return m.waiting }

// Stale reports whether the queue overflowed and a resync is owed.
func (m *Mailbox[N, I]) Stale() bool { return m.stale && !m.removed }

// Resync queues the resync a stale mailbox is owed (see Resync) against active, the truth,
// keeping only the interfaces keep accepts (nil: all), and clears Stale. note, when not nil,
// rewrites each queued notification.
// A Tracking mailbox's view follows from the truth again afterwards: active must be its truth.
func (m *Mailbox[N, I]) Resync(active map[string]I, keep func(I) bool, note func(N) N) {
	for _, n := range Resync(m.spec, m.View(), active, keep) {
		if note != nil {
			n = note(n)
		}
		m.Push(n)
	}
	m.stale = false
	if m.truth != nil {
		m.view = nil
	}
}

// TakeOverflow returns the number of notifications dropped since the last call.
func (m *Mailbox[N, I]) TakeOverflow() int {
	o := m.overflow
	m.overflow = 0
	return o
}

// Remove empties m for good: it takes nothing more. It returns false when m was removed
// already.
func (m *Mailbox[N, I]) Remove() bool {
	if m.removed {
		return false
	}
	m.removed = true
	m.q.Reset()
	m.overflow = 0
	m.made = 0
	return true
}

// Removed reports whether Remove was called.
func (m *Mailbox[N, I]) Removed() bool { return m.removed }

// Dropped counts the notifications dropped by overflows. It may be called without the lock.
func (m *Mailbox[N, I]) Dropped() uint64 { return m.dropped.Load() }

// Resync returns the notifications that take view to active: a removal of each interface of
// view that active lacks or holds with other details, then an arrival of each interface of
// active (that keep accepts; nil: all) that view lacks or holds with other details, each half in
// spec.Compare order. It does not block and is safe for concurrent use on maps no one writes.
func Resync[N any, I comparable](spec *Spec[N, I], view, active map[string]I, keep func(I) bool) []N {
	var gone, came []I
	for k, v := range view {
		if a, ok := active[k]; !ok || a != v {
			gone = append(gone, v)
		}
	}
	for k, a := range active {
		if keep != nil && !keep(a) {
			continue
		}
		if v, ok := view[k]; !ok || v != a {
			came = append(came, a)
		}
	}
	slices.SortFunc(gone, spec.Compare)
	slices.SortFunc(came, spec.Compare)
	out := make([]N, 0, len(gone)+len(came))
	now := time.Now()
	for _, i := range gone {
		out = append(out, spec.Note(false, i, now))
	}
	for _, i := range came {
		out = append(out, spec.Note(true, i, now))
	}
	return out
}
