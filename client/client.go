// Package client subscribes to a running hotplug-agent from another process, with the
// registration model of Windows' CM_Register_Notification and of the agent's own notify.Registry:
// Register a callback for an interface class (existing interfaces first on request), receive
// arrivals and removals in order on the registration's own goroutine, Unregister or UnregisterEx
// (which waits for the callback in flight).
//
// A Client follows the agent's /events stream over HTTP. It keeps a replica of the agent's active
// interfaces and its position in the agent's notification IDs; when the stream breaks it
// reconnects with backoff and resumes after the last ID it received, and when the agent answers
// with a resync (the history no longer reaches back, or the agent was reset) it diffs its replica
// against the agent's set and delivers the removals and arrivals that reconcile it. Every
// registration therefore sees, per interface, alternating arrivals and removals, never one twice,
// and ends with the agent's view. An event the client cannot apply, because it contradicts the
// replica or is larger than 64 MiB (the agent's largest, a resync with 1,024 CPUs and 8,192 memory
// blocks, is 2.4 MB), is not delivered: the client drops the connection and asks for a resync on
// the next one, so its memory stays bounded whatever the other end sends.
//
// One Client holds one stream, for every class; registrations filter locally. A registration's
// queue is bounded (Options.Buffer): one whose callback falls that far behind is resynchronised
// against the replica, exactly as a registration inside the agent is, and never slows the stream
// or the other registrations.
package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/hotplug-agent/hotplug-agent/internal/dispatch"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// ConnState is the state of a Client's connection to the agent.
type ConnState int

// The connection states. A Client starts Connecting; it is Connected while the agent streams to
// it, in Backoff while it waits before the next attempt, and Closed after Close.
const (
	Connecting ConnState = iota
	Connected
	Backoff
	Closed
)

// String returns "connecting", "connected", "backoff" or "closed". It does not block and is safe
// for concurrent use.
func (s ConnState) String() string {
	switch s {
	case Connecting:
		return "connecting"
	case Connected:
		return "connected"
	case Backoff:
		return "backoff"
	case Closed:
		return "closed"
	}
	return fmt.Sprintf("ConnState(%d)", int(s))
}

// StateChange describes one change of a Client's connection state.
type StateChange struct {
	State ConnState
	// Err says why the previous connection or attempt ended (Backoff), or nil.
	Err error
	// Delay is how long the client waits before its next attempt (Backoff), or 0.
	Delay time.Duration
	// Received reports whether the connection that ended delivered a resync or a notification
	// (Backoff): false when the attempt failed, or the stream broke before either.
	Received bool
}

// BackoffOptions bound the delay between connection attempts: it starts at Min, doubles after
// each failed attempt up to Max, and returns to Min once a connection delivered an event. Each
// delay is drawn at random from its upper half, so that clients of a restarted agent do not all
// come back at once.
type BackoffOptions struct {
	Min, Max time.Duration
}

// The defaults of Options.
const (
	DefaultBackoffMin  = 100 * time.Millisecond
	DefaultBackoffMax  = 5 * time.Second
	DefaultBuffer      = notify.DefaultQueueLimit
	DefaultIdleTimeout = time.Minute
)

// Options configure a Client. The zero value is valid; New copies it.
type Options struct {
	// HTTPClient makes the requests; nil means a client of its own. The stream is one long
	// response, so its Timeout must be 0 (New refuses another).
	HTTPClient *http.Client
	// Header is added to every request, for example Authorization for an agent behind basic
	// auth (credentials in the URL work too; logs, errors and URL show that URL with its
	// password replaced by "xxxxx").
	Header http.Header
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
	// Backoff bounds the delay between attempts; zero fields mean DefaultBackoffMin and
	// DefaultBackoffMax.
	Backoff BackoffOptions
	// Buffer bounds the notifications queued for one registration; 0 means DefaultBuffer. A
	// registration that falls further behind is resynchronised (its queue is replaced by the
	// removals and arrivals that bring it to the current view), as inside the agent.
	Buffer int
	// IdleTimeout ends a connection on which nothing, not even the agent's keep-alive comment
	// (every 15 s), arrived for that long; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// OnStateChange, when set, is called on every change of the connection state, in order, on
	// the client's stream goroutine (Closed: on the goroutine that closed the client). It must
	// not block, and must not call Close or Shutdown (they wait for that goroutine).
	OnStateChange func(StateChange)
	// MemoryDevices follows the agent's stream of memory devices (/events?memory_devices=true):
	// one arrival per DIMM or virtio-mem plug once all its blocks are online, one removal when
	// the first goes, and no processors. A client follows one stream: use a second client for
	// processors and memory blocks.
	MemoryDevices bool

	// lineLimit bounds a line and an event's data; 0: maxLine. Tests lower it.
	lineLimit int
}

