package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/dispatch"
)

// This file holds the machinery shared by the registrations whose callbacks the agent waits for:
// the two-phase add (ChangeRegistry) and the target-device notifications (TargetRegistry). Each
// registration has its own goroutine that runs its calls one at a time, in the order they were
// posted, so a registration always sees the phases of one change in order; the caller posts a
// call and waits for its outcome up to a deadline, so one stuck callback delays a change by at
// most the deadline and never blocks the agent for good. A registration's queue may be bounded
// (TargetRegistry's is): when a call is posted to a full queue the oldest queued call is dropped,
// so a stuck callback holds at most that many calls whatever happens meanwhile.

// DefaultVetoTimeout is the deadline of a vetoable call (AddStart, query-remove) when the
// registry's options give none.
const DefaultVetoTimeout = 10 * time.Second

// VetoError is the error of a vetoed change: a registration answered AddStart or query-remove
// with an error, or did not answer within the deadline while timeouts count as vetoes.
type VetoError struct {
	// Owner is the registration that vetoed.
	Owner string
	// Phase is "add_start" or "query_remove".
	Phase string
	// Err is the callback's error; nil when it missed the deadline.
	Err error
	// Timeout is the deadline the callback missed; zero when it answered.
	Timeout time.Duration
}

// Error says who vetoed and why. It does not block and is safe for concurrent use.
func (v *VetoError) Error() string {
	if v.Err == nil {
		return fmt.Sprintf("vetoed by %s: no answer to %s within %s", v.Owner, v.Phase, v.Timeout)
	}
	return fmt.Sprintf("vetoed by %s at %s: %v", v.Owner, v.Phase, v.Err)
}

// Unwrap returns the callback's error. It does not block and is safe for concurrent use.
func (v *VetoError) Unwrap() error { return v.Err }

// SyncObserver receives the outcomes of the calls a change waits for (the daemon maps them to
// Prometheus). Its methods are called from the goroutines that make changes and must not block.
type SyncObserver interface {
	// SyncCallDone is called when a callback of owner has returned from phase (add_start,
	// add_complete, add_failure, query_remove, remove_complete, remove_cancelled); err is its
	// error, or a *PanicError.
	SyncCallDone(owner, phase string, took time.Duration, err error)
	// Vetoed is called for each veto of phase (add_start or query_remove) by owner, of an
	// interface of the class named class ("processor", "memory"); timedOut when the veto was a
	// missed deadline.
	Vetoed(owner, phase, class string, timedOut bool)
	// TimedOut is called when a callback of owner missed the deadline of phase; consent says
	// whether that counted as consent (else as a veto, or, for phases that cannot veto, nothing).
	TimedOut(owner, phase string, consent bool)
	// QueueOverflow is called when a call to owner was dropped unrun because its registration's
	// queue was full (its callback has not kept up); dropped is the number of calls dropped.
	QueueOverflow(owner string, dropped int)
}

// syncEntry is one registration whose calls the caller waits for. Its methods are safe for
// concurrent use.
type syncEntry[N any] struct {
	owner   string
	cb      func(ctx context.Context, n N, userCtx any) error
	userCtx any
	w       *dispatch.Worker
	obs     SyncObserver
	log     *slog.Logger
	stacks  dispatch.Stacks // the entry's goroutine only
	limit   int             // the most calls queued at once; 0: no bound

	mu          sync.Mutex
	removed     bool
	queue       []*syncCall[N]
	running     *syncCall[N] // the call whose callback runs, taken off the queue
	overflowing bool         // a call was dropped since the callback last returned
}

// syncCall is one posted call and its outcome.
type syncCall[N any] struct {
	n        N
	phase    string
	deadline time.Time       // zero: the callback's context ends only with the registration
	result   chan callResult // capacity 1; closed without a value when the call was dropped
}

// callResult is what a callback answered, and whether it answered after the deadline (then the
// answer does not count: the waiter has decided, or is about to decide, on the timeout), or that
// the call was dropped unrun because the registration's queue was full.
type callResult struct {
	err      error
	late     bool
	overflow bool
}

// newSyncEntry starts the goroutine of a new registration. limit bounds its queue (0: no bound).
// exited, if not nil, is called by that goroutine as it exits (no callback of the entry runs
// after it): the registry forgets the entry then, and not before, so that Close waits for a
// callback that unregistered its own entry. It does not block.
func newSyncEntry[N any](owner string, cb func(context.Context, N, any) error, userCtx any, obs SyncObserver, log *slog.Logger, limit int, exited func()) *syncEntry[N] {
	e := &syncEntry[N]{
		owner: owner, cb: cb, userCtx: userCtx, w: dispatch.NewWorker(), obs: obs, log: log, limit: limit,
	}
	e.w.Start(e.run, func(clean bool) {
		if !clean {
			e.abandoned()
		}
		if exited != nil {
			exited()
		}
	})
	return e
}

