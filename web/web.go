// Package web serves the agent's HTTP API: /metrics, /interfaces, /events, /memory and /healthz.
package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hotplug-agent/hotplug-agent/headroom"
	"github.com/hotplug-agent/hotplug-agent/metrics"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// DefaultMaxStreamSubscribers is Options.MaxStreamSubscribers when unset: more than the
// dashboards and monitors of one host need, few enough that with their connections they hold
// tens of MiB, not hundreds.
const DefaultMaxStreamSubscribers = 1024

// The reasons a request or a connection is refused, for Options.OnRefused.
const (
	RefusedSubscribers = "subscribers" // the /events subscribers are at MaxStreamSubscribers
	RefusedConnections = "connections" // the connections are at a ConnLimit's limit
)

// refusedRetryAfter is the Retry-After of a refusal, in seconds.
const refusedRetryAfter = "5"

// StreamOwner is the owner name of every /events registration: one label value in the metrics
// however many subscribers there are.
const StreamOwner = "events"

// Options configures the handler.
type Options struct {
	Registry *notify.Registry
	Gatherer prometheus.Gatherer
	// Latencies gathers the dispatch latency histograms the status page reads: a registry of
	// those alone spares each page the rest of /metrics (runtime, process, headroom). nil:
	// Gatherer.
	Latencies prometheus.Gatherer
	// Healthy reports whether the agent's event loop is healthy; nil means always.
	Healthy func() error
	Logger  *slog.Logger
	// KeepAlive is the interval of SSE comment lines that keep idle connections open; 0 means 15 s.
	KeepAlive time.Duration
	// StreamBuffer is how many notifications a subscriber may fall behind before it is cut off;
	// 0 means 1024. A subscriber's queue grows to it on demand: an idle one holds none.
	StreamBuffer int
	// History is how many notifications the event stream keeps for clients that reconnect with
	// their last event ID; 0 means 4096.
	History int
	// WriteTimeout bounds each batch of writes to a stream subscriber: one whose socket stays
	// full that long (it stopped reading) is cut off; 0 means 30 s.
	WriteTimeout time.Duration
	// OnCut is called when a stream subscriber is cut off for being too slow (at once, on the
	// hub's goroutine: it must not block) or for not reading (a write that timed out); nil:
	// nothing.
	OnCut func()
	// MaxStreamSubscribers bounds the /events subscribers at once, of both streams together:
	// one more is answered 503 Service Unavailable with Retry-After; 0 means
	// DefaultMaxStreamSubscribers.
	MaxStreamSubscribers int
	// OnRefused is called with RefusedSubscribers for each /events request refused that way;
	// nil: nothing. (A ConnLimit calls the function it is given with RefusedConnections.)
	OnRefused func(reason string)
	// Version is shown on the status page.
	Version string
	// Present lists every CPU and memory block present, online or not, for the status page;
	// nil shows the active ones only.
	Present func() ([]notify.Interface, error)
	// DeviceRegistry is the agent's memory-device registry (notify.FlagMemoryDevices), served
	// by /interfaces?memory_devices=true and /events?memory_devices=true; nil: none.
	DeviceRegistry *notify.Registry
	// DeviceOf names the memory device a memory block belongs to ("" for none), shown in
	// /interfaces; nil: none.
	DeviceOf func(block int) string
	// Changes and Targets are the two-phase and target-device registrations, listed on the
	// status page; nil: none.
	Changes *notify.ChangeRegistry
	Targets *notify.TargetRegistry
	// Memory estimates the memory hot-add headroom, served as JSON by /memory; nil: /memory
	// answers 404.
	Memory func() (headroom.Estimate, error)
	// Errors gives the callbacks' recent errors, shown on the status page; nil: none shown.
	Errors CallbackErrors
}

// CallbackErrors reports the callbacks' errors for the status page (metrics.ErrorLog). Its
// methods must be safe for concurrent use and must not block for long.
type CallbackErrors interface {
	// Since counts the errors since t; more says there were more than it keeps.
	Since(t time.Time) (n int, more bool)
	// Last returns owner's last error, false when it returned none.
	Last(owner string) (metrics.LastError, bool)
}

// Handler returns the agent's HTTP handler, after registering the event stream's registration
// (owner "events") with o.Registry. The handler is safe for concurrent use.
func Handler(o Options) (http.Handler, error) {
	_, h, err := newHandler(o)
	return h, err
}

