package dispatch

import (
	"context"
	"slices"
	"sync/atomic"

	"github.com/hotplug-agent/hotplug-agent/internal/goid"
)

// Worker is a registration's goroutine: the context its callbacks get (cancelled when the
// registration is removed), the signal that wakes it, and the wait of an unregistration. Its
// methods are safe for concurrent use.
type Worker struct {
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: "there may be work"
	done   chan struct{} // closed when the goroutine has exited
	gid    atomic.Uint64 // goroutine id of the goroutine, 0 until it starts
}

// NewWorker returns a Worker whose goroutine is not started yet. It does not block.
func NewWorker() *Worker {
	ctx, cancel := context.WithCancel(context.Background())
	return &Worker{ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Start runs run on a new goroutine. When run returns, or the goroutine ends otherwise (a
// callback called runtime.Goexit: then clean is false), exited is called on it, the context is
// cancelled and Done is closed, in that order: once Done is closed no callback of the
// registration runs. It does not block.
func (w *Worker) Start(run func(), exited func(clean bool)) {
	go func() {
		w.gid.Store(goid.ID())
		clean := false
		defer func() {
			if exited != nil {
				exited(clean)
			}
			w.cancel()
			close(w.done)
		}()
		run()
		clean = true
	}()
}

// Context is the callbacks' context: cancelled by Cancel, or when the goroutine has exited. It
// does not block.
func (w *Worker) Context() context.Context { return w.ctx }

// Cancel cancels the callbacks' context. It does not block.
func (w *Worker) Cancel() { w.cancel() }

// Poke wakes the goroutine if it waits in Idle. It does not block.
func (w *Worker) Poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Idle blocks until Poke is called (or was, since the last Idle) or the context ends. Only the
// goroutine calls it.
func (w *Worker) Idle() {
	select {
	case <-w.wake:
	case <-w.ctx.Done():
	}
}

// IdleUntilPoked blocks until Poke is called (or was, since the last Idle), even once the
// context has ended. Only the goroutine calls it.
func (w *Worker) IdleUntilPoked() { <-w.wake }

// Done is closed when the goroutine has exited. It does not block.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Current reports whether the caller runs on the goroutine. It does not block.
func (w *Worker) Current() bool {
	g := w.gid.Load()
	return g != 0 && g == goid.ID()
}

// Wait blocks until the goroutine has exited, so that no callback of the registration runs, or
// ctx ends (it returns ctx.Err()). Called from the goroutine itself (from inside a callback) it
// returns nil at once: that callback is the one in flight. A nil ctx is context.Background().
func (w *Worker) Wait(ctx context.Context) error {
	if w.Current() {
		return nil
	}
	select {
	case <-w.done:
		return nil
	default:
	}
	if ctx == nil {
		ctx = context.Background()
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitAll is the end of a registry's shutdown: it waits, up to ctx, until the goroutine of
// every one of regs has exited, the caller's own excepted (a Close called from inside a
// callback does not wait for that callback), and returns the owners of those still running,
// sorted and without repeats; none when all have exited. worker and owner read a
// registration's Worker and owner. It blocks until then and is safe for concurrent use.
func WaitAll[R any](ctx context.Context, regs []R, worker func(R) *Worker, owner func(R) string) []string {
	if ctx == nil {
		ctx = context.Background()
	}
	var running []string
	for _, r := range regs {
		if worker(r).Wait(ctx) != nil {
			running = append(running, owner(r))
		}
	}
	slices.Sort(running)
	return slices.Compact(running)
}
