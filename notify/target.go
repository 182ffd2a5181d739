package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The target-device events of Windows (wdmguid.h), with their exact values.
var (
	// GUIDTargetDeviceQueryRemove is GUID_TARGET_DEVICE_QUERY_REMOVE: the device is about to be
	// removed (taken offline) on request; a callback may veto by returning an error.
	GUIDTargetDeviceQueryRemove = uuid.MustParse("cb3a4006-46f0-11d0-b08f-00609713053f")
	// GUIDTargetDeviceRemoveCancelled is GUID_TARGET_DEVICE_REMOVE_CANCELLED: a removal that was
	// queried did not happen (a veto, or the kernel refused).
	GUIDTargetDeviceRemoveCancelled = uuid.MustParse("cb3a4007-46f0-11d0-b08f-00609713053f")
	// GUIDTargetDeviceRemoveComplete is GUID_TARGET_DEVICE_REMOVE_COMPLETE: the device is gone
	// (offline or removed), whether the agent was asked to remove it or not.
	GUIDTargetDeviceRemoveComplete = uuid.MustParse("cb3a4008-46f0-11d0-b08f-00609713053f")
)

// Requester is who asked for a change through the control socket, from the socket's peer
// credentials.
type Requester struct {
	UID int `json:"uid"`
	PID int `json:"pid"`
}

// TargetNotification is TARGET_DEVICE_REMOVAL_NOTIFICATION with the Linux details. It is a plain
// value: each callback gets its own copy.
type TargetNotification struct {
	// Version is the structure version; always 1.
	Version uint16
	// Event is GUIDTargetDeviceQueryRemove, GUIDTargetDeviceRemoveComplete or
	// GUIDTargetDeviceRemoveCancelled.
	Event uuid.UUID
	// SymbolicLinkName is the target: the interface the registration watches.
	SymbolicLinkName string
	// Interface holds its details.
	Interface Interface
	// Status is why a removal was cancelled: a *VetoError, or the kernel's error from the offline
	// write. Nil for the other events.
	Status error
	// Requested reports a removal asked for through the control socket (query-remove came
	// first); false for a removal the agent did not ask for (the kernel, another tool, an eject),
	// which gets RemoveComplete only, as a surprise removal does on Windows.
	Requested bool
	// Requester is who asked, when Requested.
	Requester Requester
	// Seqnum is the SEQNUM of the kernel uevent of a surprise removal; 0 otherwise.
	Seqnum uint64
	// ReadAt is when the removal began (or when its uevent was read).
	ReadAt time.Time
}

// TargetCallback is a target-device callback. It runs on the registration's own goroutine, one
// call at a time. For query-remove, a returned error (or a panic) vetoes the removal; ctx ends
// at the deadline, and an answer after it does not count. For the other events the error is
// logged and changes nothing.
type TargetCallback func(ctx context.Context, n TargetNotification, userCtx any) error

// ParseSymbolicLink parses the symbolic link of a CPU (/sys/devices/system/cpu/cpuN) or memory
// block (/sys/devices/system/memory/memoryN) and returns its class and number. Anything else,
// leading zeros and trailing parts included, is an error naming the link. It does not block.
func ParseSymbolicLink(link string) (class uuid.UUID, n int, err error) {
	for _, p := range []struct {
		prefix string
		class  uuid.UUID
	}{{"/sys/devices/system/cpu/cpu", GUIDDeviceProcessor}, {"/sys/devices/system/memory/memory", GUIDDeviceMemory}} {
		s, ok := strings.CutPrefix(link, p.prefix)
		if !ok {
			continue
		}
		if s == "" || len(s) > 9 || (len(s) > 1 && s[0] == '0') || strings.Trim(s, "0123456789") != "" {
			break
		}
		n, _ = strconv.Atoi(s)
		return p.class, n, nil
	}
	return uuid.Nil, 0, fmt.Errorf("symbolic link %q: want /sys/devices/system/cpu/cpuN or /sys/devices/system/memory/memoryN", link)
}

// TargetOptions configure a TargetRegistry. The zero value is valid.
type TargetOptions struct {
	// Logger receives the registry's logs; nil discards them.
	Logger *slog.Logger
	// Observer receives measurements; nil means none.
	Observer SyncObserver
	// Timeout is the deadline of each query-remove call, and how long a removal waits for its
	// remove-complete or remove-cancelled calls. 0 means DefaultVetoTimeout.
	Timeout time.Duration
	// ConsentOnTimeout makes a callback that misses the query-remove deadline consent; by default
	// it vetoes.
	ConsentOnTimeout bool
	// QueueLimit bounds the calls queued for one registration whose callback has not returned;
	// 0 (or less) means DefaultTargetQueueLimit. See TargetRegistry for what a full queue drops.
	QueueLimit int
}