// Filter selects the notifications of a registration, as CM_NOTIFY_FILTER does for
// CM_Register_Notification. The zero value selects every class.
type Filter struct {
	// Class is the device interface class: notify.GUIDDeviceProcessor, notify.GUIDDeviceMemory,
	// any other class GUID, or notify.AllClasses (the nil GUID) for every class.
	Class uuid.UUID
}

// ParseFilter parses a class as the CLI and the C API take it: "processor", "memory", a GUID,
// or "" (or "all") for every class. It does not block and is safe for concurrent use.
func ParseFilter(s string) (Filter, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "all":
		return Filter{Class: notify.AllClasses}, nil
	}
	c, err := notify.ParseClass(s)
	if err != nil {
		return Filter{}, fmt.Errorf("client: filter: %w", err)
	}
	return Filter{Class: c}, nil
}

// String returns the class's short name: "processor", "memory", "all" or the GUID.
func (f Filter) String() string { return notify.ClassName(f.Class) }

// Callback receives one notification. It runs on its registration's own goroutine, one call at a
// time and in order; it may block, and then delays only its own registration. ctx is cancelled
// when the registration is unregistered or the client closed. A returned error is logged; a panic
// is recovered and logged; either way the registration continues with its next notification.
type Callback func(ctx context.Context, n notify.Notification) error

var (
	// ErrUnregistered is wrapped by the error of Unregister and UnregisterEx for a registration
	// already removed, nil, or of another client, and by WaitReady's for a removed one.
	ErrUnregistered = errors.New("registration not registered")
	// ErrClosed is wrapped by the error of Register once the client is closed.
	ErrClosed = errors.New("client closed")
)

// Stats count what a Client's stream went through.
type Stats struct {
	// Connects counts the connections the agent accepted.
	Connects uint64
	// Resyncs counts the resync events received after the first (the history did not reach
	// back, the agent was reset, or the client asked for one after an inconsistency).
	Resyncs uint64
	// Cuts counts the streams the agent ended with an error event (the client was too slow).
	Cuts uint64
	// Inconsistencies counts notifications that contradicted the client's replica or came with
	// an ID not above the last one, and events too large to read (a line, or the data of an
	// event, over 64 MiB); each made the client ask for a resync instead of delivering it.
	Inconsistencies uint64
}

// Client follows one agent's event stream and serves registrations from it. Create it with New;
// Close it when done (until then its goroutine keeps following the agent, registrations or
// not). All methods are safe for concurrent use, from callbacks too.
type Client struct {
	log       *slog.Logger
	http      *http.Client
	header    http.Header
	eventsURL string // with its password, if any: for the requests only
	shownURL  string // eventsURL without its password, as logs and errors show it
	backoff   BackoffOptions
	limit     int
	spec      *dispatch.Spec[notify.Notification, notify.Interface]
	idle      time.Duration
	lineLimit int // bounds a line and an event's data (maxLine)
	onState   func(StateChange)

	cancel  context.CancelFunc
	runDone chan struct{}

	mu      sync.Mutex
	state   ConnState
	stateCh chan struct{}               // closed at the next state change
	synced  bool                        // the replica holds the agent's set (a first resync came)
	resume  bool                        // pos may be sent as Last-Event-ID
	pos     uint64                      // the agent's ID the replica is current as of
	view    map[string]notify.Interface // the replica of the agent's active set
	regs    dispatch.Set[*Registration] // closed once Close was called
	stats   Stats
}