// newHandler is Handler, also returning its server.
func newHandler(o Options) (*server, http.Handler, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 15 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.StreamBuffer <= 0 {
		o.StreamBuffer = 1024
	}
	if o.History <= 0 {
		o.History = 4096
	}
	if o.MaxStreamSubscribers <= 0 {
		o.MaxStreamSubscribers = DefaultMaxStreamSubscribers
	}
	if o.OnRefused == nil {
		o.OnRefused = func(string) {}
	}
	if o.OnCut == nil {
		o.OnCut = func() {}
	}
	h, err := newHub(o.Registry, o.History, o.OnCut)
	if err != nil {
		return nil, nil, err
	}
	s := &server{o: o, hub: h}
	if o.DeviceRegistry != nil {
		if s.devHub, err = newHub(o.DeviceRegistry, o.History, o.OnCut); err != nil {
			return nil, nil, err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /interfaces", s.interfaces)
	mux.HandleFunc("GET /events", s.events)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /memory", s.memory)
	mux.HandleFunc("GET /{$}", s.index)
	mux.HandleFunc("GET /status.js", s.script)
	return s, mux, nil
}

type server struct {
	o           Options
	hub         *hub
	devHub      *hub         // the memory devices' stream; nil without Options.DeviceRegistry
	subscribers atomic.Int64 // /events requests being served, of both hubs
}

// memoryDevices reads the memory_devices query parameter: false when absent.
func memoryDevices(q url.Values) (bool, error) {
	v := q.Get("memory_devices")
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("memory_devices=%q: want true or false", v)
	}
	return b, nil
}

// interfaces lists the active interfaces as JSON, each memory block with the memory device it
// belongs to (memory_device) where known. Query parameters: class (processor, memory or a
// GUID); memory_devices=true lists the memory devices announced as present instead (the
// interfaces a registration with memory_devices receives).
func (s *server) interfaces(w http.ResponseWriter, r *http.Request) {
	active := s.o.Registry.Active()
	devices, err := memoryDevices(r.URL.Query())
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case devices:
		active = nil
		if s.o.DeviceRegistry != nil {
			active = s.o.DeviceRegistry.Active()
		}
	case s.o.DeviceOf != nil:
		for k, i := range active {
			if i.ClassGUID == notify.GUIDDeviceMemory {
				active[k].Device = s.o.DeviceOf(i.Number)
			}
		}
	}
	if q := r.URL.Query().Get("class"); q != "" {
		class, err := notify.ParseClass(q)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		kept := active[:0]
		for _, i := range active {
			if i.ClassGUID == class {
				kept = append(kept, i)
			}
		}
		active = kept
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if active == nil {
		active = []notify.Interface{}
	}
	_ = enc.Encode(active)
}

// memory answers the memory hot-add headroom and its inputs as JSON (headroom.Estimate): 503
// with the reason when it cannot be estimated (a kernel without memory hotplug, procfs
// unreadable), 404 when the agent does not estimate it.
func (s *server) memory(w http.ResponseWriter, _ *http.Request) {
	if s.o.Memory == nil {
		http.Error(w, "this agent does not estimate the memory hot-add headroom", http.StatusNotFound)
		return
	}
	est, err := s.o.Memory()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(est)
}

func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	if s.o.Healthy != nil {
		if err := s.o.Healthy(); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

// events streams notifications as Server-Sent Events. Each notification is one event: an `id:`
// line with its ID and a `data:` line of JSON. Query parameters: class (processor, memory or a
// GUID; default every class), include_existing (true: first an arrival for every active
// interface) and memory_devices (true: the stream of the memory devices, one arrival per DIMM or
// virtio-mem plug instead of one per block, with IDs of its own). A client that reconnects with
// the Last-Event-ID header (EventSource does it by itself; ?last_event_id= works too) receives
// exactly what followed that ID, or an `event: resync` whose data is the active set when the
// history no longer reaches back. The subscription exists once the response headers are sent, so
// nothing that happens after is missed. Beyond MaxStreamSubscribers at once, a request is
// answered 503 with Retry-After, and counted.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	class := notify.AllClasses
	if c := q.Get("class"); c != "" {
		var err error
		if class, err = notify.ParseClass(c); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	existing := false
	if v := q.Get("include_existing"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			http.Error(w, "include_existing: want true or false", http.StatusBadRequest)
			return
		}
		existing = b
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = q.Get("last_event_id")
	}
	var lastID uint64
	if last != "" {
		var err error
		if lastID, err = strconv.ParseUint(last, 10, 64); err != nil {
			http.Error(w, "Last-Event-ID: want the decimal id of an event of this stream", http.StatusBadRequest)
			return
		}
	}
	hub := s.hub
	switch devices, err := memoryDevices(q); {
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case devices && s.devHub == nil:
		http.Error(w, "memory_devices: this agent has no memory-device stream", http.StatusNotFound)
		return
	case devices && class != notify.AllClasses && class != notify.GUIDDeviceMemory:
		http.Error(w, "memory_devices: the stream of memory devices has class memory only", http.StatusBadRequest)
		return
	case devices:
		hub = s.devHub
	}
	if n := s.subscribers.Add(1); n > int64(s.o.MaxStreamSubscribers) {
		s.subscribers.Add(-1)
		s.o.OnRefused(RefusedSubscribers)
		w.Header().Set("Retry-After", refusedRetryAfter)
		http.Error(w, fmt.Sprintf("too many event stream subscribers: this agent serves at most %d at once (hotplug-agent run --web.max-stream-subscribers)",
			s.o.MaxStreamSubscribers), http.StatusServiceUnavailable)
		return
	}
	defer s.subscribers.Add(-1)
	rc := http.NewResponseController(w)
	sub, pre := hub.subscribe(class, s.o.StreamBuffer, existing, last != "", lastID)
	defer hub.unsubscribe(sub)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// Every batch of writes must reach the subscriber's socket within WriteTimeout: one that
	// stops reading (its socket full) is let go, rather than holding a goroutine and a connection
	// for ever.
	begin := func() { _ = rc.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout)) }
	failed := func(err error) {
		// A timed-out write leaves the connection's writer failed: the error may surface in a
		// later batch, so the error says what happened, not the clock.
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.o.Logger.Warn("event stream subscriber cut off", "remote", r.RemoteAddr,
				"reason", fmt.Sprintf("not reading: a write did not complete in %s", s.o.WriteTimeout))
			s.o.OnCut()
		}
	}
	begin()
	fmt.Fprintf(w, ": hotplug-agent event stream, class %s\nretry: 1000\n\n", notify.ClassName(class))
	for _, f := range pre {
		if err := writeFrame(w, f); err != nil {
			failed(err)
			return
		}
	}
	if err := rc.Flush(); err != nil {
		failed(err)
		return
	}
	warmFrames()
	tick := time.NewTicker(s.o.KeepAlive)
	defer tick.Stop()
	var batch []frame
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.cut:
			// Deliver what was queued before the cut, then say why the stream ends.
			begin()
			for _, f := range sub.take(batch) {
				if err := writeFrame(w, f); err != nil {
					failed(err)
					return
				}
			}
			// Counted by the hub when it cut a subscriber too slow (OnCut); a cut because the
			// stream itself fell behind is not the subscriber's, and not counted.
			s.o.Logger.Warn("event stream subscriber cut off", "remote", r.RemoteAddr, "reason", sub.reason)
			b, _ := json.Marshal(map[string]string{"error": sub.reason})
			fmt.Fprintf(w, "event: error\ndata: %s\n\n", b)
			_ = rc.Flush()
			return
		case <-sub.wake:
			// Everything waiting, written before one flush.
			batch = sub.take(batch)
			if len(batch) == 0 {
				continue
			}
			begin()
			for _, f := range batch {
				if err := writeFrame(w, f); err != nil {
					failed(err)
					return
				}
				sub.wrote()
			}
			if err := rc.Flush(); err != nil {
				failed(err)
				return
			}
		case <-tick.C:
			begin()
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				failed(err)
				return
			}
			if err := rc.Flush(); err != nil {
				failed(err)
				return
			}
		}
	}
}