// DefaultTargetQueueLimit is the per-registration queue bound of a TargetRegistry when
// TargetOptions.QueueLimit is not positive. A callback that keeps up never has more than a few
// calls queued: a removal on request posts two, a surprise removal one.
const DefaultTargetQueueLimit = 64

// TargetRegistry holds the target-device registrations (IoRegisterPlugPlayNotification with
// EventCategoryTargetDeviceChange, for one interface named by its symbolic link) and delivers
// query-remove, remove-complete and remove-cancelled to them. All methods are safe for
// concurrent use.
//
// Each registration's queue is bounded (TargetOptions.QueueLimit): a callback that does not
// return while its interface keeps being removed (by request or not) would otherwise hold every
// call posted meanwhile. When a call is posted to a full queue, the oldest queued call is dropped
// unrun, so the callback, once it returns, gets the newest events of its interface, which are the
// ones that say its present state. The first drop since the callback last returned is logged at
// Error naming the owner, and every drop is reported to the Observer's QueueOverflow
// (hotplug_agent_callback_queue_overflows_total). A dropped query-remove that a removal is still
// waiting for counts as a missed deadline (a veto unless timeouts consent).
type TargetRegistry struct {
	syncRegistry[TargetNotification, *TargetEntry]
}

// NewTargetRegistry returns an empty registry. It does not block.
func NewTargetRegistry(opts TargetOptions) *TargetRegistry {
	if opts.QueueLimit <= 0 {
		opts.QueueLimit = DefaultTargetQueueLimit
	}
	r := &TargetRegistry{}
	r.init("target device", opts.Logger, opts.Observer, opts.Timeout, opts.ConsentOnTimeout, opts.QueueLimit)
	return r
}

// TargetEntry is the handle of one target-device registration. Its methods do not block and are
// safe for concurrent use.
type TargetEntry struct {
	link  string
	class uuid.UUID
	se    *syncEntry[TargetNotification]
}

// Owner returns the owner given to Register.
func (e *TargetEntry) Owner() string { return e.se.owner }

func (e *TargetEntry) entry() *syncEntry[TargetNotification] { return e.se }

// Target returns the symbolic link given to Register.
func (e *TargetEntry) Target() string { return e.link }

// TargetEntryInfo describes one target-device registration. It is a plain value.
type TargetEntryInfo struct {
	Owner  string `json:"owner"`
	Target string `json:"target"`
}

// Entries describes the registrations, in registration order. It does not block.
func (r *TargetRegistry) Entries() []TargetEntryInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]TargetEntryInfo, len(r.entries.Registered()))
	for i, e := range r.entries.Registered() {
		out[i] = TargetEntryInfo{Owner: e.se.owner, Target: e.link}
	}
	return out
}

// Register is IoRegisterPlugPlayNotification(EventCategoryTargetDeviceChange) for the interface
// whose symbolic link is link (see ParseSymbolicLink). The registration stays until Unregister,
// across removals and later arrivals of the interface. It does not block and is safe for
// concurrent use.
func (r *TargetRegistry) Register(link, owner string, cb TargetCallback, userCtx any) (*TargetEntry, error) {
	if strings.TrimSpace(owner) == "" {
		return nil, errors.New("notify: register target device: empty owner")
	}
	if cb == nil {
		return nil, fmt.Errorf("notify: register target device %s: nil callback", owner)
	}
	class, _, err := ParseSymbolicLink(link)
	if err != nil {
		return nil, fmt.Errorf("notify: register target device %s: %w", owner, err)
	}
	e := &TargetEntry{link: link, class: class}
	e.se = r.start(e, owner, cb, userCtx)
	if err := r.add(e); err != nil {
		e.se.remove() // its goroutine ends at once: it has run nothing
		return nil, err
	}
	r.log.Info("target device notification registered", "owner", owner, "target", link)
	return e, nil
}

