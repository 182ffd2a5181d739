package notify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/hotplug-agent/hotplug-agent/internal/dispatch"
)

// EventCategory is the kind of Plug and Play event a registration is for
// (IO_NOTIFICATION_EVENT_CATEGORY).
type EventCategory int

// The event categories of IoRegisterPlugPlayNotification, with their Windows values.
const (
	EventCategoryHardwareProfileChange EventCategory = 1
	EventCategoryDeviceInterfaceChange EventCategory = 2
	EventCategoryTargetDeviceChange    EventCategory = 3
)

// String returns the Windows name of c without its prefix, such as "DeviceInterfaceChange".
// It does not block and is safe for concurrent use.
func (c EventCategory) String() string {
	switch c {
	case EventCategoryHardwareProfileChange:
		return "HardwareProfileChange"
	case EventCategoryDeviceInterfaceChange:
		return "DeviceInterfaceChange"
	case EventCategoryTargetDeviceChange:
		return "TargetDeviceChange"
	}
	return "EventCategory(" + strconv.Itoa(int(c)) + ")"
}

// Flags are the EventCategoryFlags of a registration.
type Flags uint32

// FlagIncludeExistingInterfaces is PNPNOTIFY_DEVICE_INTERFACE_INCLUDE_EXISTING_INTERFACES: the
// new registration first receives an arrival for every interface of its class that is active.
const FlagIncludeExistingInterfaces Flags = 0x1

// FlagMemoryDevices is this agent's extension, for registrations of GUIDDeviceMemory: one
// arrival per memory device (a DIMM, a virtio-mem device's plug; Interface.IsMemoryDevice)
// once all its blocks are online, and one removal when the first of them goes, instead of one
// per memory block. A Registry holds either kind of interface; the agent keeps a second
// Registry for memory devices and Agent.Register routes a registration with this flag there.
// Registry.Register refuses it.
const FlagMemoryDevices Flags = 0x100

// knownFlags holds every flag bit that Register accepts.
const knownFlags = FlagIncludeExistingInterfaces

// DefaultQueueLimit is the per-registration queue bound used when Options.QueueLimit is not
// positive.
const DefaultQueueLimit = 4096

var (
	// ErrNotSupported is wrapped by the error of Register for an event category that this
	// agent does not implement yet (HardwareProfileChange) or that Registry does not take
	// (TargetDeviceChange, which TargetRegistry.Register takes, for one symbolic link).
	ErrNotSupported = errors.New("not supported yet")
	// ErrUnregistered is wrapped by the error of Unregister and UnregisterEx for an entry that
	// was already removed, a nil entry, or an entry of another registry.
	ErrUnregistered = errors.New("entry not registered")
	// ErrClosed is wrapped by the error of Register once the registry is closed.
	ErrClosed = errors.New("registry closed")
)

// Callback is the notification routine. It runs on the registration's own goroutine (the
// PASSIVE_LEVEL analogue: it may block, but it blocks only its own registration). ctx is
// cancelled when the entry is unregistered or the registry closed. userCtx is the Context
// value given to Register. A returned error is logged and reported to the Observer; a panic is
// recovered, logged and reported as a *PanicError; either way the registration continues with
// its next notification.
type Callback func(ctx context.Context, n Notification, userCtx any) error

// Observer receives the registry's measurements (the daemon maps them to Prometheus). Its
// methods are called on the registration goroutines, possibly concurrently with each other,
// and must not block. The *Notification is valid only during the call, and shared with other
// registrations: do not keep it, and do not modify it.
type Observer interface {
	// CallbackStarted is called just before the callback runs; latency is the time from
	// n.ReadAt to the callback's start. While a registration's callbacks are quick the clock is
	// read once every few of them (dispatch.Timer): a start is then off by less than 10 µs.
	CallbackStarted(owner string, n *Notification, latency time.Duration)
	// CallbackDone is called when the callback has returned; took is how long it ran (while
	// callbacks are quick, the mean of the few before, the durations adding up to the time they
	// took: see dispatch.Timer); err is its error, or a *PanicError when it panicked.
	CallbackDone(owner string, n *Notification, took time.Duration, err error)
	// QueueOverflow reports that a registration's queue exceeded the limit: dropped
	// notifications were replaced by a resync.
	QueueOverflow(owner string, dropped int)
}

// OwnerObserver is an Observer that can serve one owner's registrations through an Observer of
// their own, which then need not look the owner up at every callback: Register calls ForOwner
// once per registration, and that registration reports to what it returned (with the same
// owner). ForOwner must not block and must be safe for concurrent use.
type OwnerObserver interface {
	Observer
	ForOwner(owner string) Observer
}

// PanicError is the error reported to the Observer when a callback panicked: its Value is the
// value given to panic, its Stack the stack of the panicking callback goroutine, or nil when it
// was not captured (a registration's stack is captured on its first panic and then at most once
// per StackInterval).
type PanicError = dispatch.PanicError

