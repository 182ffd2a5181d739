package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// ChangeState is the phase of a two-phase add (KE_PROCESSOR_CHANGE_NOTIFY_STATE), with the
// Windows values.
type ChangeState int

// The phases of a two-phase add.
const (
	// AddStart is KeProcessorAddStartNotify: the CPU or memory block has been added and is about
	// to be brought online. A callback prepares for it (per-CPU structures, a larger pool) or
	// vetoes by returning an error: then it stays offline.
	AddStart ChangeState = 0
	// AddComplete is KeProcessorAddCompleteNotify: it is online (threads can run on the CPU; the
	// memory is in use).
	AddComplete ChangeState = 1
	// AddFailure is KeProcessorAddFailureNotify: the add failed (a veto, or the kernel refused to
	// online it); undo what AddStart prepared. ChangeNotification.Status says why.
	AddFailure ChangeState = 2
)

// String returns "add_start", "add_complete" or "add_failure" (HOTPLUG_PHASE of exec
// callbacks). It does not block and is safe for concurrent use.
func (s ChangeState) String() string {
	switch s {
	case AddStart:
		return "add_start"
	case AddComplete:
		return "add_complete"
	case AddFailure:
		return "add_failure"
	}
	return fmt.Sprintf("ChangeState(%d)", int(s))
}

// ChangeFlags are the flags of a two-phase registration.
type ChangeFlags uint32

// FlagAddExisting is KE_PROCESSOR_CHANGE_ADD_EXISTING: Register first replays the CPUs (or
// memory blocks) that are online, AddStart for each, then AddComplete for each; a veto stops the
// replay, the ones that got AddStart get AddFailure, and Register fails.
const FlagAddExisting ChangeFlags = 0x1

// CauseRequest marks a change asked for through the control socket (hotplug-agent online or
// offline).
const CauseRequest Cause = "request"

// ChangeNotification is KE_PROCESSOR_CHANGE_NOTIFY_CONTEXT, for processors and memory blocks. It
// is a plain value: each callback gets its own copy.
type ChangeNotification struct {
	// State is the phase.
	State ChangeState
	// InterfaceClassGUID is GUIDDeviceProcessor or GUIDDeviceMemory.
	InterfaceClassGUID uuid.UUID
	// SymbolicLinkName names the CPU or block, as in a Notification.
	SymbolicLinkName string
	// Interface holds its details (NtNumber is Interface.Number). During AddStart its State is
	// "offline".
	Interface Interface
	// Status is why an AddFailure happened: a *VetoError, or the kernel's error from the online
	// write. Nil in the other phases.
	Status error
	// Cause is CauseUevent for a hot-add (the kernel's add uevent), CauseRequest for
	// `hotplug-agent online`, CauseExisting for the replay of FlagAddExisting.
	Cause Cause
	// Seqnum is the SEQNUM of the kernel's add uevent; 0 when there was none.
	Seqnum uint64
	// ReadAt is when that uevent was read, or when the change began.
	ReadAt time.Time
}

// ChangeCallback is a two-phase callback. It runs on the registration's own goroutine, one call
// at a time. For AddStart, a returned error (or a panic) vetoes the add; ctx ends at the deadline
// (ChangeOptions.Timeout), and an answer after it does not count. In the other phases the error
// is logged and changes nothing.
type ChangeCallback func(ctx context.Context, n ChangeNotification, userCtx any) error

// ChangeOptions configure a ChangeRegistry. The zero value is valid.
type ChangeOptions struct {
	// Logger receives the registry's logs; nil discards them.
	Logger *slog.Logger
	// Observer receives measurements; nil means none.
	Observer SyncObserver
	// Timeout is the deadline of each AddStart call, and how long a change waits for its
	// AddComplete or AddFailure calls. 0 means DefaultVetoTimeout.
	Timeout time.Duration
	// ConsentOnTimeout makes a callback that misses the AddStart deadline consent; by default it
	// vetoes.
	ConsentOnTimeout bool
	// Existing returns the interfaces of class that are online now, for FlagAddExisting. Nil:
	// FlagAddExisting registrations fail.
	Existing func(class uuid.UUID) ([]Interface, error)
}