// Unregister is IoUnregisterPlugPlayNotificationEx for a target-device registration: when it
// returns, no callback of e runs (called from e's own callback it returns at once). Queued calls
// are dropped. If ctx ends first it returns an error wrapping ctx.Err(); e is unregistered all
// the same. A second call returns an error wrapping ErrUnregistered. It blocks as described.
func (r *TargetRegistry) Unregister(ctx context.Context, e *TargetEntry) error {
	link := ""
	if e != nil {
		link = e.link
	}
	return r.unregister(ctx, e, "target device notification unregistered", "target", link)
}

// Close unregisters every entry and waits, up to ctx, until none of their callbacks runs (that of
// an entry unregistered from inside its own callback included). Later Register calls fail with
// ErrClosed. It blocks until then and is safe for concurrent use.
func (r *TargetRegistry) Close(ctx context.Context) error { return r.closeEntries(ctx) }

// entriesOf returns the registrations for link, in registration order.
func (r *TargetRegistry) entriesOf(link string) []*TargetEntry {
	return r.selected(func(e *TargetEntry) bool { return e.link == link })
}

// Removal is one removal on request in progress, from QueryRemove to Complete or Cancel. Its
// methods must be called by the goroutine that called QueryRemove.
type Removal struct {
	r       *TargetRegistry
	base    TargetNotification
	queried []*TargetEntry
	ended   bool
}

// QueryRemove starts the removal of iface asked for by req: it calls query-remove on each
// registration for iface's symbolic link, in registration order, each with the deadline. If one
// vetoes (an error, a panic, or a missed deadline unless timeouts consent), the calls stop there,
// every registration that got query-remove (the vetoing one too) gets remove-cancelled with the
// *VetoError as Status, and QueryRemove returns an error wrapping the *VetoError. Otherwise the
// caller takes the interface offline and calls Complete or Cancel.
//
// QueryRemove blocks as described and is safe for concurrent use; the caller serialises the
// removals of one interface.
func (r *TargetRegistry) QueryRemove(iface Interface, req Requester) (*Removal, error) {
	rm := &Removal{r: r, base: TargetNotification{
		Version: 1, SymbolicLinkName: iface.SymbolicLink, Interface: iface,
		Requested: true, Requester: req, ReadAt: time.Now(),
	}}
	n := rm.base
	n.Event = GUIDTargetDeviceQueryRemove
	var veto *VetoError
	rm.queried, veto = r.ask(r.entriesOf(iface.SymbolicLink), n, "query_remove", ClassName(iface.ClassGUID), iface.SymbolicLink)
	if veto != nil {
		rm.end(GUIDTargetDeviceRemoveCancelled, veto)
		return nil, fmt.Errorf("notify: remove %s: %w", iface.SymbolicLink, veto)
	}
	return rm, nil
}

// Participants returns the number of registrations that got query-remove and consented.
func (rm *Removal) Participants() int { return len(rm.queried) }

// Complete ends the removal as done: each registration that got query-remove gets
// remove-complete. It waits for those calls up to the deadline (the removal notification, which
// the agent holds back until then, follows them). A second Complete or Cancel does nothing. It
// blocks until then.
func (rm *Removal) Complete() { rm.end(GUIDTargetDeviceRemoveComplete, nil) }

// Cancel ends the removal as not done, with reason (the kernel's error): each registration that
// got query-remove gets remove-cancelled with reason as Status. It waits as Complete does. A
// second Complete or Cancel does nothing. It blocks until then.
func (rm *Removal) Cancel(reason error) { rm.end(GUIDTargetDeviceRemoveCancelled, reason) }

func (rm *Removal) end(event uuid.UUID, status error) {
	if rm.ended {
		return
	}
	rm.ended = true
	n := rm.base
	n.Event, n.Status = event, status
	rm.r.tell(rm.queried, n, EventName(event), rm.base.SymbolicLinkName)
}

// Removed delivers remove-complete for a removal the agent did not ask for (n is its removal
// notification: the kernel, another tool or an eject took the interface away) to every
// registration for n's symbolic link. It does not wait for the callbacks: it never blocks, and is
// safe for concurrent use.
func (r *TargetRegistry) Removed(n Notification) {
	for _, e := range r.entriesOf(n.SymbolicLinkName) {
		e.se.post(TargetNotification{
			Version: 1, Event: GUIDTargetDeviceRemoveComplete, SymbolicLinkName: n.SymbolicLinkName,
			Interface: n.Interface, Seqnum: n.Seqnum, ReadAt: n.ReadAt,
		}, "remove_complete", time.Time{})
	}
}