// StackInterval is how often a registration whose callback keeps panicking has its stack
// captured and logged: the first panic always, then at most once per interval. Every panic is
// still logged (one line) and reported to the observer.
const StackInterval = dispatch.StackInterval

// Options configure a Registry. The zero value is valid; NewRegistry copies it.
type Options struct {
	// Logger receives the registry's logs; nil discards them.
	Logger *slog.Logger
	// Observer receives measurements; nil means none.
	Observer Observer
	// QueueLimit bounds the notifications queued for one registration; 0 (or less) means
	// DefaultQueueLimit. A registration that falls further behind gets a resync instead.
	QueueLimit int
	// RequestCheckpoint, when set, asks the agent to take a Checkpoint, save it and call Saved:
	// urgently when a durable registration (RegisterDurable) waits for its next notification to
	// be in a saved Checkpoint, at leisure when one has finished a notification (so that it is
	// not given again after a kill). It must not block. Without it, durable registrations do
	// not wait.
	RequestCheckpoint func(urgent bool)
}

// Registry holds the active device interfaces and the registrations for their arrival and
// removal (the I/O manager's side of IoRegisterPlugPlayNotification). Each registration has
// its own ordered queue and dispatch goroutine, so a slow or blocked callback delays only its
// own registration. All methods are safe for concurrent use, from callbacks too.
type Registry struct {
	log   *slog.Logger
	obs   Observer
	limit int
	spec  *dispatch.Spec[*queued, Interface]

	checkpoint func(urgent bool) // Options.RequestCheckpoint

	mu      sync.Mutex
	active  map[string]Interface // keyed by SymbolicLink
	sorted  []Interface          // active sorted with compareInterfaces; nil once active changed
	entries dispatch.Set[*Entry]
	lastID  uint64   // the ID of the last notification published
	slab    []queued // where Publish puts the next notifications the queues point to
	// holds counts HoldWakes not yet released; owed are the entries whose wake waits for the
	// last release.
	holds int
	owed  []*Entry
}

// queued is a notification as the queues hold it: shared by every registration that gets it, and
// never modified once queued (but for restate, on one made for a single registration).
type queued struct {
	Notification
	// prior is, for a removal, the interface as it was active before: what undoes it when a
	// queue's view is worked out from the active set (dispatch.Mailbox.Track).
	prior Interface
}

// NewRegistry returns an empty, open registry. It does not block and is safe for concurrent use.
func NewRegistry(opts Options) *Registry {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	limit := opts.QueueLimit
	if limit <= 0 {
		limit = DefaultQueueLimit
	}
	r := &Registry{
		log:    log,
		obs:    opts.Observer,
		limit:  limit,
		active: make(map[string]Interface),
		spec:   newSpec(limit),
	}
	r.checkpoint = opts.RequestCheckpoint
	return r
}

// Entry is the opaque handle of one registration (the NotificationEntry of Windows). Its
// methods do not block and are safe for concurrent use.
type Entry struct {
	r       *Registry
	owner   string
	class   uuid.UUID
	flags   Flags
	cb      Callback
	userCtx any
	w       *dispatch.Worker // the dispatch goroutine

	obs       Observer        // the registry's Observer, or what its ForOwner gave for owner
	startID   uint64          // the registry's LastID when the entry was registered
	stacks    dispatch.Stacks // dispatch goroutine only
	timer     dispatch.Timer  // dispatch goroutine only
	delivered atomic.Uint64
	resyncs   atomic.Uint64 // see Resyncs; written by the dispatch goroutine alone
	owed      bool          // its wake waits for Registry.ReleaseWakes; guarded by Registry.mu

	durable bool          // RegisterDurable: see durable.go
	idle    chan struct{} // capacity 1: "running went false" once stopped
	saved   chan struct{} // capacity 1, durable entries: "a Checkpoint was saved"

	mu      sync.Mutex                           // guards the fields below; taken after Registry.mu
	stopped bool                                 // Registry.Stop: no callback starts
	running bool                                 // a callback runs
	box     dispatch.Mailbox[*queued, Interface] // immutable notifications, shared
	durableState
}

// StartID is the ID of the last notification published before the entry was registered: the
// entry receives exactly those numbered after it (and, with FlagIncludeExistingInterfaces, the
// active set as of it). It does not block and is safe for concurrent use.
func (e *Entry) StartID() uint64 { return e.startID }

// Owner returns the owner given to Register. It does not block and is safe for concurrent use.
func (e *Entry) Owner() string { return e.owner }