// abandoned ends the registration whose callback called runtime.Goexit, as Registry does: it is
// removed (its queued calls dropped), the call that was running is dropped too (its waiter, who
// would otherwise wait out its timeout, sees a registration gone, which has no say), and the
// exit is logged. Only the entry's goroutine calls it, as it exits.
func (e *syncEntry[N]) abandoned() {
	e.mu.Lock()
	c := e.running
	e.running = nil
	e.mu.Unlock()
	e.remove()
	phase := ""
	if c != nil {
		phase = c.phase
		close(c.result) // its only sender, run, is gone
	}
	e.log.Error("callback goroutine exited", "owner", e.owner, "phase", phase, "reason", "callback called runtime.Goexit")
}

// post queues a call and returns it, or nil when the registration is removed. When the queue
// is full it drops the oldest queued call (its waiter sees it overflowed), logs the first drop
// since the callback last returned at Error, and reports each to the observer. It does not block.
func (e *syncEntry[N]) post(n N, phase string, deadline time.Time) *syncCall[N] {
	c := &syncCall[N]{n: n, phase: phase, deadline: deadline, result: make(chan callResult, 1)}
	e.mu.Lock()
	if e.removed {
		e.mu.Unlock()
		return nil
	}
	var drop *syncCall[N]
	first := false
	if e.limit > 0 && len(e.queue) >= e.limit {
		drop = e.queue[0]
		e.queue[0] = nil
		e.queue = e.queue[1:]
		first = !e.overflowing
		e.overflowing = true
	}
	e.queue = append(e.queue, c)
	e.mu.Unlock()
	if drop != nil {
		drop.result <- callResult{overflow: true} // the only send: it is no longer queued
		if first {
			e.log.Error("callback queue full: it has not returned for a while; its oldest queued call is dropped, and so are further ones until it returns",
				"owner", e.owner, "dropped_phase", drop.phase, "limit", e.limit)
		}
		if e.obs != nil {
			e.obs.QueueOverflow(e.owner, 1)
		}
	}
	e.w.Poke()
	return c
}

// outcome is how a call ended for its waiter.
type outcome int

const (
	answered   outcome = iota // the callback returned; err is its error
	timedOut                  // the deadline passed first
	dropped                   // the registration was removed before the call ran
	overflowed                // the call was dropped unrun: the registration's queue was full
)

// await waits for c until timeout fires. An answer given after the call's deadline counts as
// the timeout. It blocks.
func (c *syncCall[N]) await(timeout <-chan time.Time) (outcome, error) {
	got := func(r callResult, ok bool) (outcome, error) {
		switch {
		case !ok:
			return dropped, nil
		case r.overflow:
			return overflowed, nil
		case r.late:
			return timedOut, nil
		}
		return answered, r.err
	}
	select {
	case r, ok := <-c.result:
		return got(r, ok)
	case <-timeout:
		// A result that came in time, at the same moment, still counts.
		select {
		case r, ok := <-c.result:
			return got(r, ok)
		default:
			return timedOut, nil
		}
	}
}

// run is the registration's goroutine: it runs the queued calls in order until removed.
func (e *syncEntry[N]) run() {
	for {
		e.mu.Lock()
		if e.removed {
			e.mu.Unlock()
			return
		}
		if len(e.queue) == 0 {
			e.mu.Unlock()
			e.w.Idle()
			continue
		}
		c := e.queue[0]
		e.queue[0] = nil
		e.queue = e.queue[1:]
		e.running = c
		e.mu.Unlock()
		err := e.call(c)
		c.result <- callResult{err: err, late: !c.deadline.IsZero() && !time.Now().Before(c.deadline)}
		e.mu.Lock()
		e.running = nil
		e.overflowing = false
		e.mu.Unlock()
	}
}

// call runs the callback for c, turning a panic into a *PanicError.
func (e *syncEntry[N]) call(c *syncCall[N]) error {
	ctx := e.w.Context()
	if !c.deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, c.deadline)
		defer cancel()
	}
	start := time.Now()
	err, panicked, omitted := e.stacks.Call(func() error { return e.cb(ctx, c.n, e.userCtx) })
	if panicked {
		pe := err.(*PanicError)
		e.log.Error("callback panicked", append([]any{"owner", e.owner, "phase", c.phase, "err", pe}, pe.LogArgs(omitted)...)...)
	}
	if e.obs != nil {
		e.obs.SyncCallDone(e.owner, c.phase, time.Since(start), err)
	}
	return err
}