// ChangeRegistry holds the two-phase registrations (KeRegisterProcessorChangeCallback, and the
// same for memory blocks) and runs the two-phase adds: Begin calls AddStart on each, in
// registration order; the caller then onlines the resource and ends with Complete or Fail. One
// add (or replay) runs at a time. All methods are safe for concurrent use.
type ChangeRegistry struct {
	syncRegistry[ChangeNotification, *ChangeEntry]
	existing func(uuid.UUID) ([]Interface, error)

	tx chan struct{} // capacity 1: held for the whole of an add or a replay

	adding atomic.Pointer[Interface] // the interface of the add in progress, nil between adds
}

// NewChangeRegistry returns an empty registry. It does not block.
func NewChangeRegistry(opts ChangeOptions) *ChangeRegistry {
	r := &ChangeRegistry{existing: opts.Existing, tx: make(chan struct{}, 1)}
	r.init("processor change", opts.Logger, opts.Observer, opts.Timeout, opts.ConsentOnTimeout, 0)
	return r
}

// ChangeEntry is the handle of one two-phase registration. Its methods do not block and are safe
// for concurrent use.
type ChangeEntry struct {
	class uuid.UUID
	flags ChangeFlags
	se    *syncEntry[ChangeNotification]
}

// Owner returns the owner given to Register.
func (e *ChangeEntry) Owner() string { return e.se.owner }

func (e *ChangeEntry) entry() *syncEntry[ChangeNotification] { return e.se }

// Class returns the class given to Register.
func (e *ChangeEntry) Class() uuid.UUID { return e.class }

// ChangeEntryInfo describes one two-phase registration. It is a plain value.
type ChangeEntryInfo struct {
	Owner string      `json:"owner"`
	Class uuid.UUID   `json:"class"`
	Flags ChangeFlags `json:"flags"`
}

// Entries describes the registrations, in registration order. It does not block.
func (r *ChangeRegistry) Entries() []ChangeEntryInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ChangeEntryInfo, len(r.entries.Registered()))
	for i, e := range r.entries.Registered() {
		out[i] = ChangeEntryInfo{Owner: e.se.owner, Class: e.class, Flags: e.flags}
	}
	return out
}