// Resyncs counts the times e's queue overflowed and e was given a resync in place of what it
// missed. The count grows on e's dispatch goroutine just before the first callback after each
// overflow (the resync's notifications, or the next one published when what was missed cancels
// out and the resync brings none), so a callback that finds it above the count it saw last
// knows that notifications published before the one it is given are missing. It does not block
// and is safe for concurrent use.
func (e *Entry) Resyncs() uint64 { return e.resyncs.Load() }

// Class returns the interface class given to Register (AllClasses for every class). It does
// not block and is safe for concurrent use.
func (e *Entry) Class() uuid.UUID { return e.class }

// EntryInfo describes one registration for status pages. It is a plain value.
type EntryInfo struct {
	Owner string    `json:"owner"`
	Class uuid.UUID `json:"class"`
	Flags Flags     `json:"flags"`
	// Queued is the number of notifications waiting for the callback.
	Queued int `json:"queued"`
	// Delivered counts the notifications handed to the callback.
	Delivered uint64 `json:"delivered"`
	// Dropped counts the notifications dropped by queue overflows (and replaced by resyncs).
	Dropped uint64 `json:"dropped"`
}

// Seed sets the active interface set without notifying anyone: the agent's starting truth.
// Call it before Register and Publish; a later call replaces the whole set, and entries already
// registered are not told (their resyncs will be computed against the new set). Interfaces
// without a SymbolicLink or a ClassGUID are skipped and logged. Seed does not block on callbacks
// and is safe for concurrent use.
func (r *Registry) Seed(ifaces []Interface) {
	active := make(map[string]Interface, len(ifaces))
	for _, i := range ifaces {
		if i.SymbolicLink == "" || i.ClassGUID == uuid.Nil {
			r.log.Warn("seed interface skipped", "interface", i.SymbolicLink, "class", ClassName(i.ClassGUID),
				"reason", "no symbolic link or class")
			continue
		}
		active[i.SymbolicLink] = i
	}
	r.mu.Lock()
	for _, e := range r.entries.Registered() {
		// Their views follow the active set: they must stay where they are.
		e.mu.Lock()
		e.box.Freeze()
		e.mu.Unlock()
	}
	r.active = active
	r.sorted = nil
	r.mu.Unlock()
}

// Register is IoRegisterPlugPlayNotification. category must be EventCategoryDeviceInterfaceChange
// (HardwareProfileChange and TargetDeviceChange fail with ErrNotSupported); class is the
// interface class GUID, or AllClasses for every class (this agent's extension); owner is the
// DriverObject analogue, a non-empty name used in logs and metric labels; cb must be non-nil;
// flags may only contain FlagIncludeExistingInterfaces.
//
// With FlagIncludeExistingInterfaces the entry first receives one arrival (Cause CauseExisting,
// ReadAt the registration time, Seqnum 0) for every active interface of its class, in
// Interface.Less order, and then every later Publish, with no gap and no duplicate: the snapshot
// and the insertion happen under the lock that Publish takes. Those first callbacks may run
// before Register returns. Without the flag the entry receives only later notifications.
//
// Register does not block on callbacks and is safe for concurrent use, from callbacks too.
func (r *Registry) Register(category EventCategory, flags Flags, class uuid.UUID, owner string, cb Callback, userCtx any) (*Entry, error) {
	return r.register(category, flags, class, owner, cb, userCtx, false, nil)
}

