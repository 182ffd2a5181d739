package web

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// hub is the event stream's source: one registration (every class, existing interfaces
// included) whose callback keeps the last notifications published, with their IDs, and the
// active set as of the last one, and hands each to the subscribers. A subscriber that comes back
// with the ID it saw last gets exactly what followed from the history, or, when the history no
// longer reaches back that far, a resync: the active set, from which it reconciles its view.
type hub struct {
	mu      sync.Mutex
	size    int
	history ring   // the last published notifications
	floor   uint64 // history holds every notification with an ID above floor
	last    uint64 // the ID of the last notification the hub has seen
	active  map[string]notify.Interface
	broken  bool   // the hub fell behind and was resynchronised; the history restarts
	resyncs uint64 // entry.Resyncs() as of the last notification
	subs    map[*subscriber]struct{}
	entry   *notify.Entry
	onCut   func() // a subscriber too slow was cut off
}

// frame is one event of a stream: a notification, or a resync (interfaces != nil).
type frame struct {
	n          notify.Notification
	id         uint64 // the SSE id: the notification's, or the hub's position for existing/resync
	resync     bool
	interfaces []notify.Interface
}

// subscriber is one /events client. The hub hands it frames without ever blocking: a client
// with limit frames not yet written to it (queued, or taken and waiting for the socket) is cut
// off, and comes back with its last ID. Its queue grows with what is waiting and no further: an
// idle subscriber holds no buffer.
type subscriber struct {
	class   uuid.UUID
	limit   int           // how many frames may wait before the subscriber is cut off
	wake    chan struct{} // capacity 1: "frames are waiting"
	cut     chan struct{}
	cutOnce sync.Once
	reason  string

	mu      sync.Mutex
	queue   []frame      // the frames waiting, oldest first
	writing atomic.Int64 // frames of the last batch taken and not yet written
}

// queueKeep is the largest queue capacity a subscriber keeps between batches; a burst's larger
// queue is let go once written, so that a subscriber idle after it holds little.
const queueKeep = 16

func newSubscriber(class uuid.UUID, limit int) *subscriber {
	return &subscriber{class: class, limit: limit, wake: make(chan struct{}, 1), cut: make(chan struct{})}
}

// offer queues f unless limit frames are waiting already; it never blocks.
func (s *subscriber) offer(f frame) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue)+int(s.writing.Load()) >= s.limit {
		return false
	}
	s.queue = append(s.queue, f)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// take returns the frames waiting, oldest first, and empties the queue; they count against the
// limit until the caller reports each written with wrote. spare, the batch the caller has
// written, is reused for the next frames when it is small. It never blocks long.
func (s *subscriber) take(spare []frame) []frame {
	clear(spare) // the frames' interface lists are not kept alive by a spare queue
	if cap(spare) > queueKeep {
		spare = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	batch := s.queue
	s.queue = spare[:0]
	s.writing.Store(int64(len(batch)))
	return batch
}

// wrote reports one frame of the batch taken last as written. It does not block.
func (s *subscriber) wrote() { s.writing.Add(-1) }

func (s *subscriber) cutOff(reason string) {
	s.cutOnce.Do(func() {
		s.reason = reason
		close(s.cut)
	})
}

// newHub registers the hub with reg and keeps size notifications of history; onCut (not nil) is
// called, under the hub's lock, for each subscriber cut off for being too slow.
func newHub(reg *notify.Registry, size int, onCut func()) (*hub, error) {
	h := &hub{size: size, subs: map[*subscriber]struct{}{}, onCut: onCut}
	h.mu.Lock() // deliver waits until the hub knows where it starts
	defer h.mu.Unlock()
	e, err := reg.Register(notify.EventCategoryDeviceInterfaceChange, notify.FlagIncludeExistingInterfaces,
		notify.AllClasses, StreamOwner, h.deliver, nil)
	if err != nil {
		return nil, fmt.Errorf("web: event stream: %w", err)
	}
	h.entry = e
	h.last, h.floor = e.StartID(), e.StartID()
	// The existing arrivals come on the registration's goroutine, and a subscriber may come
	// first: the active set is known from now on, so that its first frames hold every interface.
	// Applying them again as they come, and what follows, changes nothing or brings it up to date.
	active := reg.Active()
	h.active = make(map[string]notify.Interface, len(active)) // grown once, not interface by interface
	for _, i := range active {
		h.active[i.SymbolicLink] = i
	}
	return h, nil
}

// deliver is the hub's callback: it runs on the registry's goroutine for the hub, in order.
func (h *hub) deliver(_ context.Context, n notify.Notification, _ any) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r := h.entry.Resyncs(); r != h.resyncs {
		// The hub itself fell behind and the registry resynchronised it: its history has a
		// hole before n, even when what it missed cancelled out and the resync brought nothing.
		// Clients are told to come back, and get a resync then.
		h.resyncs = r
		h.history.reset()
		h.broken = true
		for s := range h.subs {
			s.cutOff("the event stream was resynchronised; reconnect with your last event ID")
			delete(h.subs, s)
		}
	}
	h.apply(n)
	if n.ID == 0 {
		return nil // the starting state, as of StartID, or the resync's
	}
	if h.broken {
		h.floor, h.broken = n.ID-1, false // the history starts again here
	}
	h.last = n.ID
	if dropped, ok := h.history.push(n, h.size); ok {
		h.floor = dropped.ID
	}
	// A subscriber too slow is cut off, counted (onCut) and logged by its handler: it is the
	// client's failing, not the hub's, and no callback error.
	for s := range h.subs {
		if matches(s.class, n.InterfaceClassGUID) && !s.offer(frame{n: n, id: n.ID}) {
			s.cutOff(fmt.Sprintf("subscriber too slow: %d notifications behind; reconnect with your last event ID", s.limit))
			delete(h.subs, s)
			h.onCut()
		}
	}
	return nil
}

