package online

import (
	"slices"
	"sync"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// Gate is the path of the agent's notifications from the event loop to the registry. It orders
// them around the changes the agent makes itself: while the onliner brings a CPU online for
// two-phase registrations, or a memory block online, or takes either offline on request, the
// notifications of that interface are held back, so that its arrival follows AddComplete (its
// removal follows remove-complete) in every registration. It also tells removals the agent did
// not ask for, which get remove-complete as surprise removals. Its methods never block on
// callbacks and are safe for concurrent use.
type Gate struct {
	publish func(notify.Notification) bool
	removed func(notify.Notification)

	mu    sync.Mutex
	holds map[string]*hold // by symbolic link
}

// hold is one interface whose state the onliner is changing, or has changed and whose
// notification has not come yet.
type hold struct {
	arrival  bool // the change expected: an arrival (online) or a removal (offline)
	released bool // the change is over: only owed is waited for
	notes    []notify.Notification
	// owed are the ways (true: an arrival) of the changes of the interface that succeeded and
	// whose notifications have not come yet, oldest first: the first notification that goes an
	// owed change's way is taken for that change's. A change of the interface that begins while
	// an earlier one is owed its notification (a request right after another) keeps it owed. At
	// most maxOwed.
	owed []bool
}

// maxOwed bounds hold.owed: beyond it the oldest owed change is forgotten (its notification
// never came: its uevent was lost, and a resync found the interface as it was).
const maxOwed = 8

// claim reports whether n is the notification of an owed change, and forgets that change.
func (h *hold) claim(n notify.Notification) bool {
	if i := slices.Index(h.owed, n.IsArrival()); i >= 0 {
		h.owed = slices.Delete(h.owed, i, i+1)
		return true
	}
	return false
}

// NewGate returns a Gate that hands notifications to publish (which reports whether it accepted
// them, as Registry.Publish does) and each accepted removal that the agent did not cause to
// removed (nil: none). Both are called with the gate's lock held, in order: they must not block
// or call the gate.
func NewGate(publish func(notify.Notification) bool, removed func(notify.Notification)) *Gate {
	return &Gate{publish: publish, removed: removed, holds: make(map[string]*hold)}
}

// Publish passes notes on in order, holding back those of interfaces being changed. It never
// blocks on callbacks and is safe for concurrent use.
func (g *Gate) Publish(notes []notify.Notification) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, n := range notes {
		h := g.holds[n.SymbolicLinkName]
		switch {
		case h == nil:
			g.emit(n, false)
		case !h.released:
			h.notes = append(h.notes, n)
		default:
			// The notification of a successful change, unless it goes the other way from every
			// change owed: someone else changed the interface back meanwhile, and the owed
			// notifications are forgotten.
			ours := h.claim(n)
			g.emit(n, ours)
			if !ours || len(h.owed) == 0 {
				delete(g.holds, n.SymbolicLinkName)
			}
		}
	}
}

// emit publishes n; ours says that n is the removal the agent asked for.
func (g *Gate) emit(n notify.Notification, ours bool) {
	if g.publish(n) && !n.IsArrival() && !ours && g.removed != nil {
		g.removed(n)
	}
}

// hold starts holding back the notifications of link: an arrival is expected, or a removal.
// The changes of link that succeeded before and whose notifications have not come yet are still
// owed theirs: a late removal of the agent's own is not taken for a surprise. A nil Gate does
// nothing.
func (g *Gate) hold(link string, arrival bool) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	h := &hold{arrival: arrival}
	if old := g.holds[link]; old != nil {
		h.owed = old.owed
	}
	g.holds[link] = h
}

// release publishes what was held back for link, in order, and stops holding. changed says the
// write succeeded: the expected notification is then the agent's own (a removal that is not
// gets remove-complete as a surprise); when it has not come yet, the first notification of link
// that goes its way is taken for it. A nil Gate does nothing.
func (g *Gate) release(link string, changed bool) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	h := g.holds[link]
	if h == nil {
		return
	}
	if changed {
		h.owed = append(h.owed, h.arrival)
		if len(h.owed) > maxOwed {
			h.owed = h.owed[len(h.owed)-maxOwed:]
		}
	}
	for _, n := range h.notes {
		g.emit(n, h.claim(n))
	}
	h.released, h.notes = true, nil
	if len(h.owed) == 0 {
		delete(g.holds, link)
	}
}