// register is Register, and RegisterDurable when durable.
func (r *Registry) register(category EventCategory, flags Flags, class uuid.UUID, owner string, cb Callback, userCtx any, durable bool, resume *Cursor) (*Entry, error) {
	if strings.TrimSpace(owner) == "" {
		return nil, errors.New("notify: register: empty owner")
	}
	switch category {
	case EventCategoryDeviceInterfaceChange:
	case EventCategoryHardwareProfileChange:
		return nil, fmt.Errorf("notify: register %s: event category %s: %w", owner, category, ErrNotSupported)
	case EventCategoryTargetDeviceChange:
		// Its EventCategoryData is one device, not a class: TargetRegistry.Register takes it.
		return nil, fmt.Errorf("notify: register %s: event category %s with an interface class: %w; register for one interface's symbolic link with TargetRegistry.Register", owner, category, ErrNotSupported)
	default:
		return nil, fmt.Errorf("notify: register %s: unknown event category %d", owner, int(category))
	}
	if flags&FlagMemoryDevices != 0 {
		return nil, fmt.Errorf("notify: register %s: FlagMemoryDevices: register through the agent, which keeps the memory devices' registry", owner)
	}
	if unknown := flags &^ knownFlags; unknown != 0 {
		return nil, fmt.Errorf("notify: register %s: unknown flags %#x", owner, uint32(unknown))
	}
	if cb == nil {
		return nil, fmt.Errorf("notify: register %s: nil callback", owner)
	}

	e := &Entry{
		r:       r,
		owner:   owner,
		class:   class,
		flags:   flags,
		cb:      cb,
		userCtx: userCtx,
		w:       dispatch.NewWorker(),
		timer:   dispatch.NewTimer(),
		obs:     r.obs,
		idle:    make(chan struct{}, 1),
		durable: durable,
	}
	if o, ok := r.obs.(OwnerObserver); ok {
		e.obs = o.ForOwner(owner)
	}
	e.box.Init(r.spec)
	e.box.Track(func() map[string]Interface { return r.active }, func(i Interface) bool { return matches(class, i.ClassGUID) })
	if durable {
		e.saved = make(chan struct{}, 1)
	}
	include := flags&FlagIncludeExistingInterfaces != 0 && resume == nil

	r.mu.Lock()
	if r.entries.Closed() {
		r.mu.Unlock()
		e.w.Cancel()
		return nil, fmt.Errorf("notify: register %s: %w", owner, ErrClosed)
	}
	existing := r.activeOf(class)
	e.startID = r.lastID
	if resume != nil {
		r.resume(e, resume, existing)
	} else {
		// With include the existing arrivals fill the view as they are delivered; without, the
		// entry is not told about what is active, but its later notifications continue from
		// that state, so that is where its view starts.
		e.box.Start(existing, interfaceKey, include, func(q *queued) *queued {
			q.Cause = CauseExisting
			q.Notification = r.restate(e, q.Notification)
			return q
		})
	}
	if durable && resume == nil {
		e.doneView = maps.Clone(e.box.View())
	}
	r.entries.Add(e)
	r.mu.Unlock()

	e.w.Start(func() { r.run(e) }, func(clean bool) { r.exited(e, clean) })
	r.log.Info("notification registered", "owner", owner, "class", ClassName(class),
		"include_existing", include, "active", len(existing), "durable", durable, "resumed", resume != nil)
	return e, nil
}

// Unregister is IoUnregisterPlugPlayNotification: it removes e, drops what is queued for it,
// cancels its callback context and returns at once. A callback already in flight may still be
// running and is not interrupted, but no new callback of e starts after Unregister returns (a
// callback counts as started once its notification is taken off the queue). A second call, a
// nil entry or an entry of another registry returns an error wrapping ErrUnregistered.
// Unregister does not block on callbacks and is safe for concurrent use, from callbacks too.
func (r *Registry) Unregister(e *Entry) error {
	if err := r.withdraw(e); err != nil {
		return err
	}
	e.w.Cancel()
	return nil
}

// withdraw removes e and drops what is queued for it, leaving its callback in flight its
// context.
func (r *Registry) withdraw(e *Entry) error {
	if e == nil {
		return fmt.Errorf("notify: unregister nil entry: %w", ErrUnregistered)
	}
	if e.r != r {
		return fmt.Errorf("notify: unregister %s: %w in this registry", e.owner, ErrUnregistered)
	}
	if !dispatch.Withdraw(&r.mu, &r.entries, e, e.remove, e.w) {
		return fmt.Errorf("notify: unregister %s: %w", e.owner, ErrUnregistered)
	}
	r.log.Info("notification unregistered", "owner", e.owner, "class", ClassName(e.class))
	return nil
}

// UnregisterEx is IoUnregisterPlugPlayNotificationEx: as Unregister, and it also waits until no
// callback of e is running, so that after it returns no callback of e runs. Called from inside
// e's own callback it does not wait (that callback is the one in flight, and no other starts
// after it) and returns at once. If ctx ends first it returns an error wrapping ctx.Err() that
// names the owner; e is unregistered all the same. As on Windows, a callback must not call it
// for an entry whose callback is waiting on that callback: that waits until ctx ends.
// UnregisterEx blocks as described and is safe for concurrent use.
func (r *Registry) UnregisterEx(ctx context.Context, e *Entry) error {
	if err := r.Unregister(e); err != nil {
		return err
	}
	if err := e.w.Wait(ctx); err != nil {
		return fmt.Errorf("notify: unregister: callback of %s is still running: %w", e.owner, err)
	}
	return nil
}

// Retire is UnregisterEx for a registration its owner gives up while the registry goes on (the
// agent's reload of a callback removed or changed): e is removed and what is queued for it
// dropped, at once, but its callback in flight keeps its context, as in a shutdown, until it
// returns or ctx ends; then the context is cancelled and Retire returns an error wrapping
// ctx.Err() that names the owner. After a nil return no callback of e runs. Called from inside
// e's own callback it does not wait. The same errors as Unregister otherwise. Retire blocks as
// described and is safe for concurrent use.
func (r *Registry) Retire(ctx context.Context, e *Entry) error {
	if err := r.withdraw(e); err != nil {
		return err
	}
	if err := e.w.Wait(ctx); err != nil {
		e.w.Cancel()
		return fmt.Errorf("notify: unregister: callback of %s is still running: %w", e.owner, err)
	}
	return nil
}

