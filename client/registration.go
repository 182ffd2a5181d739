package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hotplug-agent/hotplug-agent/internal/dispatch"
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
	w      *dispatch.Worker // the delivery goroutine
	ready  chan struct{}    // closed once the registration's starting point is set

	stacks    dispatch.Stacks // the delivery goroutine only
	delivered atomic.Uint64

	mu      sync.Mutex // guards the fields below; taken after Client.mu
	pending bool       // registered before the client's first sync: it starts there
	box     dispatch.Mailbox[notify.Notification, notify.Interface]
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
	return r.box.Len() + r.box.Held()
}

// Dropped counts the notifications dropped by queue overflows (and replaced by a resync). It
// does not block.
func (r *Registration) Dropped() uint64 { return r.box.Dropped() }

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
	case <-r.w.Context().Done():
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
	r := &Registration{
		c:      c,
		filter: filter,
		flags:  flags,
		cb:     cb,
		w:      dispatch.NewWorker(),
		ready:  make(chan struct{}),
	}
	r.box.Init(c.spec)
	c.mu.Lock()
	if c.regs.Closed() {
		c.mu.Unlock()
		r.w.Cancel()
		return nil, fmt.Errorf("client: register %s: %w", filter, ErrClosed)
	}
	r.mu.Lock()
	if c.synced {
		c.start(r)
	} else {
		r.pending = true
	}
	r.mu.Unlock()
	c.regs.Add(r)
	synced := c.synced
	c.mu.Unlock()

	r.w.Start(func() { c.deliver(r) }, func(bool) { c.exited(r) })
	c.log.Debug("registered", "class", filter, "include_existing", flags&notify.FlagIncludeExistingInterfaces != 0,
		"waiting_for_agent", !synced)
	return r, nil
}

// start sets r's starting point from the replica: with FlagIncludeExistingInterfaces an arrival
// for every active interface of its class, else a view that starts there. c.mu and r.mu are
// held.
func (c *Client) start(r *Registration) {
	r.box.Start(c.activeOf(r.filter.Class), func(i notify.Interface) string { return i.SymbolicLink },
		r.flags&notify.FlagIncludeExistingInterfaces != 0, func(n notify.Notification) notify.Notification {
			n.Cause = notify.CauseExisting
			return n
		})
	r.pending = false
	close(r.ready)
	r.w.Poke()
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
	if !dispatch.Unregister(&c.mu, &c.regs, r, r.remove, r.w) {
		return fmt.Errorf("client: unregister %s: %w", r.filter, ErrUnregistered)
	}
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
	if err := r.w.Wait(ctx); err != nil {
		return fmt.Errorf("client: unregister %s: its callback is still running: %w", r.filter, err)
	}
	return nil
}

// remove removes r's queue for good and reports whether it was not removed already.
func (r *Registration) remove() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.box.Remove()
}

// publish queues n for every started registration of its class. c.mu is held.
func (c *Client) publish(n notify.Notification) {
	for _, r := range c.regs.Registered() {
		if matches(r.filter.Class, n.InterfaceClassGUID) {
			c.enqueue(r, n)
		}
	}
}

// enqueue appends n to r's queue, or, when the queue is full, drops it and marks r stale: its
// own goroutine computes the resync it is owed when it is free again. It wakes r's goroutine if
// it waits for it. c.mu is held.
func (c *Client) enqueue(r *Registration, n notify.Notification) {
	r.mu.Lock()
	wake := !r.pending && r.box.Offer(n)
	r.mu.Unlock()
	if wake {
		r.w.Poke()
	}
}

// catchUp queues the resync a stale r is owed: the difference between its view and the replica.
func (c *Client) catchUp(r *Registration) {
	c.mu.Lock()
	r.mu.Lock()
	if r.box.Stale() {
		r.box.Resync(c.view, func(i notify.Interface) bool { return matches(r.filter.Class, i.ClassGUID) }, nil)
	}
	r.mu.Unlock()
	c.mu.Unlock()
}

// batchMax is the most notifications a delivery goroutine takes off its queue at once.
const batchMax = 64

// deliver is r's goroutine: it runs r's callback for its queue, in order, until r is removed.
func (c *Client) deliver(r *Registration) {
	var batch []notify.Notification
	for {
		var overflow int
		var more bool
		batch, overflow, more = c.next(r, batch[:0])
		if overflow > 0 {
			c.log.Warn("registration fell behind; resynchronised", "class", r.filter, "dropped", overflow, "buffer", c.limit)
		}
		if !more {
			return
		}
		for k, n := range batch {
			r.box.Started()
			if r.w.Context().Err() == nil {
				c.call(r, n)
			}
			batch[k] = notify.Notification{}
		}
	}
}

// next waits for r's next notifications and appends up to batchMax of them to batch. It
// returns none but an overflow to report when there is only that, and more=false once r is
// removed.
func (c *Client) next(r *Registration, batch []notify.Notification) (_ []notify.Notification, overflow int, more bool) {
	for {
		r.mu.Lock()
		if r.box.Stale() {
			r.mu.Unlock()
			c.catchUp(r)
			r.mu.Lock()
		}
		if r.box.Removed() {
			r.mu.Unlock()
			return batch, 0, false
		}
		overflow = r.box.TakeOverflow()
		if r.box.Len() > 0 || overflow > 0 {
			batch = r.box.Take(batch, batchMax)
			r.mu.Unlock()
			return batch, overflow, true
		}
		r.box.Wait()
		r.mu.Unlock()
		r.w.Idle()
	}
}

// call runs r's callback for n, logging an error or a panic.
func (c *Client) call(r *Registration, n notify.Notification) {
	r.delivered.Add(1)
	ctx := r.w.Context()
	err, panicked, omitted := r.stacks.Call(func() error { return r.cb(ctx, n) })
	switch {
	case err == nil:
	case panicked:
		args := []any{"class", r.filter, "event", notify.EventName(n.Event), "interface", n.SymbolicLinkName, "err", err}
		c.log.Error("callback panicked", append(args, err.(*dispatch.PanicError).LogArgs(omitted)...)...)
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		c.log.Debug("callback cancelled", "class", r.filter, "event", notify.EventName(n.Event),
			"interface", n.SymbolicLinkName, "err", err)
	default:
		c.log.Warn("callback failed", "class", r.filter, "event", notify.EventName(n.Event),
			"interface", n.SymbolicLinkName, "err", err)
	}
}

// exited runs when r's goroutine ends, before its Worker is done: normally after removal;
// after a runtime.Goexit in the callback it removes r, which could never be served again.
func (c *Client) exited(r *Registration) {
	c.mu.Lock()
	orphan := r.remove()
	c.regs.Exited(r)
	c.mu.Unlock()
	if orphan {
		c.log.Error("callback goroutine exited", "class", r.filter, "reason", "callback called runtime.Goexit")
	}
}
