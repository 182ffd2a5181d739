package notify

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// This file holds the delivery that outlives the agent: a durable registration's callback gets
// every notification at least once, in order, across stops and crashes of the agent. The agent
// saves, in its state file, a Checkpoint of each durable registration (what its callback has
// seen, and what it has still to be given) before the callback is given anything that the
// file does not hold, and resumes each registration from its Cursor at the next start.

// Cursor is where a durable registration stands in its delivery: what its callback has seen and
// what it has yet to finish. The agent keeps it in its state file and resumes the registration
// from it (RegisterDurable). It is a plain value.
type Cursor struct {
	// Class is the registration's interface class (AllClasses for every class).
	Class uuid.UUID
	// View is the set of interfaces of Class as the callback saw them after the last
	// notification it finished (returned from), sorted with Interface.Less.
	View []Interface
	// Pending are the notifications queued for the callback that it has not finished, oldest
	// first; the first may have been running. Each has the ID it was published with (0 for a
	// notification made for this registration alone: existing interfaces, a resync).
	Pending []Notification
}

// Checkpoint is a consistent picture of a registry for the agent's state file: the active set,
// the last ID, and the Cursor of every durable registration, all as of one moment. It is a plain
// value, but for Registry.Saved, which reads its private part.
type Checkpoint struct {
	Active []Interface
	LastID uint64
	// Cursors holds the durable registrations' cursors by owner.
	Cursors map[string]Cursor
	// covered is, for each durable entry, the number of the last notification (counted on its
	// queue) that the checkpoint holds.
	covered map[*Entry]uint64
}

// durableState is the part of an Entry that only durable registrations use.
// Entry.mu guards it.
type durableState struct {
	doneView    map[string]Interface // the view after the last notification the callback finished
	replay      []Notification       // a resumed Cursor's pending notifications, not yet taken
	inflight    Notification         // taken off the replay or the queue, not finished
	hasInflight bool
	inflightNum uint64 // inflight's number on the queue; 0 for one from the replay
	savedUpTo   uint64 // the number of the last queued notification that a saved Checkpoint holds
}

// RegisterDurable is Register for a registration whose delivery outlives the agent: the agent
// saves its Checkpoint in its state file and, at its next start, resumes it from that Cursor.
// Each notification is given to cb only once a Checkpoint that holds it has been saved (Saved),
// so that a kill at any moment loses nothing the callback may have seen; with no
// Options.RequestCheckpoint that wait is skipped.
//
// Every notification a durable registration gets has an ID: those made for it alone (existing
// interfaces, a resync) take the registry's next ID, which no other registration sees. So a
// callback deduplicates on the ID: IDs only grow, and one given again has the ID it had.
//
// With resume nil it is Register (flags apply). With a resume from an earlier run of the agent
// (its class must be class), flags are ignored: the callback saw the existing interfaces then.
// The callback is first given resume.Pending, with their IDs, all of them (the callback may
// have had any of them before: the Checkpoint was saved before it was given the first, and it
// may have gone on to the others before the agent stopped), whatever happens to the queue
// meanwhile; then the removals and arrivals (CauseResync) that take the view they leave to the
// active set, which the agent seeded with what it had announced; then later notifications. A
// resume whose Pending does not follow from its View (a removal of an interface it does not
// hold, an arrival of one it does) has its Pending dropped, with a warning: the resync then
// carries the callback to the truth.
//
// It does not block on callbacks and is safe for concurrent use.
func (r *Registry) RegisterDurable(category EventCategory, flags Flags, class uuid.UUID, owner string, cb Callback, userCtx any, resume *Cursor) (*Entry, error) {
	if resume != nil && resume.Class != class {
		return nil, fmt.Errorf("notify: register %s: resuming a registration for %s, not %s", owner, ClassName(resume.Class), ClassName(class))
	}
	return r.register(category, flags, class, owner, cb, userCtx, true, resume)
}

// resume fills the views, replay and queue of the new entry e from c. existing is the active
// set of e's class. r.mu must be held (e is not yet shared).
func (r *Registry) resume(e *Entry, c *Cursor, existing []Interface) {
	view := make(map[string]Interface, len(c.View))
	for _, i := range c.View {
		if matches(e.class, i.ClassGUID) {
			view[i.SymbolicLink] = i
		}
	}
	e.doneView = view
	// The view after the pending notifications, which must each follow from the one before.
	after := maps.Clone(view)
	pending := c.Pending
	for k, n := range pending {
		_, has := after[n.SymbolicLinkName]
		bad := ""
		switch {
		case !matches(e.class, n.InterfaceClassGUID):
			bad = "of another class"
		case n.IsArrival() && has:
			bad = "an arrival of an interface it holds"
		case !n.IsArrival() && !has:
			bad = "a removal of an interface it does not hold"
		}
		if bad != "" {
			r.log.Warn("durable registration: the saved notifications do not follow from the saved view; resynchronising instead",
				"owner", e.owner, "pending", len(pending), "at", k, "id", n.ID, "reason", bad)
			after, pending = maps.Clone(view), nil
			break
		}
		if n.IsArrival() {
			after[n.SymbolicLinkName] = n.Interface
		} else {
			delete(after, n.SymbolicLinkName)
		}
	}
	// The replay is never dropped, by an overflow or in a Checkpoint; the queue, and e.view,
	// start where it ends.
	e.replay = slices.Clone(pending)
	e.box.SetView(after)
	// Then what the callback missed beyond the pending ones: a resync of after to the truth.
	active := make(map[string]Interface, len(existing))
	for _, i := range existing {
		active[i.SymbolicLink] = i
	}
	e.box.Resync(active, nil, func(q *queued) *queued { q.Notification = r.restate(e, q.Notification); return q })
}