// Publish delivers one notification: it updates the active set (an arrival adds n.Interface,
// keyed by its symbolic link; a removal deletes it) and appends n to the queue of every entry of
// its class and of every AllClasses entry. A zero Version, SymbolicLinkName or
// InterfaceClassGUID is filled in from n.Interface (and the reverse), a zero ReadAt with now.
//
// It refuses (returns false, logs at Warn, delivers nothing) an arrival of an interface that is
// already active, a removal of one that is not, an unknown event, and a notification without a
// symbolic link or class or whose two copies of them disagree: so no registration ever sees two
// arrivals of an interface without a removal between them. Publish never blocks on callbacks
// and is safe for concurrent use, from callbacks too.
func (r *Registry) Publish(n Notification) bool {
	if reason := normalize(&n); reason != "" {
		r.refuse(n, reason)
		return false
	}
	arrival := n.IsArrival()
	r.mu.Lock()
	cur, isActive := r.active[n.SymbolicLinkName]
	var reason string
	switch {
	case arrival && isActive:
		reason = "arrival of an active interface"
	case !arrival && !isActive:
		reason = "removal of an interface that is not active"
	case !arrival && cur.ClassGUID != n.InterfaceClassGUID:
		reason = "removal with another class than the active interface"
	}
	if reason != "" {
		r.mu.Unlock()
		r.refuse(n, reason)
		return false
	}
	if arrival {
		r.active[n.SymbolicLinkName] = n.Interface
	} else {
		delete(r.active, n.SymbolicLinkName)
	}
	r.sorted = nil
	r.lastID++
	n.ID = r.lastID
	var p *queued // one copy, which every queue points to
	for _, e := range r.entries.Registered() {
		if matches(e.class, n.InterfaceClassGUID) {
			if p == nil {
				p = r.place(n, cur)
			}
			r.enqueue(e, p)
		}
	}
	r.mu.Unlock()
	return true
}

// slabSize is how many notifications Publish allocates at once.
const slabSize = 64

// place returns a copy of n, which replaces prior (for a removal), that the queues share and no
// one modifies: from a slab, so that a notification costs a fraction of an allocation however
// many registrations get it. r.mu must be held.
func (r *Registry) place(n Notification, prior Interface) *queued {
	if len(r.slab) == 0 {
		r.slab = make([]queued, slabSize)
	}
	p := &r.slab[0]
	p.Notification = n
	if !n.IsArrival() {
		p.prior = prior
	}
	r.slab = r.slab[1:]
	return p
}

// LastID is the ID of the last notification published: each accepted Publish gives its
// notification the next ID. Safe for concurrent use.
func (r *Registry) LastID() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastID
}

// SetLastID makes the next published notification's ID id+1: the agent continues the sequence
// it persisted before a restart. Call it with Seed, before anything is published.
func (r *Registry) SetLastID(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastID = id
}

// Active returns a copy of the active interfaces, sorted with Interface.Less. It does not block
// on callbacks and is safe for concurrent use.
func (r *Registry) Active() []Interface {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.activeOf(AllClasses)
}

// Entries describes the current registrations, in registration order. It does not block on
// callbacks and is safe for concurrent use.
func (r *Registry) Entries() []EntryInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	infos := make([]EntryInfo, 0, len(r.entries.Registered()))
	for _, e := range r.entries.Registered() {
		e.mu.Lock()
		queued := e.box.Len() + e.box.Held()
		e.mu.Unlock()
		infos = append(infos, EntryInfo{
			Owner:     e.owner,
			Class:     e.class,
			Flags:     e.flags,
			Queued:    queued,
			Delivered: e.delivered.Load(),
			Dropped:   e.box.Dropped(),
		})
	}
	return infos
}

// Close unregisters every entry and waits, up to ctx, until no callback runs (those of entries
// unregistered earlier with Unregister included; a Close called from inside a callback does not
// wait for that callback). Further Register calls fail with ErrClosed; Publish still maintains
// the active set. If ctx ends first Close returns an error wrapping ctx.Err() that names the
// owners whose callbacks are still running. Close blocks until then, may be called more than
// once, and is safe for concurrent use.
func (r *Registry) Close(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	r.mu.Lock()
	entries, live := r.entries.Close()
	for _, e := range entries {
		e.remove()
	}
	r.mu.Unlock()
	for _, e := range entries {
		e.w.Cancel()
		e.w.Poke()
	}
	if len(entries) > 0 {
		r.log.Info("notification registry closed", "unregistered", len(entries))
	}
	running := dispatch.WaitAll(ctx, live, (*Entry).worker, (*Entry).Owner)
	if len(running) == 0 {
		return nil
	}
	return fmt.Errorf("notify: close: callbacks of %s are still running: %w", strings.Join(running, ", "), ctx.Err())
}