// remove marks the registration removed, drops its queued calls (their waiters see them
// dropped) and cancels its context. It returns false when it was removed already. It does not
// block.
func (e *syncEntry[N]) remove() bool {
	e.mu.Lock()
	if e.removed {
		e.mu.Unlock()
		return false
	}
	e.removed = true
	for _, c := range e.queue {
		close(c.result)
	}
	e.queue = nil
	e.mu.Unlock()
	e.w.Cancel()
	return true
}

// isRemoved reports whether remove was called.
func (e *syncEntry[N]) isRemoved() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.removed
}

// wait blocks until the registration's goroutine has exited (no callback of it runs), or ctx
// ends; called from the registration's own callback it returns at once.
func (e *syncEntry[N]) wait(ctx context.Context) error {
	if err := e.w.Wait(ctx); err != nil {
		return fmt.Errorf("callback of %s is still running: %w", e.owner, err)
	}
	return nil
}

// syncHandle is the handle of a registration of a syncRegistry (*ChangeEntry, *TargetEntry).
type syncHandle[N any] interface {
	comparable
	entry() *syncEntry[N]
}

// syncRegistry is what the registries whose calls a change waits for share (ChangeRegistry,
// TargetRegistry): their options, their registrations in registration order, and the posting of
// a change's calls to them. Its methods are safe for concurrent use.
type syncRegistry[N any, E syncHandle[N]] struct {
	what    string // "processor change", "target device": names the registry in errors
	log     *slog.Logger
	obs     SyncObserver
	timeout time.Duration
	consent bool
	limit   int // the most calls queued for one registration; 0: no bound

	mu      sync.Mutex
	entries dispatch.Set[E]
}

// init sets r's options; a nil logger discards, a timeout of 0 or less is DefaultVetoTimeout.
func (r *syncRegistry[N, E]) init(what string, log *slog.Logger, obs SyncObserver, timeout time.Duration, consent bool, limit int) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if timeout <= 0 {
		timeout = DefaultVetoTimeout
	}
	r.what, r.log, r.obs, r.timeout, r.consent, r.limit = what, log, obs, timeout, consent, limit
}

// start starts the goroutine of the registration e, which r forgets when it exits (and not
// before, so that Close waits for a callback that unregistered its own entry). It does not
// block.
func (r *syncRegistry[N, E]) start(e E, owner string, cb func(context.Context, N, any) error, userCtx any) *syncEntry[N] {
	return newSyncEntry(owner, cb, userCtx, r.obs, r.log, r.limit, func() {
		r.mu.Lock()
		r.entries.Exited(e)
		r.mu.Unlock()
	})
}

// add registers e, or returns an error wrapping ErrClosed.
func (r *syncRegistry[N, E]) add(e E) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.entries.Add(e) {
		return fmt.Errorf("notify: register %s %s: %w", r.what, e.entry().owner, ErrClosed)
	}
	return nil
}

// unregister removes e, logs msg with args, and waits up to ctx until no callback of e runs
// (at once from e's own callback). It blocks until then.
func (r *syncRegistry[N, E]) unregister(ctx context.Context, e E, msg string, args ...any) error {
	var none E
	if e == none || e.entry() == nil {
		return fmt.Errorf("notify: unregister %s: nil entry: %w", r.what, ErrUnregistered)
	}
	se := e.entry()
	r.mu.Lock()
	ok := r.entries.Delete(e) && se.remove()
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("notify: unregister %s %s: %w", r.what, se.owner, ErrUnregistered)
	}
	r.log.Info(msg, append([]any{"owner", se.owner}, args...)...)
	// The entry stays live until its goroutine exits (it removes itself then): called from its
	// own callback, wait returns at once, and Close must still wait for that callback.
	if err := se.wait(ctx); err != nil {
		return fmt.Errorf("notify: unregister %s: %w", r.what, err)
	}
	return nil
}

// closeEntries is the registries' Close: it unregisters every entry and waits, up to ctx, until
// none of their callbacks runs (that of an entry unregistered from inside its own callback
// included), and returns an error naming those still running. Later registrations fail with
// ErrClosed. It blocks until then.
func (r *syncRegistry[N, E]) closeEntries(ctx context.Context) error {
	r.mu.Lock()
	registered, live := r.entries.Close()
	r.mu.Unlock()
	for _, e := range registered {
		e.entry().remove()
	}
	running := dispatch.WaitAll(ctx, live, func(e E) *dispatch.Worker { return e.entry().w },
		func(e E) string { return e.entry().owner })
	if len(running) > 0 {
		return fmt.Errorf("notify: close %s registry: callbacks of %s are still running: %w", r.what, strings.Join(running, ", "), ctx.Err())
	}
	return nil
}

