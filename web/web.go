// Package web serves the agent's HTTP API: /metrics, /interfaces, /events and /healthz.
package web

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// StreamOwner is the owner name of every /events registration: one label value in the metrics
// however many subscribers there are.
const StreamOwner = "events"

// Options configures the handler.
type Options struct {
	Registry *notify.Registry
	Gatherer prometheus.Gatherer
	// Healthy reports whether the agent's event loop is healthy; nil means always.
	Healthy func() error
	Logger  *slog.Logger
	// KeepAlive is the interval of SSE comment lines that keep idle connections open; 0 means 15 s.
	KeepAlive time.Duration
	// StreamBuffer is how many notifications a subscriber may fall behind before it is cut off;
	// 0 means 1024.
	StreamBuffer int
	// Version is shown on the status page.
	Version string
	// Present lists every CPU and memory block present, online or not, for the status page;
	// nil shows the active ones only.
	Present func() ([]notify.Interface, error)
}

// Handler returns the agent's HTTP handler. It is safe for concurrent use.
func Handler(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 15 * time.Second
	}
	if o.StreamBuffer <= 0 {
		o.StreamBuffer = 1024
	}
	s := &server{o: o}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /interfaces", s.interfaces)
	mux.HandleFunc("GET /events", s.events)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /{$}", s.index)
	return mux
}

type server struct{ o Options }

func (s *server) interfaces(w http.ResponseWriter, r *http.Request) {
	active := s.o.Registry.Active()
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

func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	if s.o.Healthy != nil {
		if err := s.o.Healthy(); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

// events streams notifications as Server-Sent Events, one `data:` line of JSON each. Query
// parameters: class (processor, memory or a GUID; default every class) and include_existing
// (true: first an arrival for every active interface, with no gap or duplicate before the live
// ones). The subscriber is registered before the response headers are sent, so a client that has
// read them misses nothing that happens after.
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
	var flags notify.Flags
	if v := q.Get("include_existing"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			http.Error(w, "include_existing: want true or false", http.StatusBadRequest)
			return
		}
		if b {
			flags |= notify.FlagIncludeExistingInterfaces
		}
	}
	rc := http.NewResponseController(w)

	sub := &subscriber{ch: make(chan notify.Notification, s.o.StreamBuffer), cut: make(chan struct{})}
	entry, err := s.o.Registry.Register(notify.EventCategoryDeviceInterfaceChange, flags, class, StreamOwner, sub.deliver, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		defer cancel()
		if err := s.o.Registry.UnregisterEx(ctx, entry); err != nil {
			s.o.Logger.Warn("event stream unregister", "remote", r.RemoteAddr, "err", err)
		}
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, ": hotplug-agent event stream, class %s\n\n", notify.ClassName(class))
	if err := rc.Flush(); err != nil {
		return
	}
	tick := time.NewTicker(s.o.KeepAlive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.cut:
			// Deliver what was queued before the cut, then say why the stream ends.
			for len(sub.ch) > 0 {
				if writeEvent(w, <-sub.ch) != nil {
					return
				}
			}
			s.o.Logger.Warn("event stream subscriber too slow; cut off", "remote", r.RemoteAddr, "buffer", s.o.StreamBuffer)
			fmt.Fprintf(w, "event: error\ndata: {\"error\":\"subscriber too slow: %d notifications behind; reconnect\"}\n\n", s.o.StreamBuffer)
			_ = rc.Flush()
			return
		case n := <-sub.ch:
			if writeEvent(w, n) != nil {
				return
			}
			// Write whatever else is ready before one flush.
			for drained := false; !drained; {
				select {
				case n := <-sub.ch:
					if writeEvent(w, n) != nil {
						return
					}
				default:
					drained = true
				}
			}
			if rc.Flush() != nil {
				return
			}
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}

func writeEvent(w http.ResponseWriter, n notify.Notification) error {
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "data: %s\n\n", b)
	return err
}

// subscriber is one /events client. deliver runs on the registry's goroutine for the entry and
// never blocks: a client that falls StreamBuffer behind is cut off rather than stall anything.
type subscriber struct {
	ch      chan notify.Notification
	cut     chan struct{}
	cutOnce sync.Once
}

func (s *subscriber) deliver(_ context.Context, n notify.Notification, _ any) error {
	select {
	case <-s.cut:
		return nil
	default:
	}
	select {
	case s.ch <- n:
		return nil
	default:
		s.cutOnce.Do(func() { close(s.cut) })
		return fmt.Errorf("event stream subscriber cut off: %d notifications behind", cap(s.ch))
	}
}

