package online

import (
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

// hold is one interface whose state the onliner is changing.
type hold struct {
	arrival  bool // the change expected: an arrival (online) or a removal (offline)
	released bool // the change is over and succeeded, its notification has not come yet
	notes    []notify.Notification
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
			// The first notification after a successful change is that change's, unless it goes
			// the other way (someone else changed the interface back meanwhile).
			delete(g.holds, n.SymbolicLinkName)
			g.emit(n, n.IsArrival() == h.arrival)
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
// A nil Gate does nothing.
func (g *Gate) hold(link string, arrival bool) {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.holds[link] = &hold{arrival: arrival}
	g.mu.Unlock()
}

// release publishes what was held back for link, in order, and stops holding. changed says the
// write succeeded: the expected notification is then the agent's own (a removal that is not
// gets remove-complete as a surprise); when it has not come yet, the first notification of link
// that does come is taken for it. A nil Gate does nothing.
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
	seen := false
	for _, n := range h.notes {
		ours := changed && !seen && n.IsArrival() == h.arrival
		seen = seen || ours
		g.emit(n, ours)
	}
	if changed && !seen {
		h.released, h.notes = true, nil
		return
	}
	delete(g.holds, link)
}