// activeOf returns a copy of the active interfaces of class (AllClasses: all), sorted. The
// active set is sorted once for all the calls until it changes: at start, every registration,
// the web hub and the first Checkpoint each ask for it. r.mu must be held.
func (r *Registry) activeOf(class uuid.UUID) []Interface {
	if r.sorted == nil {
		r.sorted = sortedInterfaces(r.active)
	}
	if class == AllClasses {
		return slices.Clone(r.sorted)
	}
	out := make([]Interface, 0, len(r.sorted))
	for _, i := range r.sorted {
		if matches(class, i.ClassGUID) {
			out = append(out, i)
		}
	}
	return out
}

// remove removes e's queue for good and reports whether it was not removed already.
func (e *Entry) remove() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.box.Remove()
}

// enqueue appends n to e's queue, or drops the queue for a resync when it is full, and wakes
// e's dispatch goroutine if it waits for it. r.mu must be held.
func (r *Registry) enqueue(e *Entry, n *queued) {
	e.mu.Lock()
	wake := e.box.Offer(n)
	e.mu.Unlock()
	switch {
	case !wake:
	case r.holds > 0:
		if !e.owed {
			e.owed = true
			r.owed = append(r.owed, e)
		}
	default:
		e.w.Poke()
	}
}

// HoldWakes defers, until the matching ReleaseWakes, waking the registrations that Publish
// gives a notification while they wait for one: a burst published under one hold wakes each
// registration once, at its end, where it would wake a registration that keeps up once per
// notification. The notifications are queued as usual. The hold is the registry's: a Publish
// from another goroutine is held too, so hold only while publishing a burst, never while
// blocking. Holds nest. It does not block on callbacks and is safe for concurrent use.
func (r *Registry) HoldWakes() {
	r.mu.Lock()
	r.holds++
	r.mu.Unlock()
}

// ReleaseWakes ends a HoldWakes; the last one wakes every registration it held back. It does not
// block on callbacks and is safe for concurrent use.
func (r *Registry) ReleaseWakes() {
	r.mu.Lock()
	if r.holds > 0 {
		r.holds--
	}
	var owed []*Entry
	if r.holds == 0 {
		owed, r.owed = r.owed, r.owed[:0]
		for _, e := range owed {
			e.owed = false
			e.w.Poke()
		}
		clear(owed) // hold no entry beyond its wake
	}
	r.mu.Unlock()
}

// catchUp queues the resync a stale e is owed, against the interfaces active now: removals
// first, then arrivals, each in Interface.Less order; an interface whose details changed gets
// a removal and an arrival.
func (r *Registry) catchUp(e *Entry) {
	r.mu.Lock()
	e.mu.Lock()
	if e.box.Stale() {
		e.box.Resync(r.active, func(i Interface) bool { return matches(e.class, i.ClassGUID) },
			func(q *queued) *queued { q.Notification = r.restate(e, q.Notification); return q })
	}
	e.mu.Unlock()
	r.mu.Unlock()
}

// refuse logs a notification that Publish refused.
func (r *Registry) refuse(n Notification, reason string) {
	r.log.Warn("notification refused", "reason", reason, "event", EventName(n.Event),
		"interface", n.SymbolicLinkName, "class", ClassName(n.InterfaceClassGUID), "seqnum", n.Seqnum)
}

// batchMax is the most notifications a dispatch goroutine takes off its queue at once: one
// hand-off under the entry's lock for a burst, rather than one per notification.
const batchMax = 64

// run is the dispatch goroutine of e: it delivers e's queue in order until e is removed.
func (r *Registry) run(e *Entry) {
	var batch []*queued
	for {
		var overflow int
		var more bool
		batch, overflow, more = e.next(batch[:0])
		if overflow > 0 {
			e.resyncs.Add(1)
			r.log.Warn("notification queue overflow", "owner", e.owner, "class", ClassName(e.class),
				"dropped", overflow, "limit", r.limit)
			if e.obs != nil {
				e.obs.QueueOverflow(e.owner, overflow)
			}
		}
		if !more {
			return
		}
		running := false // e still runs from the callback before (non-durable e, same batch)
		for k, n := range batch {
			e.box.Started()
			ok := false
			switch {
			case e.w.Context().Err() != nil:
				if running {
					e.end(nil)
				}
			case running:
				ok = e.goOn()
			default:
				ok = e.begin()
			}
			running = false
			if ok {
				r.dispatch(e, n, k == len(batch)-1)
				if e.durable || k == len(batch)-1 {
					e.end(n)
				} else {
					running = true // end and the next begin in one goOn
				}
			} else {
				e.timer.Break()
			}
			batch[k] = nil // hold no notification beyond its delivery
		}
	}
}