// warmFrames encodes two sample notifications, once: the first notification of the process
// would otherwise pay for building encoding/json's encoders of its wire types, some 0.15 ms on
// this project's test machines and 18 ms in a TCG guest (BENCHMARKS.md, section 5). events calls
// it when a stream begins, before the stream's first live notification. It blocks only for
// that encoding and is safe for concurrent use.
var warmFrames = sync.OnceFunc(func() {
	for _, i := range []notify.Interface{
		{ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: "/sys/devices/system/cpu/cpu0", Node: 0, State: "online"},
		{ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: "/sys/devices/system/memory/memory0", Node: 0, PhysStart: 0, Size: 128 << 20, State: "online", Zones: "Normal"},
	} {
		_, _ = json.Marshal(notify.NewNotification(notify.GUIDDeviceInterfaceArrival, i, 1, time.Now(), notify.CauseUevent))
	}
})

// writeFrame writes one SSE event.
func writeFrame(w http.ResponseWriter, f frame) error {
	if f.resync {
		b, err := json.Marshal(struct {
			LastID     uint64             `json:"last_id"`
			Interfaces []notify.Interface `json:"interfaces"`
		}{f.id, f.interfaces})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "event: resync\nid: %d\ndata: %s\n\n", f.id, b)
		return err
	}
	b, err := json.Marshal(f.n)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "id: %d\ndata: %s\n\n", f.id, b)
	return err
}

func className(g uuid.UUID) string { return notify.ClassName(g) }