// statusPage is the page at /: what the agent sees, and the notifications as they come. Plain
// HTML and a little script, no build step; the script follows /events with EventSource.
var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hotplug-agent</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left;font-size:.9em}
th{background:#eee}.online{color:#070}.offline{color:#a00}
.arrival{background:#e8f6e8}.removal{background:#fbe9e9}
code{font-size:.9em}
</style></head>
<body>
<h1>hotplug-agent <small>{{.Version}}</small></h1>
<p>CPU and memory hotplug as Windows Plug and Play device interface notifications.
API: <a href="interfaces">/interfaces</a>, <a href="events">/events</a>, <a href="metrics">/metrics</a>, <a href="healthz">/healthz</a>.</p>
{{if .Error}}<p><strong>sysfs: {{.Error}}</strong></p>{{end}}
<h2>Notifications <small id="stream">(connecting)</small></h2>
<table id="notifications"><thead><tr><th>time</th><th>event</th><th>class</th><th>symbolic link</th><th>seqnum</th><th>cause</th></tr></thead><tbody></tbody></table>
<h2>Processors</h2>
<table id="processors"><thead><tr><th>cpu</th><th>state</th><th>node</th><th>symbolic link</th></tr></thead><tbody>
{{range .CPUs}}<tr data-link="{{.SymbolicLink}}"><td>{{.Number}}</td><td class="state {{.State}}">{{.State}}</td><td>{{if ge .Node 0}}{{.Node}}{{end}}</td><td><code>{{.SymbolicLink}}</code></td></tr>
{{end}}</tbody></table>
<h2>Memory blocks</h2>
<table id="memory"><thead><tr><th>block</th><th>state</th><th>zones</th><th>node</th><th>range</th><th>symbolic link</th></tr></thead><tbody>
{{range .Blocks}}<tr data-link="{{.SymbolicLink}}"><td>{{.Number}}</td><td class="state {{.State}}">{{.State}}</td><td>{{.Zones}}</td><td>{{if ge .Node 0}}{{.Node}}{{end}}</td><td><code>{{printf "0x%x" .PhysStart}}+{{printf "%d" .SizeMiB}}M</code></td><td><code>{{.SymbolicLink}}</code></td></tr>
{{end}}</tbody></table>
<h2>Registrations</h2>
<table id="registrations"><thead><tr><th>owner</th><th>class</th><th>queued</th><th>delivered</th><th>dropped</th></tr></thead><tbody>
{{range .Entries}}<tr><td>{{.Owner}}</td><td>{{.ClassName}}</td><td>{{.Queued}}</td><td>{{.Delivered}}</td><td>{{.Dropped}}</td></tr>
{{end}}</tbody></table>
<script>
(function () {
  const status = document.getElementById("stream");
  const rows = document.querySelector("#notifications tbody");
  const es = new EventSource("events");
  es.onopen = () => { status.textContent = "(live)"; };
  es.onerror = () => { status.textContent = "(reconnecting)"; };
  es.onmessage = (m) => {
    const n = JSON.parse(m.data);
    const tr = document.createElement("tr");
    tr.className = n.event;
    for (const v of [new Date().toLocaleTimeString(), n.event, n.interface_class, n.symbolic_link, n.seqnum, n.cause]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.appendChild(td);
    }
    rows.insertBefore(tr, rows.firstChild);
    while (rows.children.length > 200) rows.removeChild(rows.lastChild);
    const cell = document.querySelector('tr[data-link="' + CSS.escape(n.symbolic_link) + '"] td.state');
    if (cell) {
      const state = n.event === "arrival" ? "online" : "offline";
      cell.textContent = state;
      cell.className = "state " + state;
    }
  };
})();
</script>
</body></html>
`))

func (s *server) index(w http.ResponseWriter, _ *http.Request) {
	type row struct {
		Owner, ClassName   string
		Queued             int
		Delivered, Dropped uint64
	}
	type iface struct {
		notify.Interface
		SizeMiB uint64
	}
	page := struct {
		Version string
		Error   string
		CPUs    []iface
		Blocks  []iface
		Entries []row
	}{Version: s.o.Version}
	present := s.o.Registry.Active()
	if s.o.Present != nil {
		var err error
		if present, err = s.o.Present(); err != nil {
			page.Error = err.Error()
		}
	}
	for _, i := range present {
		if i.ClassGUID == notify.GUIDDeviceMemory {
			page.Blocks = append(page.Blocks, iface{i, i.Size >> 20})
		} else {
			page.CPUs = append(page.CPUs, iface{i, 0})
		}
	}
	for _, e := range s.o.Registry.Entries() {
		page.Entries = append(page.Entries, row{e.Owner, className(e.Class), e.Queued, e.Delivered, e.Dropped})
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := statusPage.Execute(w, page); err != nil {
		s.o.Logger.Warn("status page", "err", err)
	}
}

func className(g uuid.UUID) string { return notify.ClassName(g) }
