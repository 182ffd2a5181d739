package client

import (
	"context"
	"errors"
	"fmt"
	"github.com/hotplug-agent/hotplug-agent/internal/goid"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// knownFlags holds every flag bit that Register accepts.
const knownFlags = notify.FlagIncludeExistingInterfaces

// Registration is the handle of one registration (the HCMNOTIFICATION of
// CM_Register_Notification). Its methods are safe for concurrent use.
type Registration struct {
	c      *Client
	filter Filter
	flags  notify.Flags
	cb     Callback
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: "the queue may have changed"
	done   chan struct{} // closed when the delivery goroutine has exited
	ready  chan struct{} // closed once the registration's starting point is set

	gid       atomic.Uint64 // goroutine id of the delivery goroutine, 0 until it starts
	delivered atomic.Uint64
	dropped   atomic.Uint64

	mu       sync.Mutex // guards the fields below; taken after Client.mu
	pending  bool       // registered before the client's first sync: it starts there
	removed  bool
	queue    ring
	view     map[string]notify.Interface // the interfaces announced by what was popped so far
	overflow int                         // dropped by overflows and not yet reported
	stale    bool                        // the queue overflowed: a resync is owed
}

// Filter returns the filter given to Register. It does not block.
func (r *Registration) Filter() Filter { return r.filter }

// Flags returns the flags given to Register. It does not block.
func (r *Registration) Flags() notify.Flags { return r.flags }

// Delivered counts the notifications handed to the callback so far. It does not block.
func (r *Registration) Delivered() uint64 { return r.delivered.Load() }

// Queued returns the number of notifications waiting for the callback. It does not block.
func (r *Registration) Queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queue.len()
}

// Dropped counts the notifications dropped by queue overflows (and replaced by a resync). It
// does not block.
func (r *Registration) Dropped() uint64 { return r.dropped.Load() }

// WaitReady blocks until the registration's starting point is set: its existing interfaces (with
// FlagIncludeExistingInterfaces) are queued and every later notification will follow. That is at
// once when the client has reached the agent before Register, else at the first connection. It
// returns an error wrapping ErrUnregistered if the registration is removed first, or wrapping
// ctx.Err() if ctx ends first. It is safe for concurrent use.
func (r *Registration) WaitReady(ctx context.Context) error {
	select {
	case <-r.ready:
		return nil
	default:
	}
	select {
	case <-r.ready:
		return nil
	case <-r.ctx.Done():
		return fmt.Errorf("client: wait for registration %s: %w", r.filter, ErrUnregistered)
	case <-ctx.Done():
		return fmt.Errorf("client: wait for registration %s: %w", r.filter, ctx.Err())
	}
}