// selected returns the registrations keep accepts, in registration order.
func (r *syncRegistry[N, E]) selected(keep func(E) bool) []E {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []E
	for _, e := range r.entries.Registered() {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// ask posts the vetoable call n of phase to each of entries in turn, waiting for each answer up
// to the deadline (see vote), and stops at the first veto. It returns the entries the call
// reached (the vetoing one included) and the veto. class and link name the interface in logs.
// It blocks until then.
func (r *syncRegistry[N, E]) ask(entries []E, n N, phase, class, link string) (reached []E, veto *VetoError) {
	for _, e := range entries {
		ok, v := vote(e.entry(), n, phase, class, link, r.timeout, r.consent, r.log, r.obs)
		if !ok {
			continue
		}
		reached = append(reached, e)
		if v != nil {
			return reached, v
		}
	}
	return reached, nil
}

// tell posts the call n of phase, which cannot veto, to each of entries and waits for them all
// up to the deadline (see awaitAll); change names the change in logs. It blocks until then.
func (r *syncRegistry[N, E]) tell(entries []E, n N, phase, change string) {
	var ps []pending[N]
	for _, e := range entries {
		if c := e.entry().post(n, phase, time.Time{}); c != nil {
			ps = append(ps, pending[N]{e.entry(), c})
		}
	}
	awaitAll(ps, r.timeout, r.log, r.obs, change)
}

// pending is one posted call with the entry it went to.
type pending[N any] struct {
	e *syncEntry[N]
	c *syncCall[N]
}

// awaitAll waits for every call in ps up to one shared deadline and logs the callbacks that
// failed or missed it. Used for the phases that cannot veto: their outcome changes nothing.
// It blocks until then.
func awaitAll[N any](ps []pending[N], timeout time.Duration, log *slog.Logger, obs SyncObserver, what string) {
	if len(ps) == 0 {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	expired := false
	for _, p := range ps {
		var out outcome
		var err error
		if expired {
			out, err = p.c.await(closedTime)
		} else {
			out, err = p.c.await(t.C)
			expired = out == timedOut
		}
		switch {
		case out == timedOut:
			log.Warn("callback did not finish in time; going on without it", "owner", p.e.owner, "phase", p.c.phase, "timeout", timeout, "change", what)
			if obs != nil {
				obs.TimedOut(p.e.owner, p.c.phase, false)
			}
		case out == answered && err != nil:
			var pe *PanicError
			if !errors.As(err, &pe) { // a panic is logged where it was recovered
				log.Warn("callback failed", "owner", p.e.owner, "phase", p.c.phase, "change", what, "err", err)
			}
		}
	}
}

// closedTime is a channel that is always ready: awaiting on it only collects outcomes already
// there.
var closedTime = func() <-chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}()

// vote posts the vetoable call n of phase to e and waits for its answer up to timeout. It
// returns reached=false when e was removed before the call could run (a registration that is
// gone has no say), and the veto, if any: an error from the callback, or a missed deadline unless
// consent (a call dropped from the registration's full queue counts as a missed deadline). Vetoes and missed deadlines are logged and reported to obs. It blocks until then.
func vote[N any](e *syncEntry[N], n N, phase, class, link string, timeout time.Duration, consent bool, log *slog.Logger, obs SyncObserver) (reached bool, veto *VetoError) {
	c := e.post(n, phase, time.Now().Add(timeout))
	if c == nil {
		return false, nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	out, err := c.await(t.C)
	switch out {
	case dropped:
		return false, nil
	case timedOut, overflowed: // a call dropped from a full queue will never be answered either
		if obs != nil {
			obs.TimedOut(e.owner, phase, consent)
		}
		if consent {
			log.Warn("callback did not answer in time; counted as consent (on_timeout: consent)", "owner", e.owner, "phase", phase, "interface", link, "timeout", timeout)
			return true, nil
		}
		log.Warn("callback did not answer in time; counted as a veto (on_timeout: veto)", "owner", e.owner, "phase", phase, "interface", link, "timeout", timeout)
		veto = &VetoError{Owner: e.owner, Phase: phase, Timeout: timeout}
	default:
		if err == nil {
			return true, nil
		}
		veto = &VetoError{Owner: e.owner, Phase: phase, Err: err}
	}
	log.Warn("change vetoed", "owner", e.owner, "phase", phase, "interface", link, "err", veto)
	if obs != nil {
		obs.Vetoed(e.owner, phase, class, veto.Err == nil)
	}
	return true, veto
}