func (h *hub) apply(n notify.Notification) {
	if n.IsArrival() {
		h.active[n.SymbolicLinkName] = n.Interface
	} else {
		delete(h.active, n.SymbolicLinkName)
	}
}

func matches(class, of uuid.UUID) bool { return class == notify.AllClasses || class == of }

// activeOf is the active set of class, sorted. h.mu is held.
func (h *hub) activeOf(class uuid.UUID) []notify.Interface {
	out := []notify.Interface{}
	for _, i := range h.active {
		if matches(class, i.ClassGUID) {
			out = append(out, i)
		}
	}
	slices.SortFunc(out, func(a, b notify.Interface) int {
		if a.Less(b) {
			return -1
		}
		if b.Less(a) {
			return 1
		}
		return 0
	})
	return out
}

// subscribe adds a subscriber and returns the frames it gets before the live ones, decided in
// the same critical section as the live hand-off so that nothing is missed or doubled:
//   - resuming (hasLast) from the hub's position: nothing;
//   - resuming from within the history: what followed lastID;
//   - resuming from before the history, or from an ID the hub never gave (an agent reset):
//     a resync with the active set;
//   - new, with includeExisting: an arrival for every active interface.
func (h *hub) subscribe(class uuid.UUID, buffer int, includeExisting, hasLast bool, lastID uint64) (*subscriber, []frame) {
	s := newSubscriber(class, buffer)
	h.mu.Lock()
	defer h.mu.Unlock()
	var pre []frame
	switch {
	case hasLast && !h.broken && lastID == h.last:
	case hasLast && !h.broken && lastID >= h.floor && lastID < h.last:
		for n := range h.history.all() {
			if n.ID > lastID && matches(class, n.InterfaceClassGUID) {
				pre = append(pre, frame{n: n, id: n.ID})
			}
		}
	case hasLast:
		pre = append(pre, frame{resync: true, id: h.last, interfaces: h.activeOf(class)})
	case includeExisting:
		for _, i := range h.activeOf(class) {
			n := notify.NewNotification(notify.GUIDDeviceInterfaceArrival, i, 0, time.Now(), notify.CauseExisting)
			pre = append(pre, frame{n: n, id: h.last})
		}
	}
	h.subs[s] = struct{}{}
	return s, pre
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

// ring holds the last notifications, oldest first, in a slice that never moves once full:
// pushing is O(1) however long the history (a slice shifted by one on each push cost a
// history-sized copy per notification). The zero value is empty. Not safe for concurrent use.
type ring struct {
	buf   []notify.Notification
	start int // index of the oldest once buf is full
}

// push appends n, keeping at most size; when that drops the oldest, it returns it and true.
func (r *ring) push(n notify.Notification, size int) (dropped notify.Notification, ok bool) {
	if len(r.buf) < size {
		r.buf = append(r.buf, n)
		return notify.Notification{}, false
	}
	dropped = r.buf[r.start]
	r.buf[r.start] = n
	r.start = (r.start + 1) % len(r.buf)
	return dropped, true
}

// all yields the notifications, oldest first.
func (r *ring) all() iter.Seq[notify.Notification] {
	return func(yield func(notify.Notification) bool) {
		for k := range r.buf {
			if !yield(r.buf[(r.start+k)%len(r.buf)]) {
				return
			}
		}
	}
}

// reset empties the ring, keeping its memory.
func (r *ring) reset() { r.buf, r.start = r.buf[:0], 0 }

// recent returns the notifications of the history, oldest first, and the ID of the last one the
// hub has seen: a client that shows them and then follows /events from that ID misses nothing
// and sees nothing twice. It does not block for long and is safe for concurrent use.
func (h *hub) recent() ([]notify.Notification, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]notify.Notification, 0, len(h.history.buf))
	for n := range h.history.all() {
		out = append(out, n)
	}
	return out, h.last
}