// Register is CM_Register_Notification (and the agent's notify.Registry.Register): cb receives
// the arrivals and removals of the interfaces filter selects. flags may only contain
// notify.FlagIncludeExistingInterfaces: the registration first receives one arrival (Cause
// "existing", ID 0) for every interface of its class that the agent has active, in the agent's
// order, then every later notification, with no gap and no duplicate. Without the flag it
// receives only later notifications.
//
// Register does not block on the network: when the client has not reached the agent yet the
// registration starts at the first connection (WaitReady tells when). It never blocks on
// callbacks and is safe for concurrent use, from callbacks too.
func (c *Client) Register(filter Filter, flags notify.Flags, cb Callback) (*Registration, error) {
	if unknown := flags &^ knownFlags; unknown != 0 {
		return nil, fmt.Errorf("client: register %s: unknown flags %#x", filter, uint32(unknown))
	}
	if cb == nil {
		return nil, fmt.Errorf("client: register %s: nil callback", filter)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registration{
		c:      c,
		filter: filter,
		flags:  flags,
		cb:     cb,
		ctx:    ctx,
		cancel: cancel,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		ready:  make(chan struct{}),
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("client: register %s: %w", filter, ErrClosed)
	}
	r.mu.Lock()
	if c.synced {
		c.start(r)
	} else {
		r.pending = true
	}
	r.mu.Unlock()
	c.regs = append(c.regs, r)
	c.live[r] = struct{}{}
	synced := c.synced
	c.mu.Unlock()

	go c.deliver(r)
	c.log.Debug("registered", "class", filter, "include_existing", flags&notify.FlagIncludeExistingInterfaces != 0,
		"waiting_for_agent", !synced)
	return r, nil
}

// start sets r's starting point from the replica: with FlagIncludeExistingInterfaces an arrival
// for every active interface of its class, else a view that starts there. c.mu and r.mu are
// held.
func (c *Client) start(r *Registration) {
	existing := c.activeOf(r.filter.Class)
	r.view = make(map[string]notify.Interface, len(existing))
	if r.flags&notify.FlagIncludeExistingInterfaces != 0 {
		now := time.Now()
		for _, i := range existing {
			r.queue.push(notify.NewNotification(notify.GUIDDeviceInterfaceArrival, i, 0, now, notify.CauseExisting))
		}
	} else {
		for _, i := range existing {
			r.view[i.SymbolicLink] = i
		}
	}
	r.pending = false
	close(r.ready)
	r.signal()
}

// Unregister is CM_Unregister_Notification without the wait (and notify.Registry.Unregister):
// it removes r, drops what is queued for it, cancels its callback context and returns at once.
// A callback already in flight may still be running, but no new callback of r starts after
// Unregister returns. A second call, a nil registration or one of another client returns an
// error wrapping ErrUnregistered. It does not block and is safe for concurrent use, from
// callbacks too.
func (c *Client) Unregister(r *Registration) error {
	if r == nil {
		return fmt.Errorf("client: unregister nil registration: %w", ErrUnregistered)
	}
	if r.c != c {
		return fmt.Errorf("client: unregister %s: %w with this client", r.filter, ErrUnregistered)
	}
	c.mu.Lock()
	r.mu.Lock()
	if r.removed {
		r.mu.Unlock()
		c.mu.Unlock()
		return fmt.Errorf("client: unregister %s: %w", r.filter, ErrUnregistered)
	}
	r.removed = true
	r.queue.reset()
	r.overflow = 0
	r.mu.Unlock()
	if i := slices.Index(c.regs, r); i >= 0 {
		c.regs = slices.Delete(c.regs, i, i+1)
	}
	c.mu.Unlock()
	r.cancel()
	c.log.Debug("unregistered", "class", r.filter)
	return nil
}

// UnregisterEx is CM_Unregister_Notification (and notify.Registry.UnregisterEx): as Unregister,
// and it also waits until no callback of r runs, so that after it returns none does. Called
// from inside r's own callback it does not wait (that callback is the one in flight, and no
// other starts after it). If ctx ends first it returns an error wrapping ctx.Err(); r is
// unregistered all the same. It blocks as described and is safe for concurrent use.
func (c *Client) UnregisterEx(ctx context.Context, r *Registration) error {
	if err := c.Unregister(r); err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if g := r.gid.Load(); g != 0 && g == goid.ID() {
		return nil
	}
	select {
	case <-r.done:
		return nil
	default:
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("client: unregister %s: its callback is still running: %w", r.filter, ctx.Err())
	}
}

// publish queues n for every started registration of its class. c.mu is held.
func (c *Client) publish(n notify.Notification) {
	for _, r := range c.regs {
		if matches(r.filter.Class, n.InterfaceClassGUID) {
			c.enqueue(r, n)
		}
	}
}

// enqueue appends n to r's queue, or, when the queue is full, drops it and marks r stale: its
// own goroutine computes the resync it is owed when it is free again. c.mu is held.
func (c *Client) enqueue(r *Registration, n notify.Notification) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed || r.pending {
		return
	}
	switch {
	case r.stale: // the resync owed will cover n
		r.overflow++
		r.dropped.Add(1)
	case r.queue.len() < c.limit:
		r.queue.push(n)
	default:
		dropped := r.queue.len() + 1
		r.queue.reset()
		r.stale = true
		r.overflow += dropped
		r.dropped.Add(uint64(dropped))
	}
	r.signal()
}

// signal wakes r's delivery goroutine.
func (r *Registration) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// catchUp queues the resync a stale r is owed: the difference between its view and the replica.
func (c *Client) catchUp(r *Registration) {
	c.mu.Lock()
	r.mu.Lock()
	if r.stale && !r.removed {
		var gone, came []notify.Interface
		for k, v := range r.view {
			if a, ok := c.view[k]; !ok || a != v {
				gone = append(gone, v)
			}
		}
		for k, a := range c.view {
			if !matches(r.filter.Class, a.ClassGUID) {
				continue
			}
			if v, ok := r.view[k]; !ok || v != a {
				came = append(came, a)
			}
		}
		for _, n := range reconcile(gone, came, time.Now()) {
			r.queue.push(n)
		}
		r.stale = false
	}
	r.mu.Unlock()
	c.mu.Unlock()
}