// restate gives n, made for e alone, the registry's next ID when e is durable, so that its
// callback can deduplicate it; other registrations never see that ID. r.mu must be held.
func (r *Registry) restate(e *Entry, n Notification) Notification {
	if e.durable {
		r.lastID++
		n.ID = r.lastID
	}
	return n
}

// awaitSaved waits until a saved Checkpoint holds the notification e has just taken off its
// queue (number e.inflightNum; one from the replay is in every Checkpoint), asking for one. It
// returns false when e's context ends first.
func (e *Entry) awaitSaved() bool {
	if e.r.checkpoint == nil {
		return true
	}
	for {
		e.mu.Lock()
		ok := e.savedUpTo >= e.inflightNum
		e.mu.Unlock()
		if ok {
			return true
		}
		e.r.requestCheckpoint(true)
		select {
		case <-e.saved:
		case <-e.w.Context().Done():
			return false
		}
	}
}

// finished records that the callback of durable e returned from n, unless e's context ended
// (the callback was cut short: n stays pending, to be given again). e.mu must be held.
func (e *Entry) finished(n *Notification) {
	if e.w.Context().Err() != nil {
		return
	}
	e.hasInflight = false
	e.inflight = Notification{}
	if n.IsArrival() {
		e.doneView[n.SymbolicLinkName] = n.Interface
	} else {
		delete(e.doneView, n.SymbolicLinkName)
	}
}

// requestCheckpoint asks the agent for a Checkpoint, if it takes them.
func (r *Registry) requestCheckpoint(urgent bool) {
	if r.checkpoint != nil {
		r.checkpoint(urgent)
	}
}

// Checkpoint returns the registry's active set, last ID and the Cursor of every durable
// registration, as of one moment. A Cursor's pending notifications are the one running, those
// replayed from the last start, and as much of the queue as keeps them within maxPending (the
// rest is left to the resync at the next start: the callback has not seen it). Once it is
// saved, pass it to Saved. It does not block on callbacks and is safe for concurrent use.
func (r *Registry) Checkpoint(maxPending int) Checkpoint {
	maxPending = max(maxPending, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	cp := Checkpoint{Active: r.activeOf(AllClasses), LastID: r.lastID, Cursors: map[string]Cursor{}, covered: map[*Entry]uint64{}}
	for _, e := range r.entries.Registered() {
		if !e.durable {
			continue
		}
		e.mu.Lock()
		c := Cursor{Class: e.class, View: slices.SortedFunc(maps.Values(e.doneView), compareInterfaces)}
		if e.hasInflight {
			c.Pending = append(c.Pending, e.inflight)
		}
		c.Pending = append(c.Pending, e.replay...)
		take := max(min(e.box.Len(), maxPending-len(c.Pending)), 0)
		for k := range take {
			c.Pending = append(c.Pending, e.box.At(k).Notification)
		}
		// The number of the last queued notification held: the queue's head is number
		// pushed-len+1.
		cp.covered[e] = e.box.Pushed() - uint64(e.box.Len()) + uint64(take)
		e.mu.Unlock()
		cp.Cursors[e.owner] = c
	}
	return cp
}

// Saved tells the registry that cp is saved: the durable registrations waiting for a notification
// that cp holds go on. It does not block and is safe for concurrent use.
func (r *Registry) Saved(cp Checkpoint) {
	for e, n := range cp.covered {
		e.mu.Lock()
		e.savedUpTo = max(e.savedUpTo, n)
		e.mu.Unlock()
		select {
		case e.saved <- struct{}{}:
		default:
		}
	}
}

// Stop begins a shutdown: no callback starts after it is called, and what is queued stays queued
// for a last Checkpoint. It waits until ctx ends for the callbacks running to return, then
// cancels their contexts (an exec callback's command is killed) and waits a further second at
// most; a durable registration's callback cut short that way is given its notification again
// at the next start. It returns an error naming the owners whose callbacks still run. Publish
// still works; Close must follow. Stop blocks as described and is safe for concurrent use.
func (r *Registry) Stop(ctx context.Context) error {
	r.mu.Lock()
	entries := slices.Clone(r.entries.Registered())
	r.mu.Unlock()
	for _, e := range entries {
		e.mu.Lock()
		e.stopped = true
		e.mu.Unlock()
		e.w.Poke()
	}
	busy := r.awaitIdle(ctx, entries)
	if len(busy) == 0 {
		return nil
	}
	for _, e := range busy {
		e.w.Cancel()
	}
	grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	busy = r.awaitIdle(grace, busy)
	if len(busy) == 0 {
		return nil
	}
	owners := make([]string, len(busy))
	for k, e := range busy {
		owners[k] = e.owner
	}
	slices.Sort(owners)
	return fmt.Errorf("notify: stop: callbacks of %s are still running", strings.Join(slices.Compact(owners), ", "))
}

// awaitIdle waits until no callback of entries runs, or ctx ends, and returns the entries whose
// callback still runs.
func (r *Registry) awaitIdle(ctx context.Context, entries []*Entry) []*Entry {
	var busy []*Entry
	for _, e := range entries {
		for {
			e.mu.Lock()
			running := e.running
			e.mu.Unlock()
			if !running {
				break
			}
			select {
			case <-e.idle:
				continue
			case <-ctx.Done():
			}
			busy = append(busy, e)
			break
		}
	}
	return busy
}