// Register is KeRegisterProcessorChangeCallback, for class GUIDDeviceProcessor or
// GUIDDeviceMemory. With FlagAddExisting it first replays the interfaces of the class that are
// online (see FlagAddExisting), on the new registration's goroutine, waiting for each call up to
// the deadline; a veto during the replay makes Register fail with an error wrapping the
// *VetoError, and nothing stays registered. The replay waits for any add in progress to end, and
// no add starts until the registration is in place: no CPU is missed or seen twice.
//
// Register blocks during the replay (until ctx ends while it waits for an add in progress) and
// is safe for concurrent use. A callback must not call it with FlagAddExisting: the add that
// called the callback holds the registry until it ends.
func (r *ChangeRegistry) Register(ctx context.Context, class uuid.UUID, flags ChangeFlags, owner string, cb ChangeCallback, userCtx any) (*ChangeEntry, error) {
	switch {
	case strings.TrimSpace(owner) == "":
		return nil, errors.New("notify: register processor change: empty owner")
	case cb == nil:
		return nil, fmt.Errorf("notify: register processor change %s: nil callback", owner)
	case class != GUIDDeviceProcessor && class != GUIDDeviceMemory:
		return nil, fmt.Errorf("notify: register processor change %s: class %s: want processor or memory", owner, ClassName(class))
	case flags&^FlagAddExisting != 0:
		return nil, fmt.Errorf("notify: register processor change %s: unknown flags %#x", owner, uint32(flags&^FlagAddExisting))
	case flags&FlagAddExisting != 0 && r.existing == nil:
		return nil, fmt.Errorf("notify: register processor change %s: add-existing: %w here (no source of existing interfaces)", owner, ErrNotSupported)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	e := &ChangeEntry{class: class, flags: flags}
	e.se = r.start(e, owner, cb, userCtx)
	fail := func(err error) (*ChangeEntry, error) {
		e.se.remove()
		// A replay call that missed its deadline may still be running: give it one more.
		wctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		defer cancel()
		if werr := e.se.wait(wctx); werr != nil {
			r.log.Warn("failed registration: its callback is still running", "owner", owner, "err", werr)
		}
		return nil, err
	}
	if flags&FlagAddExisting != 0 {
		select {
		case r.tx <- struct{}{}:
		case <-ctx.Done():
			return fail(fmt.Errorf("notify: register processor change %s: waiting for the add in progress: %w", owner, ctx.Err()))
		}
		defer func() { <-r.tx }()
		if err := r.replay(e); err != nil {
			return fail(fmt.Errorf("notify: register processor change %s: %w", owner, err))
		}
	}
	if err := r.add(e); err != nil {
		return fail(err)
	}
	r.log.Info("processor change callback registered", "owner", owner, "class", ClassName(class), "add_existing", flags&FlagAddExisting != 0)
	return e, nil
}

// replay runs the add-existing replay for the new entry e. r.tx is held.
func (r *ChangeRegistry) replay(e *ChangeEntry) error {
	ifaces, err := r.existing(e.class)
	if err != nil {
		return fmt.Errorf("add-existing: read the online interfaces: %w", err)
	}
	now := time.Now()
	var started []Interface
	for _, i := range ifaces {
		n := changeNote(AddStart, i, 0, now, CauseExisting)
		started = append(started, i)
		reached, veto := vote(e.se, n, AddStart.String(), ClassName(e.class), i.SymbolicLink, r.timeout, r.consent, r.log, r.obs)
		if !reached {
			return fmt.Errorf("add-existing: %w", ErrUnregistered)
		}
		if veto != nil {
			var ps []pending[ChangeNotification]
			for _, s := range started {
				f := changeNote(AddFailure, s, 0, now, CauseExisting)
				f.Status = veto
				if c := e.se.post(f, AddFailure.String(), time.Time{}); c != nil {
					ps = append(ps, pending[ChangeNotification]{e.se, c})
				}
			}
			awaitAll(ps, r.timeout, r.log, r.obs, "add-existing replay")
			return fmt.Errorf("add-existing replay stopped at %s: %w", i.SymbolicLink, veto)
		}
	}
	var ps []pending[ChangeNotification]
	for _, s := range started {
		if c := e.se.post(changeNote(AddComplete, s, 0, now, CauseExisting), AddComplete.String(), time.Time{}); c != nil {
			ps = append(ps, pending[ChangeNotification]{e.se, c})
		}
	}
	awaitAll(ps, r.timeout, r.log, r.obs, "add-existing replay")
	return nil
}

// Unregister is KeDeregisterProcessorChangeCallback, with the guarantee of
// IoUnregisterPlugPlayNotificationEx: when it returns, no callback of e runs (called from e's own
// callback, it returns at once: no other call of e starts after it). Calls queued for e are
// dropped; an add in progress goes on without e. If ctx ends first it returns an error wrapping
// ctx.Err(); e is unregistered all the same. A second call returns an error wrapping
// ErrUnregistered. It blocks as described and is safe for concurrent use.
func (r *ChangeRegistry) Unregister(ctx context.Context, e *ChangeEntry) error {
	return r.unregister(ctx, e, "processor change callback unregistered", "class", ClassName(e.classOrNil()))
}

// classOrNil is e's class, or the nil GUID for a nil e.
func (e *ChangeEntry) classOrNil() uuid.UUID {
	if e == nil {
		return uuid.Nil
	}
	return e.class
}

// Close unregisters every entry and waits, up to ctx, until none of their callbacks runs (that of
// an entry unregistered from inside its own callback included). Later Register calls fail with
// ErrClosed; Begin still works (with no participants). It blocks until then and is safe for
// concurrent use.
func (r *ChangeRegistry) Close(ctx context.Context) error { return r.closeEntries(ctx) }

// Add is one two-phase add in progress, from Begin to Complete or Fail. Its methods must be called
// by the goroutine that called Begin.
type Add struct {
	r       *ChangeRegistry
	iface   Interface
	seqnum  uint64
	readAt  time.Time
	cause   Cause
	started []*ChangeEntry
	ended   bool
}

// Begin starts the two-phase add of iface (a CPU or memory block that the kernel has added and
// that is about to be onlined): it waits for any other add to end (or ctx), then calls AddStart
// on each registration of iface's class, in registration order, each with the deadline. If one
// vetoes (an error, a panic, or a missed deadline unless timeouts consent), the calls stop there,
// every registration that got AddStart (the vetoing one too) gets AddFailure with the
// *VetoError as Status, and Begin returns an error wrapping the *VetoError. Otherwise the caller
// onlines the resource and calls Complete or Fail, which end the add; until then no other add
// begins.
//
// Begin blocks as described and is safe for concurrent use; the callbacks it calls must not
// call Register with FlagAddExisting.
func (r *ChangeRegistry) Begin(ctx context.Context, iface Interface, seqnum uint64, readAt time.Time, cause Cause) (*Add, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	select {
	case r.tx <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("notify: add %s: waiting for the add in progress: %w", iface.SymbolicLink, ctx.Err())
	}
	if readAt.IsZero() {
		readAt = time.Now()
	}
	a := &Add{r: r, iface: iface, seqnum: seqnum, readAt: readAt, cause: cause}
	r.adding.Store(&iface)
	entries := r.selected(func(e *ChangeEntry) bool { return e.class == iface.ClassGUID })
	var veto *VetoError
	a.started, veto = r.ask(entries, changeNote(AddStart, iface, seqnum, readAt, cause), AddStart.String(),
		ClassName(iface.ClassGUID), iface.SymbolicLink)
	if veto != nil {
		a.end(AddFailure, veto)
		return nil, fmt.Errorf("notify: add %s: %w", iface.SymbolicLink, veto)
	}
	return a, nil
}

// Adding returns the interface whose two-phase add is in progress (between Begin and the end
// of Complete or Fail), and false when none is. It does not block and is safe for concurrent
// use.
func (r *ChangeRegistry) Adding() (Interface, bool) {
	if i := r.adding.Load(); i != nil {
		return *i, true
	}
	return Interface{}, false
}

// Participants returns the number of registrations that got AddStart and consented.
func (a *Add) Participants() int { return len(a.started) }

// Complete ends the add as a success: each registration that got AddStart gets AddComplete.
// It waits for those calls up to the deadline (so that the arrival notification, which the
// agent holds back until then, follows them) and logs the ones that fail or miss it. A second
// Complete or Fail does nothing. It blocks until then.
func (a *Add) Complete() { a.end(AddComplete, nil) }

// Fail ends the add as a failure with reason (the kernel's error): each registration that got
// AddStart gets AddFailure with reason as Status. It waits as Complete does. A second Complete or
// Fail does nothing. It blocks until then.
func (a *Add) Fail(reason error) { a.end(AddFailure, reason) }

func (a *Add) end(state ChangeState, status error) {
	if a.ended {
		return
	}
	a.ended = true
	defer func() {
		a.r.adding.Store(nil)
		<-a.r.tx
	}()
	n := changeNote(state, a.iface, a.seqnum, a.readAt, a.cause)
	n.Status = status
	a.r.tell(a.started, n, state.String(), a.iface.SymbolicLink)
}

func changeNote(state ChangeState, i Interface, seqnum uint64, readAt time.Time, cause Cause) ChangeNotification {
	return ChangeNotification{
		State: state, InterfaceClassGUID: i.ClassGUID, SymbolicLinkName: i.SymbolicLink,
		Interface: i, Cause: cause, Seqnum: seqnum, ReadAt: readAt,
	}
}
