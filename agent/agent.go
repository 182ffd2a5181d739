// Package agent wires the daemon together: the uevent listener, the sysfs tracker, the
// notification registry, the configured callbacks and the HTTP server.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/hotplug-agent/hotplug-agent/callback"
	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/metrics"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/online"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
	"github.com/hotplug-agent/hotplug-agent/udev"
	"github.com/hotplug-agent/hotplug-agent/web"
)

// Options are the agent's settings, from flags and the configuration file.
type Options struct {
	SysfsPath          string
	ListenAddress      string
	ReceiveBufferBytes int
	Config             *config.Config // nil: defaults
	Version            string
	Logger             *slog.Logger
	// ShutdownGrace bounds how long shutdown waits for callbacks in flight; 0 means 10 s.
	ShutdownGrace time.Duration
}

// stuckAfter is how long the event loop may spend on one event before /healthz fails.
const stuckAfter = 10 * time.Second

// Agent is a configured, not yet running, agent. Create it with New, run it with Run.
type Agent struct {
	o        Options
	log      *slog.Logger
	conn     *udev.Conn
	tracker  *state.Tracker
	registry *notify.Registry
	onliner  *online.Onliner // nil when the policy onlines nothing
	metrics  *metrics.Metrics
	listener net.Listener
	server   *http.Server
	busy     atomic.Int64 // unix nanoseconds since the loop began the current event; 0 when waiting
}