// begin is called with n just taken off e's queue: a durable e waits until a saved Checkpoint
// holds n. It returns false, and n is not delivered, when e is removed or stopped meanwhile;
// otherwise e is running.
func (e *Entry) begin() bool {
	if e.durable && !e.awaitSaved() {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.box.Removed() || e.stopped {
		return false
	}
	e.running = true
	return true
}

// goOn is end and begin, for the next notification of a batch, under one lock: a non-durable e
// stays running from one callback to the next, unless it was removed or stopped meanwhile (then
// it ends, and goOn returns false).
func (e *Entry) goOn() bool {
	e.mu.Lock()
	if !e.box.Removed() && !e.stopped {
		e.mu.Unlock()
		return true
	}
	e.running = false
	stopped := e.stopped
	e.mu.Unlock()
	if stopped {
		e.signalIdle()
	}
	return false
}

// signalIdle tells a Stop waiting in awaitIdle that e's running went false.
func (e *Entry) signalIdle() {
	select {
	case e.idle <- struct{}{}:
	default:
	}
}

// end is called when e's callback has returned from n (nil: a non-durable e's last callback,
// which goOn did not end). Only a Stop waits for it (awaitIdle), and only once it has stopped e:
// only then is it told.
func (e *Entry) end(n *queued) {
	e.mu.Lock()
	e.running = false
	if e.durable {
		e.finished(&n.Notification)
	}
	stopped := e.stopped
	e.mu.Unlock()
	if stopped {
		e.signalIdle()
	}
	if e.durable {
		e.r.requestCheckpoint(false)
	}
}

// next waits for e's next notifications and appends them to batch: up to batchMax of them, one
// for a durable e (whose Checkpoints count them one by one). It returns none but an overflow to
// report when there is only that, and more=false once e is removed.
func (e *Entry) next(batch []*queued) (_ []*queued, overflow int, more bool) {
	for {
		e.mu.Lock()
		if e.box.Stale() {
			e.mu.Unlock()
			e.r.catchUp(e)
			e.mu.Lock()
		}
		if e.box.Removed() {
			e.mu.Unlock()
			return batch, 0, false
		}
		if e.stopped || e.hasInflight {
			// Stopped for a shutdown: nothing more is taken off the queue, which a Checkpoint
			// saves; or a notification taken off it before is still owed to the callback.
			e.mu.Unlock()
			e.w.IdleUntilPoked()
			continue
		}
		overflow = e.box.TakeOverflow()
		switch {
		case len(e.replay) > 0:
			// Given before this start, perhaps seen: the view already follows from them.
			n := &queued{Notification: e.replay[0]}
			e.replay = e.replay[1:]
			e.inflight, e.hasInflight, e.inflightNum = n.Notification, true, 0
			batch = append(batch, n)
			e.box.Hold()
		case e.box.Len() > 0 && e.durable:
			e.inflightNum = e.box.Pushed() - uint64(e.box.Len()) + 1
			batch = e.box.Take(batch, 1)
			e.inflight, e.hasInflight = batch[len(batch)-1].Notification, true
		case e.box.Len() > 0:
			batch = e.box.Take(batch, batchMax)
		case overflow == 0:
			e.box.Wait()
			e.mu.Unlock()
			e.w.Idle()
			continue
		}
		e.mu.Unlock()
		return batch, overflow, true
	}
}

// dispatch runs e's callback for *p and reports the outcome, timed by e's Timer (last: no
// callback of the batch follows).
func (r *Registry) dispatch(e *Entry, p *queued, last bool) {
	n := &p.Notification // every queue's copy: read here, never written
	if e.obs != nil {
		start := e.timer.Start()
		e.obs.CallbackStarted(e.owner, n, start-e.timer.Since(n.ReadAt))
	}
	e.delivered.Store(e.delivered.Load() + 1) // written by this goroutine alone: no locked add
	ctx := e.w.Context()
	err, panicked, omitted := e.stacks.Call(func() error { return e.cb(ctx, *n, e.userCtx) })
	switch {
	case panicked:
		args := []any{"owner", e.owner, "event", EventName(n.Event), "interface", n.SymbolicLinkName, "err", err}
		if pe, ok := err.(*PanicError); ok {
			args = append(args, pe.LogArgs(omitted)...)
		}
		r.log.Error("callback panicked", args...)
	case err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled):
		r.log.Debug("callback cancelled", "owner", e.owner, "event", EventName(n.Event),
			"interface", n.SymbolicLinkName, "err", err)
	case err != nil:
		r.log.Warn("callback failed", "owner", e.owner, "event", EventName(n.Event),
			"interface", n.SymbolicLinkName, "err", err)
	}
	if e.obs != nil {
		e.obs.CallbackDone(e.owner, n, e.timer.Done(last), err)
	}
}