// reconcile returns the notifications that take a view from gone to came: removals, then
// arrivals, each in the agent's order, with Cause "resync" and ID 0.
func reconcile(gone, came []notify.Interface, now time.Time) []notify.Notification {
	slices.SortFunc(gone, compareInterfaces)
	slices.SortFunc(came, compareInterfaces)
	out := make([]notify.Notification, 0, len(gone)+len(came))
	for _, i := range gone {
		out = append(out, notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, i, 0, now, notify.CauseResync))
	}
	for _, i := range came {
		out = append(out, notify.NewNotification(notify.GUIDDeviceInterfaceArrival, i, 0, now, notify.CauseResync))
	}
	return out
}

// deliver is r's goroutine: it runs r's callback for its queue, in order, until r is removed.
func (c *Client) deliver(r *Registration) {
	r.gid.Store(goid.ID())
	defer c.exited(r)
	for {
		n, ok, overflow, more := c.next(r)
		if overflow > 0 {
			c.log.Warn("registration fell behind; resynchronised", "class", r.filter, "dropped", overflow, "buffer", c.limit)
		}
		if !more {
			return
		}
		if ok && r.ctx.Err() == nil {
			c.call(r, n)
		}
	}
}

// next waits for r's next notification. It returns ok=false when there is none but an overflow
// to report, and more=false once r is removed.
func (c *Client) next(r *Registration) (n notify.Notification, ok bool, overflow int, more bool) {
	for {
		r.mu.Lock()
		if r.stale && !r.removed {
			r.mu.Unlock()
			c.catchUp(r)
			r.mu.Lock()
		}
		if r.removed {
			r.mu.Unlock()
			return notify.Notification{}, false, 0, false
		}
		overflow, r.overflow = r.overflow, 0
		if r.queue.len() > 0 {
			n = r.queue.pop()
			if n.IsArrival() {
				r.view[n.SymbolicLinkName] = n.Interface
			} else {
				delete(r.view, n.SymbolicLinkName)
			}
			r.mu.Unlock()
			return n, true, overflow, true
		}
		r.mu.Unlock()
		if overflow > 0 {
			return notify.Notification{}, false, overflow, true
		}
		select {
		case <-r.wake:
		case <-r.ctx.Done():
		}
	}
}

// call runs r's callback for n, logging an error or a panic.
func (c *Client) call(r *Registration, n notify.Notification) {
	r.delivered.Add(1)
	err := func() (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = &panicError{value: v, stack: debug.Stack()}
			}
		}()
		return r.cb(r.ctx, n)
	}()
	var pe *panicError
	switch {
	case err == nil:
	case errors.As(err, &pe):
		c.log.Error("callback panicked", "class", r.filter, "event", notify.EventName(n.Event),
			"interface", n.SymbolicLinkName, "err", err, "stack", string(pe.stack))
	case r.ctx.Err() != nil && errors.Is(err, context.Canceled):
		c.log.Debug("callback cancelled", "class", r.filter, "event", notify.EventName(n.Event),
			"interface", n.SymbolicLinkName, "err", err)
	default:
		c.log.Warn("callback failed", "class", r.filter, "event", notify.EventName(n.Event),
			"interface", n.SymbolicLinkName, "err", err)
	}
}

// exited runs when r's goroutine ends: normally after removal; after a runtime.Goexit in the
// callback it removes r, which could never be served again.
func (c *Client) exited(r *Registration) {
	c.mu.Lock()
	delete(c.live, r)
	r.mu.Lock()
	orphan := !r.removed
	r.removed = true
	r.queue.reset()
	r.mu.Unlock()
	if orphan {
		if i := slices.Index(c.regs, r); i >= 0 {
			c.regs = slices.Delete(c.regs, i, i+1)
		}
	}
	c.mu.Unlock()
	r.cancel()
	close(r.done)
	if orphan {
		c.log.Error("callback goroutine exited", "class", r.filter, "reason", "callback called runtime.Goexit")
	}
}

// panicError is a callback's panic, as an error.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string { return fmt.Sprintf("callback panicked: %v", p.value) }