// New returns a client of the agent at baseURL (such as http://localhost:19100; a URL whose path
// already ends in /events is taken as it is) and starts following its stream at once: State
// moves from Connecting to Connected. It does not block on the network and is safe for
// concurrent use. Bad options are a one-line error, which shows the URL without its password.
func New(baseURL string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL it quotes, password included
		}
		return nil, fmt.Errorf("client: agent URL: %v: want http://host:port or https://host:port", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("client: agent URL %q: want http://host:port or https://host:port", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: agent URL %q: want no query or fragment (the client chooses its parameters)", u.Redacted())
	}
	if p := strings.TrimSuffix(u.Path, "/"); strings.HasSuffix(p, "/events") {
		u.Path, u.RawPath = p, ""
	} else {
		u = u.JoinPath("events")
	}
	switch {
	case opts.Backoff.Min < 0 || opts.Backoff.Max < 0:
		return nil, fmt.Errorf("client: backoff %s..%s: negative", opts.Backoff.Min, opts.Backoff.Max)
	case opts.Buffer < 0:
		return nil, fmt.Errorf("client: buffer %d: negative", opts.Buffer)
	case opts.IdleTimeout < 0:
		return nil, fmt.Errorf("client: idle timeout %s: negative", opts.IdleTimeout)
	case opts.HTTPClient != nil && opts.HTTPClient.Timeout != 0:
		return nil, fmt.Errorf("client: the HTTP client's Timeout (%s) would end the stream: use 0 (the client has an idle timeout)", opts.HTTPClient.Timeout)
	}
	b := opts.Backoff
	if b.Min == 0 {
		b.Min = DefaultBackoffMin
	}
	if b.Max == 0 {
		b.Max = max(DefaultBackoffMax, b.Min)
	}
	if b.Max < b.Min {
		return nil, fmt.Errorf("client: backoff %s..%s: the maximum is below the minimum", b.Min, b.Max)
	}
	if opts.MemoryDevices {
		u.RawQuery = "memory_devices=true"
	}
	c := &Client{
		log:       opts.Logger,
		http:      opts.HTTPClient,
		header:    opts.Header.Clone(),
		eventsURL: u.String(),
		shownURL:  u.Redacted(),
		backoff:   b,
		limit:     opts.Buffer,
		idle:      opts.IdleTimeout,
		lineLimit: cmp.Or(opts.lineLimit, maxLine),
		onState:   opts.OnStateChange,
		runDone:   make(chan struct{}),
		stateCh:   make(chan struct{}),
		view:      map[string]notify.Interface{},
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("agent", c.shownURL)
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.limit == 0 {
		c.limit = DefaultBuffer
	}
	c.spec = &dispatch.Spec[notify.Notification, notify.Interface]{
		Limit: c.limit,
		Read: func(n notify.Notification) (string, bool, notify.Interface) {
			return n.SymbolicLinkName, n.IsArrival(), n.Interface
		},
		Note: func(arrival bool, i notify.Interface, now time.Time) notify.Notification {
			event := notify.GUIDDeviceInterfaceRemoval
			if arrival {
				event = notify.GUIDDeviceInterfaceArrival
			}
			return notify.NewNotification(event, i, 0, now, notify.CauseResync)
		},
		Compare: compareInterfaces,
	}
	if c.idle == 0 {
		c.idle = DefaultIdleTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.run(ctx)
	return c, nil
}

// URL returns the URL of the agent's event stream the client follows, as logs and errors show
// it: with its password, if it has one, replaced by "xxxxx" (url.URL.Redacted). It does not
// block and is safe for concurrent use.
func (c *Client) URL() string { return c.shownURL }

// State returns the connection state now. It does not block and is safe for concurrent use.
func (c *Client) State() ConnState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Watch returns the connection state now and a channel that is closed at the next change, so
// that a loop of Watch calls sees every state the client settles in. It does not block and is
// safe for concurrent use.
func (c *Client) Watch() (ConnState, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.stateCh
}

// WaitState blocks until the connection state is one of want, or ctx ends (an error wrapping
// ctx.Err()), or the client is closed while Closed is not wanted (an error wrapping ErrClosed).
// It is safe for concurrent use.
func (c *Client) WaitState(ctx context.Context, want ...ConnState) error {
	for {
		s, ch := c.Watch()
		if slices.Contains(want, s) {
			return nil
		}
		if s == Closed {
			return fmt.Errorf("client: wait for %v: %w", want, ErrClosed)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("client: wait for %v (state %s): %w", want, s, ctx.Err())
		}
	}
}

// Stats returns the counts of the client's stream so far. It does not block and is safe for
// concurrent use.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// LastEventID returns the ID of the agent's last notification the client has received (or the
// position a resync gave): its replica is current as of it, and it resumes after it. It is 0
// before the client first reached the agent. It does not block and is safe for concurrent use.
func (c *Client) LastEventID() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pos
}

// Active returns the client's replica of the agent's active interfaces, sorted as the agent
// sorts them (processors first, then by number); it is as of the last event received. It does
// not block and is safe for concurrent use.
func (c *Client) Active() []notify.Interface {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.activeOf(notify.AllClasses)
}

// setState records a state change and tells the watchers and OnStateChange.
func (c *Client) setState(s ConnState, err error, delay time.Duration) {
	c.changeState(StateChange{State: s, Err: err, Delay: delay})
}

// setBackoff enters Backoff after a connection or attempt that ended with err; received: it
// delivered a resync or a notification.
func (c *Client) setBackoff(err error, delay time.Duration, received bool) {
	c.changeState(StateChange{State: Backoff, Err: err, Delay: delay, Received: received})
}

func (c *Client) changeState(sc StateChange) {
	s := sc.State
	c.mu.Lock()
	if c.state == s {
		c.mu.Unlock()
		return
	}
	c.state = s
	close(c.stateCh)
	c.stateCh = make(chan struct{})
	c.mu.Unlock()
	if c.onState != nil {
		c.onState(sc)
	}
}

// Close is Shutdown with no deadline: it stops the stream, unregisters every registration and
// waits until no callback runs (except the one it is called from). It blocks until then, may be
// called more than once, and is safe for concurrent use.
func (c *Client) Close() error { return c.Shutdown(context.Background()) }

// Shutdown stops the stream, unregisters every registration (their callback contexts are
// cancelled) and waits, up to ctx, until no callback runs: those of registrations unregistered
// earlier with Unregister included, the one it is called from excluded. Later Register calls
// fail with ErrClosed. If ctx ends first it returns an error wrapping ctx.Err(). It blocks until
// then, may be called more than once, and is safe for concurrent use.
func (c *Client) Shutdown(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	c.mu.Lock()
	first := !c.regs.Closed()
	regs, live := c.regs.Close()
	for _, r := range regs {
		r.remove()
	}
	c.mu.Unlock()
	for _, r := range regs {
		r.w.Cancel()
	}
	c.cancel()
	<-c.runDone // the stream goroutine calls no callback: this is short
	if first {
		c.setState(Closed, nil, 0)
		c.log.Debug("client closed", "unregistered", len(regs))
	}
	running := dispatch.WaitAll(ctx, live, func(r *Registration) *dispatch.Worker { return r.w },
		func(r *Registration) string { return r.filter.String() })
	if len(running) > 0 {
		return fmt.Errorf("client: close: callbacks of %s still running: %w", strings.Join(running, ", "), ctx.Err())
	}
	return nil
}

// activeOf returns the replica's interfaces of class (AllClasses: all), sorted. c.mu is held.
func (c *Client) activeOf(class uuid.UUID) []notify.Interface {
	out := make([]notify.Interface, 0, len(c.view))
	for _, i := range c.view {
		if matches(class, i.ClassGUID) {
			out = append(out, i)
		}
	}
	slices.SortFunc(out, compareInterfaces)
	return out
}

// matches reports whether a registration for class receives notifications of ifaceClass.
func matches(class, ifaceClass uuid.UUID) bool {
	return class == notify.AllClasses || class == ifaceClass
}

// compareInterfaces orders interfaces as notify.Interface.Less does, then by symbolic link.
func compareInterfaces(a, b notify.Interface) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return strings.Compare(a.SymbolicLink, b.SymbolicLink)
}