// exited runs when e's dispatch goroutine ends, before its Worker is done. An end that did not
// come from unregistering (a callback called runtime.Goexit) removes the entry, which could
// never be served again.
func (r *Registry) exited(e *Entry, clean bool) {
	r.mu.Lock()
	e.remove()
	r.entries.Exited(e)
	r.mu.Unlock()
	if !clean {
		r.log.Error("callback goroutine exited", "owner", e.owner, "class", ClassName(e.class),
			"reason", "callback called runtime.Goexit")
	}
}

// worker returns e's dispatch goroutine.
func (e *Entry) worker() *dispatch.Worker { return e.w }

// newSpec is how a Registry's queues of limit notifications read and make notifications.
func newSpec(limit int) *dispatch.Spec[*queued, Interface] {
	return &dispatch.Spec[*queued, Interface]{
		Limit: limit,
		Read: func(q *queued) (string, bool, Interface) {
			return q.SymbolicLinkName, q.IsArrival(), q.Interface
		},
		Note: func(arrival bool, i Interface, now time.Time) *queued {
			return &queued{Notification: resyncNote(arrival, i, now), prior: i}
		},
		Compare: compareInterfaces,
		Prior: func(q *queued) (Interface, bool) {
			return q.prior, !q.IsArrival()
		},
	}
}

// resyncNote is the arrival (or removal) of i that a resync delivers: Cause CauseResync, ID 0,
// ReadAt now.
func resyncNote(arrival bool, i Interface, now time.Time) Notification {
	event := GUIDDeviceInterfaceRemoval
	if arrival {
		event = GUIDDeviceInterfaceArrival
	}
	return NewNotification(event, i, 0, now, CauseResync)
}

// interfaceKey is the key of i in an active set or a view.
func interfaceKey(i Interface) string { return i.SymbolicLink }

// matches reports whether a registration for class receives notifications of ifaceClass.
func matches(class, ifaceClass uuid.UUID) bool {
	return class == AllClasses || class == ifaceClass
}

// compareInterfaces orders interfaces as Interface.Less does, then by symbolic link.
// sortedInterfaces returns the interfaces of m sorted with compareInterfaces. It sorts small keys
// (the class's place, the number, an index) and moves each interface once: sorting the interfaces
// themselves, values of 144 bytes with pointers, cost 8 ms at the start of a machine of 9,216.
func sortedInterfaces(m map[string]Interface) []Interface {
	all := make([]Interface, 0, len(m))
	for _, i := range m {
		all = append(all, i)
	}
	// The classes in Interface.Less's order: there are one or two.
	var classes []uuid.UUID
	for _, i := range all {
		if !slices.Contains(classes, i.ClassGUID) {
			classes = append(classes, i.ClassGUID)
		}
	}
	slices.SortFunc(classes, func(a, b uuid.UUID) int {
		return compareInterfaces(Interface{ClassGUID: a}, Interface{ClassGUID: b})
	})
	type key struct {
		class, index int32
		number       int
	}
	keys := make([]key, len(all))
	for n, i := range all {
		keys[n] = key{int32(slices.Index(classes, i.ClassGUID)), int32(n), i.Number}
	}
	slices.SortFunc(keys, func(a, b key) int {
		if c := cmp.Compare(a.class, b.class); c != 0 {
			return c
		}
		if c := cmp.Compare(a.number, b.number); c != 0 {
			return c
		}
		return strings.Compare(all[a.index].SymbolicLink, all[b.index].SymbolicLink)
	})
	out := make([]Interface, len(all))
	for n, k := range keys {
		out[n] = all[k.index]
	}
	return out
}

func compareInterfaces(a, b Interface) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return strings.Compare(a.SymbolicLink, b.SymbolicLink)
}

// normalize fills in the redundant fields of n and returns why n is unusable, or "".
func normalize(n *Notification) string {
	if n.Event != GUIDDeviceInterfaceArrival && n.Event != GUIDDeviceInterfaceRemoval {
		return "unknown event"
	}
	if n.Version == 0 {
		n.Version = 1
	}
	switch {
	case n.SymbolicLinkName == "":
		n.SymbolicLinkName = n.Interface.SymbolicLink
	case n.Interface.SymbolicLink == "":
		n.Interface.SymbolicLink = n.SymbolicLinkName
	case n.SymbolicLinkName != n.Interface.SymbolicLink:
		return "symbolic link differs from the interface's"
	}
	switch {
	case n.InterfaceClassGUID == uuid.Nil:
		n.InterfaceClassGUID = n.Interface.ClassGUID
	case n.Interface.ClassGUID == uuid.Nil:
		n.Interface.ClassGUID = n.InterfaceClassGUID
	case n.InterfaceClassGUID != n.Interface.ClassGUID:
		return "interface class differs from the interface's"
	}
	if n.SymbolicLinkName == "" {
		return "no symbolic link"
	}
	if n.InterfaceClassGUID == uuid.Nil {
		return "no interface class"
	}
	if n.ReadAt.IsZero() {
		n.ReadAt = time.Now()
	}
	return ""
}