// New checks the options, opens the uevent socket, takes the first snapshot of sysfs, registers
// the configured callbacks and binds the HTTP listener: every error a user can cause (a sysfs root
// that is not one, a port in use) is returned here, before anything runs. It does not block.
func New(o Options) (*Agent, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Config == nil {
		o.Config = &config.Config{}
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 10 * time.Second
	}
	fs, err := sysfs.NewFS(o.SysfsPath)
	if err != nil {
		return nil, err
	}
	a := &Agent{o: o, log: o.Logger, tracker: state.New(fs)}
	// The port first: a port in use is the commonest mistake, and it is reported before any log.
	a.listener, err = net.Listen("tcp", o.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("web: listen on %s: %w", o.ListenAddress, err)
	}
	ok := false
	defer func() {
		if !ok {
			a.listener.Close()
			if a.conn != nil {
				a.conn.Close()
			}
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.metrics = metrics.New(reg, o.Version)
	a.registry = notify.NewRegistry(notify.Options{Logger: o.Logger, Observer: a.metrics})

	// The socket first, then the snapshot: a change between the two is then both in the snapshot
	// and in the socket's queue, and the tracker drops the duplicate.
	a.conn, err = udev.Listen(udev.Options{
		ReceiveBufferBytes: o.ReceiveBufferBytes,
		Logger:             o.Logger,
		OnReject:           a.metrics.Rejected,
	})
	if err != nil {
		return nil, err
	}
	active, err := a.tracker.Scan()
	if err != nil {
		return nil, err
	}
	a.registry.Seed(active)
	a.metrics.SetInterfaces(active)

	if err := a.registerCallbacks(); err != nil {
		return nil, err
	}
	if p := o.Config.Online.Policy(); p.Enabled() {
		a.onliner = online.New(p, fs, o.Logger, a.metrics.OnlineAttempt)
	}

	a.server = &http.Server{
		Handler: web.Handler(web.Options{
			Registry: a.registry,
			Gatherer: reg,
			Healthy:  a.healthy,
			Logger:   o.Logger,
			Version:  o.Version,
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
	}
	ok = true
	return a, nil
}

func (a *Agent) registerCallbacks() error {
	if a.o.Config.LogEnabled() {
		if _, err := a.registry.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.AllClasses,
			"log", callback.Log(a.log), nil); err != nil {
			return err
		}
		a.metrics.InitCallback("log")
	}
	for _, c := range a.o.Config.Callbacks {
		var flags notify.Flags
		if c.IncludeExisting {
			flags |= notify.FlagIncludeExistingInterfaces
		}
		var cb notify.Callback
		switch {
		case c.Exec != nil:
			cb = callback.Exec{Command: c.Exec.Command, Timeout: c.Exec.Timeout, Logger: a.log.With("callback", c.Name)}.Callback()
		default:
			cb = callback.Log(a.log.With("callback", c.Name))
		}
		if _, err := a.registry.Register(notify.EventCategoryDeviceInterfaceChange, flags, c.ClassGUID, c.Name, cb, nil); err != nil {
			return fmt.Errorf("callback %s: %w", c.Name, err)
		}
		a.metrics.InitCallback(c.Name)
	}
	return nil
}

// Addr is the address the HTTP server listens on.
func (a *Agent) Addr() net.Addr { return a.listener.Addr() }

// Registry is the agent's notification registry, for code built into the agent.
func (a *Agent) Registry() *notify.Registry { return a.registry }

// Run serves HTTP and follows the kernel's uevents until ctx is cancelled, then shuts down:
// streams end, callbacks in flight get ShutdownGrace to finish. It blocks; call it once.
func (a *Agent) Run(ctx context.Context) error {
	streams, stopStreams := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStreams()
	a.server.BaseContext = func(net.Listener) context.Context { return streams }
	serveErr := make(chan error, 1)
	go func() { serveErr <- a.server.Serve(a.listener) }()
	a.log.Info("agent ready", "listen", a.listener.Addr().String(), "sysfs", a.o.SysfsPath,
		"receive_buffer_bytes", a.conn.ReceiveBufferBytes(), "interfaces", len(a.registry.Active()))

	loopErr := make(chan error, 1)
	go func() { loopErr <- a.loop(ctx) }()
	if a.onliner != nil {
		go a.onliner.Run(ctx)
	}

	var err error
	select {
	case <-ctx.Done():
		err = <-loopErr
	case err = <-loopErr:
	case err = <-serveErr:
		err = fmt.Errorf("web: %w", err)
	}
	a.log.Info("agent stopping")
	stopStreams()
	a.conn.Close()
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.o.ShutdownGrace)
	defer cancel()
	if e := a.server.Shutdown(shutdown); e != nil {
		a.log.Warn("web shutdown", "err", e)
	}
	if e := a.registry.Close(shutdown); e != nil {
		a.log.Warn("callbacks still running at shutdown", "err", e)
	}
	return err
}

// loop reads uevents and publishes what they change until ctx ends or the socket fails for good.
func (a *Agent) loop(ctx context.Context) error {
	backoff := time.Millisecond
	for {
		a.busy.Store(0)
		ev, err := a.conn.Read(ctx)
		now := time.Now()
		a.busy.Store(now.UnixNano())
		switch {
		case err == nil:
			backoff = time.Millisecond
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, udev.ErrOverflow):
			a.metrics.NetlinkOverflows.Inc()
			a.log.Warn("uevents lost: netlink receive queue overflowed; rescanning sysfs")
			a.resync(state.ReasonOverflow, 0, now)
			continue
		case errors.Is(err, net.ErrClosed):
			return err
		default:
			// A transient error never ends the listener; back off so a persistent one cannot spin.
			a.log.Warn("uevent read failed; retrying", "err", err, "backoff", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		a.metrics.Uevent(ev.Subsystem, ev.Action)
		if state.Suspicious(ev.Subsystem, ev.DevPath) {
			a.metrics.Rejected("devpath")
			a.log.Warn("uevent with a device path outside /devices/system dropped", "devpath", ev.DevPath, "seqnum", ev.Seqnum)
			continue
		}
		kind, n := state.Classify(ev.Subsystem, ev.DevPath)
		if kind != state.KindNone {
			a.log.Debug("uevent", "action", ev.Action, "devpath", ev.DevPath, "seqnum", ev.Seqnum, "synthetic", ev.Synthetic())
		}
		notes, gap := a.tracker.Handle(&ev)
		a.publish(notes)
		if a.onliner != nil && ev.Action == "add" && !ev.Synthetic() {
			// The arrival follows the online uevent the write causes, as Windows announces a
			// processor only once threads can run on it.
			switch kind {
			case state.KindCPU:
				a.onliner.AddCPU(n, ev.ReadAt)
			case state.KindMemory:
				a.onliner.AddMemoryBlock(n, ev.ReadAt)
			}
		}
		if gap {
			a.resync(state.ReasonSeqnumGap, ev.Seqnum, ev.ReadAt)
		}
	}
}

// resync rescans sysfs and publishes what the lost events would have said.
func (a *Agent) resync(reason string, seqnum uint64, readAt time.Time) {
	a.metrics.Resyncs.WithLabelValues(reason).Inc()
	var err error
	for attempt := range 3 {
		var notes []notify.Notification
		if notes, err = a.tracker.Resync(seqnum, readAt); err == nil {
			if len(notes) > 0 {
				a.log.Info("resync found changes", "reason", reason, "notifications", len(notes))
			}
			a.publish(notes)
			return
		}
		time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
	}
	a.log.Error("resync failed; the next uevent or resync will retry", "reason", reason, "err", err)
}

func (a *Agent) publish(notes []notify.Notification) {
	if len(notes) == 0 {
		return
	}
	for i := range notes {
		if a.registry.Publish(notes[i]) {
			a.metrics.Notified(&notes[i])
		}
	}
}

// healthy reports an event loop stuck on one event for longer than stuckAfter.
func (a *Agent) healthy() error {
	if since := a.busy.Load(); since != 0 {
		if d := time.Since(time.Unix(0, since)); d > stuckAfter {
			return fmt.Errorf("event loop busy with one event for %s", d.Round(time.Second))
		}
	}
	return nil
}
