// Package agent wires the daemon together: the uevent listener, the sysfs tracker, the
// notification registry, the online policy, the configured callbacks and the HTTP server.
package agent

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	toolkit "github.com/prometheus/exporter-toolkit/web"

	"github.com/hotplug-agent/hotplug-agent/callback"
	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/control"
	"github.com/hotplug-agent/hotplug-agent/headroom"
	"github.com/hotplug-agent/hotplug-agent/memdev"
	"github.com/hotplug-agent/hotplug-agent/metrics"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/online"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/statefile"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
	"github.com/hotplug-agent/hotplug-agent/udev"
	"github.com/hotplug-agent/hotplug-agent/web"
)

// Options are the agent's settings, from flags and the configuration file.
type Options struct {
	SysfsPath string
	// IOMemPath is /proc/iomem under --path.procfs, where virtio-mem devices are found; ""
	// leaves them out (ACPI memory devices are found in sysfs).
	IOMemPath string
	// ZoneinfoPath is /proc/zoneinfo under --path.procfs, where the zone planner (online policy
	// planned) reads the zones' present pages; "": it counts online memory blocks instead.
	ZoneinfoPath string
	// BootIDPath is /proc/sys/kernel/random/boot_id under --path.procfs: the state file keeps
	// which memory blocks are boot memory for the boot it names, so that the zone planner tells
	// them from hot-added ones after a restart. "": hot-added memory of no known device present
	// at a start counts as boot memory.
	BootIDPath         string
	ListenAddresses    []string // HTTP API addresses; ignored with SystemdSocket
	SystemdSocket      bool     // serve on the sockets systemd passes (socket activation)
	WebConfigFile      string   // exporter-toolkit web configuration: TLS and basic auth
	ReceiveBufferBytes int
	Config             *config.Config // nil: defaults
	Version            string
	Logger             *slog.Logger
	// ShutdownGrace bounds how long shutdown waits for callbacks in flight; 0 means 10 s.
	ShutdownGrace time.Duration
	// StreamHistory is how many notifications /events keeps for clients that resume; 0: 4096.
	StreamHistory int
	// MaxStreamSubscribers bounds the /events subscribers at once; beyond it a request gets 503
	// and is counted. 0: web.DefaultMaxStreamSubscribers.
	MaxStreamSubscribers int
	// MaxConnections bounds the HTTP connections open at once, of every listener together;
	// beyond it a connection is refused (a 503, then closed) and counted. The agent lowers it to
	// what its descriptor limit holds beside the descriptors it keeps for everything else (see
	// descriptorReserve). 0: web.DefaultMaxConnections.
	MaxConnections int
	// IdleTimeout closes a keep-alive HTTP connection that has waited that long for its next
	// request; 0: DefaultIdleTimeout. An /events stream is a request in progress: it stays.
	IdleTimeout time.Duration
	// WriteTimeout bounds the writing of an HTTP response: a client that has not taken it by
	// then (it stopped reading) loses its connection. An /events stream gets it for each batch of
	// writes instead, so it lasts. 0: DefaultWriteTimeout.
	WriteTimeout time.Duration
	// StatePath is the file that keeps the announced interfaces and the last notification ID
	// across restarts; "" keeps none. A path that statefile refuses (statefile.ErrRefused), or
	// a file that cannot be read, makes New fail; a file whose contents are bad
	// (statefile.ErrCorrupt) is reported, and replaced.
	StatePath string
	// Source replaces the kernel's uevent socket (tests); nil opens the socket.
	Source Source
	// ControlSocket is the path of the control socket (hotplug-agent online/offline); "" serves
	// none.
	ControlSocket string
	// ControlSocketOptional makes a control socket that cannot be created (a read-only /run,
	// another agent listening on it) a warning instead of an error: for the default path.
	ControlSocketOptional bool
	// LoadConfig reads the configuration again, for Reload (hotplug-agent reload, SIGHUP); nil:
	// the agent cannot reload.
	LoadConfig func() (*config.Config, error)
	// Headroom estimates the memory hot-add headroom, exported as a gauge and served by /memory;
	// nil: neither.
	Headroom *headroom.Estimator

	// stageDone is told the name of each stage of New once it is built; an error from it fails
	// New there (tests). nil: nothing.
	stageDone func(stage string) error
}

// Source is where uevents come from: the kernel's netlink socket (*udev.Conn), or a test's fake.
type Source interface {
	// Read blocks until the next event; udev.ErrOverflow reports lost events.
	Read(ctx context.Context) (udev.Event, error)
	Close() error
}

// DefaultIdleTimeout is Options.IdleTimeout when unset: longer than Prometheus's default scrape
// interval (1 minute), so that a scraper keeps its connection.
const DefaultIdleTimeout = 2 * time.Minute

// DefaultWriteTimeout is Options.WriteTimeout when unset: ample for any response of the API to
// reach a client that reads it, even a slow one.
const DefaultWriteTimeout = 30 * time.Second

// maxHeaderBytes bounds a request's headers (net/http reads up to 4 KiB more before it refuses
// them): no client of the API needs more, and with ReadHeaderTimeout it bounds what a
// connection whose headers are still arriving holds. A request with more gets 431.
const maxHeaderBytes = 16 << 10

// webShutdownBudget is how long shutdown waits for the HTTP requests in progress (/events
// streams end at once) before it closes their connections; at most ShutdownGrace.
const webShutdownBudget = time.Second

// defaultStuckAfter is how long the event loop may spend on one event before /healthz fails and
// the systemd watchdog stops being fed; a shorter watchdog interval lowers it.
const defaultStuckAfter = 10 * time.Second

// Agent is a configured, not yet running, agent. Create it with New, run it with Run.
type Agent struct {
	o        Options
	log      *slog.Logger
	source   Source
	tracker  *state.Tracker
	registry *notify.Registry
	devices  *notify.Registry // the memory-device registrations (notify.FlagMemoryDevices)
	memdevs  *memdev.Tracker  // memory blocks grouped into devices
	onliner  *online.Onliner
	// blockSize is the memory block size, for the memory a request frees; 0 without memory.
	blockSize uint64
	kernel    *online.KernelTakeover // the kernel's own onlining, configured under the policy kernel
	changes   *notify.ChangeRegistry // the two-phase registrations
	targets   *notify.TargetRegistry // the target-device registrations
	gate      *online.Gate           // the path of notifications to the registry
	control   *control.Server        // nil without a control socket
	metrics   *metrics.Metrics
	phases    *metrics.Phases
	cgroups   *callback.Cgroups // the exec runs' cgroups; nil: process groups only
	// cgroupsTried: openCgroups ran (once is enough, whatever it found).
	cgroupsTried bool
	// undo releases what the stages of New built, in the reverse order (close).
	undo []func(context.Context)

	// The configuration in force, and what was registered from it; Reload changes them, under
	// reloadMu. New sets them before anything else runs.
	reloadMu   sync.Mutex
	stopping   atomic.Bool           // Run is shutting down: a reload registers nothing more
	limiter    *callback.Limiter     // the exec callbacks' process slots (max_exec_processes)
	configured map[string]configured // by callback name
	logEntry   *notify.Entry         // the log callback (log_notifications); nil without it
	listeners  []net.Listener
	conns      *web.ConnLimit // bounds the connections of every listener together
	handler    http.Handler
	stuckAfter time.Duration
	busy       atomic.Int64 // unix nanoseconds since the loop read the uevents it handles; 0 when waiting
	// A resync that failed is owed (its reason) and tried again at resyncAt, the wait doubling
	// from a second up to maxResyncWait; the loop's goroutine alone uses them.
	resyncOwed string
	resyncAt   time.Time
	resyncWait time.Duration
	saveReq    chan struct{} // capacity 1: "the announced set or a callback's cursor changed; save it"
	// saveAsked is set by the request that wakes the saver and cleared by the saver as it begins
	// a save: the changes between the two are in that save, and ask for nothing more.
	saveAsked atomic.Bool
	writeReq  chan struct{} // capacity 1: "a callback waits for its next notification to be on file"

	// What the last run left in the state file, for the configured callbacks to resume from.
	instance      uuid.UUID // the state file's: the webhooks' Idempotency-Key namespace
	cursors       map[string]notify.Cursor
	deviceCursors map[string]notify.Cursor
	durable       atomic.Bool // a configured callback has (or had) a durable registration
	bootID        string      // the kernel's boot ID, for the state file's boot memory; "": none

	// The cpuset and systemd callbacks, by name, and what the last run's remembered.
	cpusetMu    sync.Mutex
	cpusets     map[string]cpusetRun
	prevCpusets map[string]statefile.Cpuset
}

// cpusetRun is a cpuset or systemd callback: what it remembers, its notification callback, and
// how to stop it (a cpuset callback's periodic look at the cpusets, a systemd one's connection).
type cpusetRun struct {
	memory   func() callback.CpusetMemory
	callback notify.Callback
	stop     func()
}

// New checks the options, binds the HTTP listeners, opens the uevent socket, takes the first
// snapshot of sysfs and registers the configured callbacks: every error a user can cause (a sysfs
// root that is not one, a bad web config, a port in use) is returned here, before anything runs.
// It builds the agent in stages (see stages), each in one place; when one fails, what the stages
// made so far is released in reverse order, the failing one's included, so that a failed New
// leaves no listener, socket, goroutine or file descriptor behind. It does not block, but for
// that release, which waits up to ShutdownGrace for callbacks in flight.
func New(o Options) (*Agent, error) {
	o = withDefaults(o)
	fs, err := sysfs.NewFS(o.SysfsPath)
	if err != nil {
		return nil, err
	}
	if err := toolkit.Validate(o.WebConfigFile); err != nil {
		return nil, fmt.Errorf("web config %s: %w", o.WebConfigFile, err)
	}
	a := &Agent{o: o, log: o.Logger, tracker: state.New(fs), blockSize: fs.BlockSize(), stuckAfter: defaultStuckAfter,
		saveReq: make(chan struct{}, 1), writeReq: make(chan struct{}, 1)}
	b := &builder{a: a, fs: fs}
	for _, s := range b.stages() {
		// The stage's undo is kept before it is built: it releases what a failed build made too.
		a.undo = append(a.undo, s.undo)
		err := s.build()
		if err == nil && o.stageDone != nil {
			err = o.stageDone(s.name)
		}
		if err != nil {
			a.close()
			return nil, err
		}
	}
	return a, nil
}

// withDefaults returns o with its zero values replaced by the defaults.
func withDefaults(o Options) Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Config == nil {
		o.Config = &config.Config{}
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 10 * time.Second
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = web.DefaultMaxConnections
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	return o
}

// stage is one step of New: build makes what the stage holds; undo (nil: nothing to release)
// releases what build made, all of it or the part it made before it failed, within ctx.
type stage struct {
	name  string
	build func() error
	undo  func(ctx context.Context)
}

// builder is what New's stages hand on to each other, beside the Agent they build.
type builder struct {
	a        *Agent
	fs       sysfs.FS
	gatherer *prometheus.Registry
	// latencies holds the dispatch latency histograms alone, for the status page.
	latencies *prometheus.Registry
	memory    func() (headroom.Estimate, error) // the headroom estimate for /memory; nil: none
	// startup is what changed while the agent was down, announced once everything is built;
	// addedWhileDown, what was hot-added meanwhile, for the online policy.
	startup        []notify.Notification
	addedWhileDown state.PresentSet
	// bootMemory and hotAddedBefore are the memory blocks present at the start that were there
	// at boot and that were hot-added since, before addedWhileDown (memoryOrigin).
	bootMemory, hotAddedBefore []int
}

// stages are New's steps in the order they run; their undos run in the reverse order. The
// order matters: the ports first (a port in use is the commonest mistake, reported before any
// log); the registries before the socket, and the socket before the snapshot of sysfs that the
// state stage takes (a change between the two is then both in the snapshot and in the socket's
// queue, and the tracker drops the duplicate); the callbacks registered before the policy can
// online anything and before the changes made while the agent was down are announced, last.
func (b *builder) stages() []stage {
	a := b.a
	return []stage{
		{"listeners", a.listen, a.closeListeners},
		{"metrics", b.buildMetrics, nil},
		{"registries", b.buildRegistries, a.closeRegistries},
		{"source", a.openSource, a.closeSource},
		{"state", b.restoreState, nil},
		{"callbacks", a.registerCallbacks, a.unregisterCallbacks},
		{"policy", b.buildPolicy, a.restoreKernel},
		{"control", a.listenControl, a.closeControl},
		{"http", b.buildHandler, nil}, // its /events registration goes with the registries
		{"announce", b.announce, nil},
	}
}

// buildMetrics makes the agent's Prometheus registry and metrics, and the HTTP connection limit
// that counts into them.
func (b *builder) buildMetrics() error {
	a, fs := b.a, b.fs
	b.gatherer = prometheus.NewRegistry()
	// The Go collector's default series, and the heap the last collection found live
	// (go_gc_heap_live_bytes): memory that stays, without the garbage heap_inuse counts too.
	b.gatherer.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.metrics = metrics.New(b.gatherer, a.o.Version)
	b.latencies = prometheus.NewRegistry()
	b.latencies.MustRegister(a.metrics.DispatchLatency) // what the status page reads
	a.tracker.OnReject(a.metrics.Rejected)
	a.conns = web.NewConnLimit(a.connectionLimit(), a.metrics.Refused)
	metrics.RegisterPresent(b.gatherer, func() (int, int, error) {
		sets, err := fs.CPUSets()
		if err != nil {
			return 0, 0, err
		}
		blocks, err := fs.MemoryBlockIndexes()
		return len(sets.Present), len(blocks), err
	})
	if h := a.o.Headroom; h != nil {
		metrics.RegisterHeadroom(b.gatherer, h.Headroom)
		b.memory = h.Estimate
	}
	return nil
}

// buildRegistries makes the notification registries (per interface, per memory device,
// two-phase, target-device), the online gate in front of the first and the memory-device
// tracker in front of the second.
func (b *builder) buildRegistries() error {
	a, fs, o := b.a, b.fs, b.a.o
	// The configured callbacks' registrations are durable when there is a state file: a
	// notification is on file before a callback is given it, and a callback resumes at the next
	// start from what the file says it has seen.
	var checkpoints func(urgent bool)
	if o.StatePath != "" {
		checkpoints = a.requestCheckpoint
	}
	a.registry = notify.NewRegistry(notify.Options{Logger: o.Logger, Observer: a.metrics, RequestCheckpoint: checkpoints})
	a.devices = notify.NewRegistry(notify.Options{Logger: o.Logger, Observer: a.metrics, RequestCheckpoint: checkpoints})
	a.phases = metrics.NewPhases(b.gatherer, a.metrics)
	tp := o.Config.TwoPhase
	a.changes = notify.NewChangeRegistry(notify.ChangeOptions{
		Logger: o.Logger, Observer: a.phases, Timeout: tp.VetoTimeout(), ConsentOnTimeout: tp.ConsentOnTimeout(),
		Existing: func(class uuid.UUID) ([]notify.Interface, error) { return onlineOf(fs, class) },
	})
	a.targets = notify.NewTargetRegistry(notify.TargetOptions{
		Logger: o.Logger, Observer: a.phases, Timeout: tp.VetoTimeout(), ConsentOnTimeout: tp.ConsentOnTimeout(),
	})
	a.gate = online.NewGate(a.publishOne, a.targets.Removed)
	a.memdevs = memdev.New(memdev.Options{
		Reader: memdev.NewReader(fs, o.IOMemPath), Publish: a.publishDevice, Logger: o.Logger,
	})
	return nil
}

// openSource opens the kernel's uevent socket, unless Options.Source stands in for it.
func (a *Agent) openSource() error {
	if a.o.Source != nil {
		a.source = a.o.Source
		return nil
	}
	conn, err := udev.Listen(udev.Options{
		ReceiveBufferBytes: a.o.ReceiveBufferBytes,
		Logger:             a.o.Logger,
		OnReject:           a.metrics.Rejected,
		Compact:            true, // the agent reads no field but those Event holds
	})
	if err != nil {
		return err
	}
	a.source = conn
	return nil
}

// restoreState takes the starting point: what the state file says was announced before a
// restart, with the changes made while the agent was down to announce before any live event;
// without a usable state file, the machine as it is now, for which nothing is announced.
func (b *builder) restoreState() error {
	a := b.a
	// restored, not ok: whether the file was usable.
	prev, restored, err := a.loadState()
	if err != nil {
		return err
	}
	// Event IDs continue exactly after an orderly shutdown. After anything else (a kill, a
	// crash, no state file) they jump ahead, so that no ID is ever given to two notifications: a
	// client resuming with an ID the last run gave after its last save gets a resync, not another
	// notification under the same ID.
	a.registry.SetLastID(nextIDs(prev.LastEventID, prev.Clean && restored))
	a.devices.SetLastID(nextIDs(prev.MemoryDeviceLastEventID, prev.Clean && restored))
	if restored && !prev.Clean {
		a.log.Warn("the agent did not stop cleanly last time: event IDs jump ahead so that none is given twice",
			"last_saved_id", prev.LastEventID, "next_id", a.registry.LastID()+1)
	}
	a.instance = uuid.New()
	if restored {
		a.cursors, a.deviceCursors = prev.Callbacks, prev.MemoryDeviceCallbacks
		a.prevCpusets = prev.Cpusets
		if prev.Instance != uuid.Nil {
			a.instance = prev.Instance
		}
		// The devices announced before the restart: what changed for them while the agent was
		// down follows from the block notifications below.
		a.memdevs.Restore(prev.Interfaces, prev.MemoryDevices)
		a.devices.Seed(prev.MemoryDevices)
		a.tracker.Restore(prev.Interfaces)
		a.registry.Seed(prev.Interfaces)
		if b.startup, err = a.tracker.Resync(0, time.Now()); err != nil {
			return err
		}
		for i := range b.startup {
			b.startup[i].Cause = notify.CauseStartup
		}
		if prev.Present != nil {
			// Present now, not at the last save: hot-added while the agent was down.
			b.addedWhileDown = newlyPresent(prev.Present.CPUs, prev.Present.MemoryBlocks, a.tracker.Present())
		}
	} else {
		active, err := a.tracker.Scan()
		if err != nil {
			return err
		}
		a.registry.Seed(active)
		devices, err := a.memdevs.Seed(active)
		if err != nil {
			return err
		}
		a.devices.Seed(devices)
	}
	b.memoryOrigin(prev, restored)
	a.metrics.SetInterfaces(a.registry.Active())
	metrics.RegisterMemoryDevices(b.gatherer, func() int { return len(a.devices.Active()) })
	metrics.RegisterBacklog(b.gatherer, func() time.Duration { return a.backlog(time.Now()) })
	return nil
}

// memoryOrigin tells the memory blocks present now that were there at boot from those the kernel
// hot-added since, for the zone planner: a block that the state file of this boot does not count
// as boot memory was hot-added while an earlier run of the agent ran, and a block that came while
// the agent was down was hot-added. Without a state file of this boot (a first start since boot,
// or no boot ID), every other block present counts as boot memory.
func (b *builder) memoryOrigin(prev statefile.State, restored bool) {
	a := b.a
	a.bootID = readBootID(a.o.BootIDPath, a.log)
	var present, boot []int
	if p := a.tracker.Present(); p != nil {
		present = p.MemoryBlocks
	}
	known := restored && prev.BootMemory != nil && a.bootID != "" && prev.BootMemory.BootID == a.bootID
	if known {
		boot = prev.BootMemory.Blocks
	}
	for _, n := range present {
		_, down := slices.BinarySearch(b.addedWhileDown.MemoryBlocks, n)
		_, wasBoot := slices.BinarySearch(boot, n)
		switch {
		case down:
		case !known || wasBoot:
			b.bootMemory = append(b.bootMemory, n)
		default:
			b.hotAddedBefore = append(b.hotAddedBefore, n)
		}
	}
	if len(b.hotAddedBefore) > 0 {
		a.log.Info("memory blocks hot-added earlier in this boot: the zone planner counts them as such",
			"memory_blocks", sysfs.FormatCPUList(b.hotAddedBefore))
	}
}

// readBootID returns the kernel's boot ID from the file at path, as the state file writes it; ""
// when path is "" or the file does not hold one (said in the log).
func readBootID(path string, log *slog.Logger) string {
	if path == "" {
		return ""
	}
	data, err := os.ReadFile(path)
	if err == nil {
		var id uuid.UUID
		if id, err = uuid.Parse(strings.TrimSpace(string(data))); err == nil {
			return id.String()
		}
	}
	log.Info("cannot read the boot ID: after a restart, the zone planner counts hot-added memory of no known device as boot memory", "err", err)
	return ""
}

// buildPolicy makes the online policy (the onliner, its zone planner, the kernel's own onlining
// configured for it) and hands it what was hot-added while the agent was down.
func (b *builder) buildPolicy() error {
	a, fs, o := b.a, b.fs, b.a.o
	a.onliner = online.New(o.Config.Online.Policy(), fs, o.Logger, a.metrics.OnlineAttempt)
	a.onliner.SetParticipants(online.Participants{Changes: a.changes, Targets: a.targets, Gate: a.gate})
	// The planner reads the layout with a reader of its own: memdev.Reader is not safe for
	// concurrent use, and the tracker's runs on the tracker's goroutine.
	planLayout := memdev.NewReader(fs, o.IOMemPath)
	a.onliner.SetMemoryOrigin(b.bootMemory, b.hotAddedBefore)
	a.onliner.SetPlanner(online.PlannerSources{
		Zoneinfo: o.ZoneinfoPath,
		Layout: func() (memdev.Layout, error) {
			l, _, err := planLayout.Read() // the tracker says once that virtio-mem is not known
			return l, err
		},
		Decided: func(device string, z online.Zone) { a.metrics.ZonePlanned(device, z.String()) },
	})
	kernelFile := ""
	if o.StatePath != "" {
		kernelFile = o.StatePath + ".kernel"
	}
	var err error
	if a.kernel, err = online.NewKernelTakeover(o.SysfsPath, kernelFile, o.Logger); err != nil {
		return err
	}
	if err := a.kernel.Sync(o.Config.Online.Policy()); err != nil {
		return err
	}
	a.onliner.CheckOthers()
	// Their add uevents went to a socket that is gone (the agent was stopped, killed or frozen).
	a.hotAdded(b.addedWhileDown, "CPUs and memory blocks were hot-added while the agent was down")
	return nil
}

// listenControl opens the control socket, when there is to be one.
func (a *Agent) listenControl() error {
	o := a.o
	if o.ControlSocket == "" {
		return nil
	}
	var err error
	a.control, err = control.Listen(control.Options{
		Path: o.ControlSocket, Handler: a.handleControl, Logger: o.Logger, Observe: a.phases.ControlRequest,
		Reload: func(ctx context.Context, _ control.Peer) error { return a.Reload(ctx) },
	})
	switch {
	case err != nil && o.ControlSocketOptional:
		a.log.Warn("no control socket: hotplug-agent online, offline and reload will not reach this agent", "err", err)
	case err != nil:
		return err
	}
	return nil
}

// buildHandler makes the HTTP handler, which registers the /events stream with the registry.
func (b *builder) buildHandler() error {
	a, fs, o := b.a, b.fs, b.a.o
	var err error
	a.handler, err = web.Handler(web.Options{
		Registry:       a.registry,
		Gatherer:       b.gatherer,
		Latencies:      b.latencies,
		Healthy:        a.healthy,
		Logger:         o.Logger,
		Version:        o.Version,
		Present:        func() ([]notify.Interface, error) { return state.Present(fs) },
		DeviceRegistry: a.devices,
		DeviceOf:       a.memdevs.DeviceOf,
		Changes:        a.changes,
		Targets:        a.targets,
		Memory:         b.memory,
		Errors:         a.metrics.Errors,
		History:        o.StreamHistory,
		WriteTimeout:   o.WriteTimeout,
		OnCut:          a.metrics.StreamCuts.Inc,

		MaxStreamSubscribers: o.MaxStreamSubscribers,
		OnRefused:            a.metrics.Refused,
	})
	return err
}

// announce publishes what changed while the agent was down and saves the state file once: an
// unusable --path.state fails at start, not at the first change.
func (b *builder) announce() error {
	b.a.publish(b.startup)
	if len(b.startup) > 0 {
		b.a.log.Info("announced the changes made while the agent was down", "notifications", len(b.startup))
	}
	return b.a.saveState(false, true)
}

// loadState reads the state file: restored is false when there is none or its contents are
// unusable (statefile.ErrCorrupt, said in the log), and the machine as it is now is the starting
// point. A path that statefile refuses (statefile.ErrRefused: a device, a FIFO, a symbolic link, a
// file of another user or that others may write) is an error: the agent must neither believe it
// nor, at its first save, replace it, so the operator must fix --path.state. So is a file that
// could not be read (permission denied, an I/O error, too many open files): what it holds is not
// known, and replacing it could lose every callback's place.
func (a *Agent) loadState() (s statefile.State, restored bool, err error) {
	if a.o.StatePath == "" {
		return statefile.State{}, false, nil
	}
	s, err = statefile.Load(a.o.StatePath)
	switch {
	case errors.Is(err, statefile.ErrRefused):
		return s, false, err
	case errors.Is(err, fs.ErrNotExist):
		a.log.Info("no state file: a first start; the interfaces present now are the starting point", "path", a.o.StatePath)
		return s, false, nil
	case errors.Is(err, statefile.ErrCorrupt):
		a.log.Warn("state file unusable; the interfaces present now are the starting point", "err", err)
		return s, false, nil
	case err != nil:
		return s, false, err
	}
	a.log.Info("state restored", "path", a.o.StatePath, "interfaces", len(s.Interfaces), "last_event_id", s.LastEventID, "saved_at", s.SavedAt)
	return s, true, nil
}

// saveState writes the announced set and the last notification ID to the state file.
// idJump is how far event IDs jump after a start that did not follow an orderly shutdown: more
// than the agent can number between two saves of its state file.
const idJump = 1 << 20

// nextIDs returns the last event ID to continue from: last itself after a clean shutdown;
// otherwise beyond anything the previous run can have given, last+idJump, and beyond the
// microseconds since 1970, so that a run that lost its state file (or keeps none) does not
// start again at IDs an earlier run gave. A last above statefile.MaxEventID, which no state file
// that Load accepts holds, is not continued: the IDs start from the clock, as without a state
// file. So the result is at most MaxEventID+idJump, and counting on from it cannot wrap to 0.
func nextIDs(last uint64, clean bool) uint64 {
	now := min(uint64(max(time.Now().UnixMicro(), 0)), statefile.MaxEventID) // a clock before 1970 or far ahead
	switch {
	case last > statefile.MaxEventID:
		return now
	case clean:
		return last
	}
	return max(last+idJump, now)
}

// maxPendingSaved bounds the notifications the state file keeps for one callback: beyond them a
// callback that is that far behind is resynchronised at the next start, which it would be by its
// queue's overflow anyway.
const maxPendingSaved = 1024

// saveState saves the state file: the announced sets, the last IDs and where each configured
// callback stands. clean marks the save of an orderly shutdown, after which no notification is
// published; durable waits for the disk (statefile.Save), else the file is only written
// (statefile.Write), which a kill of the agent cannot undo. Either way the callbacks waiting for
// their next notification to be on file then go on, even when the file could not be written
// (the error says so; delivery is then at least once only as long as the agent runs).
func (a *Agent) saveState(clean, durable bool) error {
	cp, dcp := a.registry.Checkpoint(maxPendingSaved), a.devices.Checkpoint(maxPendingSaved)
	defer func() {
		a.registry.Saved(cp)
		a.devices.Saved(dcp)
	}()
	if a.o.StatePath == "" {
		return nil
	}
	save := statefile.Write
	if durable {
		save = statefile.Save
	}
	return save(a.o.StatePath, statefile.State{
		Interfaces:              cp.Active,
		LastEventID:             cp.LastID,
		MemoryDevices:           dcp.Active,
		MemoryDeviceLastEventID: dcp.LastID,
		Clean:                   clean,
		SavedAt:                 time.Now(),
		Instance:                a.instance,
		Callbacks:               cp.Cursors,
		MemoryDeviceCallbacks:   dcp.Cursors,
		Present:                 presentOf(a.tracker.Present()),
		BootMemory:              a.bootMemoryOf(),
		Cpusets:                 a.cpusetMemories(),
	})
}

// carryMemory returns what keeps what the cpuset or systemd callback name remembers for the
// callback of the same name that a reload registers in its place. Call that once name is
// unregistered: a callback still running then has finished, and what it changed is kept too.
// reloadMu is held.
func (a *Agent) carryMemory(name string) func() {
	a.cpusetMu.Lock()
	run, ok := a.cpusets[name]
	a.cpusetMu.Unlock()
	return func() {
		if !ok {
			return
		}
		if a.prevCpusets == nil {
			a.prevCpusets = map[string]statefile.Cpuset{}
		}
		a.prevCpusets[name] = statefile.Cpuset(run.memory())
	}
}

// cpusetMemories returns what the cpuset callbacks remember, for the state file; nil without any.
func (a *Agent) cpusetMemories() map[string]statefile.Cpuset {
	a.cpusetMu.Lock()
	defer a.cpusetMu.Unlock()
	if len(a.cpusets) == 0 {
		return nil
	}
	out := make(map[string]statefile.Cpuset, len(a.cpusets))
	for name, r := range a.cpusets {
		out[name] = statefile.Cpuset(r.memory())
	}
	return out
}

// bootMemoryOf is the memory blocks counted as boot memory, for the state file: nil without a
// boot ID or an onliner.
func (a *Agent) bootMemoryOf() *statefile.BootMemory {
	if a.bootID == "" || a.onliner == nil {
		return nil
	}
	return &statefile.BootMemory{BootID: a.bootID, Blocks: a.onliner.BootMemory()}
}

// presentOf is p in the state file's terms; nil for nil.
func presentOf(p *state.PresentSet) *statefile.Present {
	if p == nil {
		return nil
	}
	return &statefile.Present{CPUs: p.CPUs, MemoryBlocks: p.MemoryBlocks}
}

// newlyPresent returns the CPUs and memory blocks of now that are not among cpus and blocks
// (sorted lists of what was present before).
func newlyPresent(cpus, blocks []int, now *state.PresentSet) state.PresentSet {
	if now == nil {
		return state.PresentSet{}
	}
	return state.PresentSet{CPUs: missing(now.CPUs, cpus), MemoryBlocks: missing(now.MemoryBlocks, blocks)}
}

// missing returns the numbers of from that sorted is without, in from's order.
func missing(from, sorted []int) []int {
	var out []int
	for _, n := range from {
		if _, found := slices.BinarySearch(sorted, n); !found {
			out = append(out, n)
		}
	}
	return out
}

// hotAdded hands CPUs and memory blocks that were hot-added without their add uevent reaching
// the agent (it was down, or the uevent was lost in an overflow) to the online policy, which
// onlines nothing twice, and to the memory-device tracker, as their uevents would have, and says
// so in the log with why. It does not block.
func (a *Agent) hotAdded(added state.PresentSet, why string) {
	if len(added.CPUs)+len(added.MemoryBlocks) == 0 {
		return
	}
	now := time.Now()
	a.log.Info(why, "cpus", sysfs.FormatCPUList(added.CPUs), "memory_blocks", sysfs.FormatCPUList(added.MemoryBlocks))
	for _, n := range added.CPUs {
		a.onliner.AddCPU(n, 0, now)
	}
	for _, n := range added.MemoryBlocks {
		a.memdevs.Added(n, now)
		a.onliner.AddMemoryBlock(n, 0, now)
	}
	a.requestSave()
}

// hotRemoved hands memory blocks that were removed without their remove uevent reaching the
// agent (it was lost in an overflow) to the memory-device tracker and the online policy, as their
// uevents would have, at when. It does not block.
func (a *Agent) hotRemoved(blocks []int, when time.Time) {
	if len(blocks) == 0 {
		return
	}
	a.log.Info("memory blocks were removed while uevents were lost", "memory_blocks", sysfs.FormatCPUList(blocks))
	for _, n := range blocks {
		a.memdevs.Removed(n, when)
		a.onliner.RemovedMemoryBlock(n)
	}
	a.requestSave()
}

// requestSave asks the saver for a save of a change. Only the first request after a save began
// wakes the saver: the save it schedules holds the changes of the others too, so that a burst of
// uevents costs the event loop no goroutine wake-up per notification. It does not block.
func (a *Agent) requestSave() {
	if a.saveAsked.Load() || !a.saveAsked.CompareAndSwap(false, true) {
		return
	}
	select {
	case a.saveReq <- struct{}{}:
	default:
	}
}

// requestCheckpoint is the registries' RequestCheckpoint: urgent when a callback waits for its
// next notification to be on file. It does not block.
func (a *Agent) requestCheckpoint(urgent bool) {
	if !urgent {
		a.requestSave()
		return
	}
	select {
	case a.writeReq <- struct{}{}:
	default:
	}
}

// saveDelay is how long a change may wait to be saved durably: those that come meanwhile are
// saved with it, so that a burst of changes costs one fsync.
const saveDelay = 100 * time.Millisecond

// writeDelay is how long a change may wait to be written (statefile.Write, without the disk)
// while durable callbacks are registered: those that come meanwhile are written with it, so that
// a burst of changes (a hot-add of 64 memory blocks) costs a few writes, not one per change. It
// delays no callback: one given a notification that is not on file yet asks for the write at
// once (writeReq), and is given it only after that write.
const writeDelay = 5 * time.Millisecond

// saver saves the state file, off the event loop, until ctx ends: durably (statefile.Save) at
// most saveDelay after a change; and without waiting for the disk (statefile.Write) at once when
// a callback waits for its next notification to be on file, and at most writeDelay after a
// change while durable callbacks are registered, so that none waits for an fsync, and most find
// their notification on file already. A change announced but not yet saved when the agent is
// killed is announced again at the next start: delivery is at least once across a SIGKILL.
func (a *Agent) saver(ctx context.Context) {
	due := time.NewTimer(saveDelay)
	due.Stop()
	soon := time.NewTimer(writeDelay)
	soon.Stop()
	pending := false // a change waits for the timer
	writing := false // a change waits for soon
	later := func() {
		if !pending {
			pending = true
			due.Reset(saveDelay)
		}
	}
	write := func() {
		writing = false
		soon.Stop()
		a.saveAsked.Store(false) // a change from now on asks again
		if err := a.saveState(false, false); err != nil {
			a.log.Warn("state file not written", "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			due.Stop()
			soon.Stop()
			return
		case <-a.writeReq:
			write() // also what soon waits for
			later()
		case <-a.saveReq:
			if a.durable.Load() && !writing {
				writing = true
				soon.Reset(writeDelay)
			}
			later()
		case <-soon.C:
			write()
		case <-due.C:
			pending = false
			writing = false // the save holds what soon waits for
			soon.Stop()
			a.saveAsked.Store(false)
			if err := a.saveState(false, true); err != nil {
				a.log.Warn("state file not saved", "err", err)
			}
		}
	}
}

// listen binds the HTTP listeners, or takes those systemd passed.
func (a *Agent) listen() error {
	if a.o.SystemdSocket {
		ls, err := activation.Listeners()
		if err != nil {
			return fmt.Errorf("web: systemd socket activation: %w", err)
		}
		if len(ls) == 0 {
			return errors.New("web: --web.systemd-socket: systemd passed no socket (LISTEN_FDS unset)")
		}
		a.listeners = ls
		return nil
	}
	addrs := a.o.ListenAddresses
	if len(addrs) == 0 {
		return errors.New("web: no listen address")
	}
	for _, addr := range addrs {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("web: listen on %s: %w", addr, err)
		}
		a.listeners = append(a.listeners, l)
	}
	return nil
}

// Descriptors the agent keeps out of the HTTP connections' reach (descriptorReserve).
const (
	// reserveBase: standard input, output and error; the netlink socket; the netpoller's epoll
	// and event descriptors; the listeners; the control socket and its clients; the state file's
	// temporary file and directory; the sysfs and /proc files read or written at a time; the
	// systemd notification socket.
	reserveBase = 64
	// reservePerExec: an exec command being started holds /dev/null, two pipes for its output,
	// the start-up status pipe and a pidfd.
	reservePerExec = 8
	// reservePerWebhook: a webhook callback's connection, and one being dialled.
	reservePerWebhook = 4
	// minConnections is the connection limit however few descriptors the agent has.
	minConnections = 16
)

// descriptorReserve returns how many file descriptors the agent keeps for everything but HTTP
// connections, so that connections can never take those that callbacks and the state file
// need: what reserveBase lists, the connections being refused (web.RefusingConnections), and
// per exec command that can run at once (one per exec callback, at most max_exec_processes)
// and per webhook callback.
func descriptorReserve(c *config.Config) int {
	execs, webhooks := 0, 0
	for _, cb := range c.Callbacks {
		if cb.Exec != nil {
			execs++
		}
		if cb.Webhook != nil {
			webhooks++
		}
	}
	return reserveBase + web.RefusingConnections + reservePerExec*min(execs, c.ExecLimit()) + reservePerWebhook*webhooks
}

// connectionLimit returns the HTTP connection limit for a wish of want connections, a descriptor
// limit of nofile (0: unknown) and a reserve: want, or what nofile holds beside the reserve when
// that is less, but not under minConnections for that.
func connectionLimit(want, nofile, reserve int) int {
	if nofile <= 0 {
		return want
	}
	return min(want, max(nofile-reserve, minConnections))
}

// connectionLimit returns the agent's HTTP connection limit, and logs it.
func (a *Agent) connectionLimit() int {
	nofile, reserve := descriptorLimit(), descriptorReserve(a.o.Config)
	n := connectionLimit(a.o.MaxConnections, nofile, reserve)
	attrs := []any{"max_connections", n, "max_stream_subscribers", cmp.Or(a.o.MaxStreamSubscribers, web.DefaultMaxStreamSubscribers),
		"idle_timeout", a.o.IdleTimeout, "descriptor_limit", nofile, "descriptors_reserved", reserve}
	switch {
	case nofile > 0 && nofile-reserve < minConnections:
		a.log.Warn("the descriptor limit leaves too few descriptors for HTTP connections beside those kept for callbacks and the state file; raise it (LimitNOFILE=, ulimit -n)", attrs...)
	case n < a.o.MaxConnections:
		a.log.Info("HTTP connection limit lowered to what the descriptor limit holds beside those kept for callbacks and the state file", attrs...)
	default:
		a.log.Info("HTTP connection limit", attrs...)
	}
	return n
}

// close releases what New made, stage by stage in reverse order (see stages): for a New that
// fails, and for tests of an agent that never ran. Callbacks in flight (exec callbacks of
// include_existing registrations, say) get ShutdownGrace to finish, so that nothing of the agent
// is left running when it returns. It blocks until then; call it once, and never after Run.
func (a *Agent) close() {
	ctx, cancel := context.WithTimeout(context.Background(), a.o.ShutdownGrace)
	defer cancel()
	for _, undo := range slices.Backward(a.undo) {
		if undo != nil {
			undo(ctx)
		}
	}
	a.undo = nil
}

// closeListeners closes the HTTP listeners.
func (a *Agent) closeListeners(context.Context) {
	for _, l := range a.listeners {
		l.Close()
	}
}

// closeRegistries closes the registries, waiting within ctx for callbacks in flight.
func (a *Agent) closeRegistries(ctx context.Context) {
	var closers []func(context.Context) error
	if a.registry != nil {
		closers = append(closers, a.registry.Close)
	}
	if a.devices != nil {
		closers = append(closers, a.devices.Close)
	}
	if a.changes != nil {
		closers = append(closers, a.changes.Close)
	}
	if a.targets != nil {
		closers = append(closers, a.targets.Close)
	}
	for _, c := range closers {
		if err := c(ctx); err != nil {
			a.log.Warn("start failed; callbacks still running", "err", err)
		}
	}
}

// closeSource closes the uevent socket, or the source that stands in for it.
func (a *Agent) closeSource(context.Context) {
	if a.source != nil {
		a.source.Close()
	}
}

// unregisterCallbacks undoes registerCallbacks: it unregisters the configured callbacks and the
// log callback (each callback in flight gets until ctx ends), stops the cpuset and systemd
// callbacks, and kills what is left in the exec runs' cgroups.
func (a *Agent) unregisterCallbacks(ctx context.Context) {
	for name, c := range a.configured {
		if err := c.unregister(ctx); err != nil {
			a.log.Warn("start failed; a callback was still running", "callback", name, "err", err)
		}
	}
	a.configured = nil
	if a.logEntry != nil {
		if err := a.registry.Retire(ctx, a.logEntry); err != nil {
			a.log.Warn("start failed; the log callback was still running", "err", err)
		}
		a.logEntry = nil
	}
	a.stopCpusets()
	a.closeCgroups()
}

// restoreKernel puts back the kernel's memory onlining settings the policy changed.
func (a *Agent) restoreKernel(context.Context) {
	if a.kernel == nil {
		return
	}
	if err := a.kernel.Restore(); err != nil {
		a.log.Error("the kernel's memory onlining settings were not put back; the next start tries again", "err", err)
	}
}

// closeControl closes the control socket.
func (a *Agent) closeControl(context.Context) {
	if a.control != nil {
		a.control.Close()
	}
}

// stopCpusets stops the cpuset callbacks' periodic looks; what they remember stays for the last
// save.
func (a *Agent) stopCpusets() {
	a.cpusetMu.Lock()
	runs := slices.Collect(maps.Values(a.cpusets))
	a.cpusetMu.Unlock()
	for _, r := range runs {
		r.stop()
	}
}

// closeCgroups kills what is left in the exec runs' cgroups (runs the shutdown cut short) and
// removes them.
func (a *Agent) closeCgroups() {
	if err := a.cgroups.Close(); err != nil {
		a.log.Warn("exec callbacks: cgroups not removed", "err", err)
	}
}

// registerCallbacks registers the configured callbacks, and the log callback when the
// configuration has it, keeping each one's unregistration for Reload.
func (a *Agent) registerCallbacks() error {
	a.limiter = callback.NewLimiter(a.o.Config.ExecLimit())
	a.configured = map[string]configured{}
	if a.o.Config.LogEnabled() {
		if err := a.registerLog(); err != nil {
			return err
		}
	}
	for _, c := range a.o.Config.Callbacks {
		if err := a.registerCallback(c, a.o.Config.Online.Policy()); err != nil {
			return err
		}
	}
	// The cursors of the last run are for the registrations made at start: a callback added by
	// a reload later, under a name the last run had, starts afresh.
	a.cursors, a.deviceCursors, a.prevCpusets = nil, nil, nil
	return nil
}

// configured is a registration made from the configuration: its definition, and how to undo it.
type configured struct {
	def        config.Callback
	unregister func(context.Context) error
}

// logOwner is the owner of the built-in log callback (log_notifications).
const logOwner = "log"

// registerLog registers the built-in log callback.
func (a *Agent) registerLog() error {
	e, err := a.registry.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.AllClasses,
		logOwner, callback.Log(a.log), nil)
	if err != nil {
		return err
	}
	a.metrics.InitCallback(logOwner)
	a.logEntry = e
	return nil
}

// registerCallback registers the configured callback c, as IoRegisterPlugPlayNotification (or,
// by its kind, KeRegisterProcessorChangeCallback or a target-device registration) would, and
// keeps its unregistration in a.configured.
func (a *Agent) registerCallback(c config.Callback, policy online.Policy) error {
	logger := a.log.With("callback", c.Name)
	var ex *callback.Exec
	if c.Exec != nil {
		a.openCgroups()
		ex = &callback.Exec{Command: c.Exec.Command, Timeout: c.Exec.Timeout, Limiter: a.limiter, Logger: logger, Cgroups: a.cgroups}
		if name := c.Exec.Command[0]; !strings.Contains(name, "/") {
			path, _ := callback.LookPath(name) // config.Parse checked that it is there
			logger.Info("exec callback: command found in the exec PATH", "command", name, "path", path, "exec_path", callback.DefaultPath)
		}
	}
	keep := func(unregister func(context.Context) error) {
		a.configured[c.Name] = configured{def: c, unregister: unregister}
	}
	switch c.Kind {
	case config.KindTwoPhase:
		cb := changeLog(logger)
		if ex != nil {
			cb = ex.ChangeCallback()
		}
		var flags notify.ChangeFlags
		if c.IncludeExisting {
			flags |= notify.FlagAddExisting
		}
		e, err := a.changes.Register(context.Background(), c.ClassGUID, flags, c.Name, cb, nil)
		if err != nil {
			return fmt.Errorf("callback %s: %w", c.Name, err)
		}
		keep(func(ctx context.Context) error { return a.changes.Unregister(ctx, e) })
		a.phases.InitCallback(c.Name, "add_start", notify.ClassName(c.ClassGUID))
		if (c.ClassGUID == notify.GUIDDeviceProcessor && policy.CPU != online.Online) ||
			(c.ClassGUID == notify.GUIDDeviceMemory && (policy.Memory == online.None || policy.Memory == online.Kernel)) {
			a.log.Info("two-phase callback: the online policy leaves hot-added resources of its class to others, so it gets add_start only for `hotplug-agent online` requests",
				"callback", c.Name, "class", notify.ClassName(c.ClassGUID), "online_cpu", policy.CPU, "online_memory", policy.Memory)
		}
		return nil
	case config.KindTargetDevice:
		cb := targetLog(logger)
		if ex != nil {
			cb = ex.TargetCallback()
		}
		e, err := a.targets.Register(c.Target, c.Name, cb, nil)
		if err != nil {
			return fmt.Errorf("callback %s: %w", c.Name, err)
		}
		keep(func(ctx context.Context) error { return a.targets.Unregister(ctx, e) })
		a.phases.InitCallback(c.Name, "query_remove", notify.ClassName(c.ClassGUID))
		return nil
	}
	var flags notify.Flags
	if c.IncludeExisting {
		flags |= notify.FlagIncludeExistingInterfaces
	}
	var cb notify.Callback
	switch {
	case ex != nil:
		cb = ex.Callback()
	case c.Cpuset != nil, c.Systemd != nil:
		newRun := a.newCpuset
		if c.Systemd != nil {
			newRun = a.newSystemd
		}
		run, err := newRun(c, logger)
		if err != nil {
			return fmt.Errorf("callback %s: %w", c.Name, err)
		}
		reg, e, err := a.registerConfigured(c, flags, run.callback, logger)
		if err != nil {
			run.stop()
			return fmt.Errorf("callback %s: %w", c.Name, err)
		}
		a.cpusetMu.Lock()
		if a.cpusets == nil {
			a.cpusets = map[string]cpusetRun{}
		}
		a.cpusets[c.Name] = run
		a.cpusetMu.Unlock()
		keep(func(ctx context.Context) error {
			err := reg.Retire(ctx, e)
			run.stop()
			a.cpusetMu.Lock()
			delete(a.cpusets, c.Name)
			a.cpusetMu.Unlock()
			return err
		})
		a.metrics.InitCallback(c.Name)
		if c.Cpuset != nil {
			a.metrics.InitCpuset(c.Name, c.Cpuset.Cgroups)
		} else {
			a.metrics.InitSystemd(c.Name, c.Systemd.Units)
		}
		return nil
	case c.Webhook != nil:
		retries := 5
		if c.Webhook.Retries != nil {
			retries = *c.Webhook.Retries
		}
		cb = callback.Webhook{URL: c.Webhook.URL, Timeout: c.Webhook.Timeout, Retries: retries,
			InsecureSkipVerify: c.Webhook.InsecureSkipVerify, Headers: c.Webhook.Headers,
			Logger: logger, Name: c.Name, Namespace: a.instance}.Callback()
	default:
		cb = callback.Log(logger)
	}
	reg, e, err := a.registerConfigured(c, flags, cb, logger)
	if err != nil {
		return fmt.Errorf("callback %s: %w", c.Name, err)
	}
	keep(func(ctx context.Context) error { return reg.Retire(ctx, e) })
	a.metrics.InitCallback(c.Name)
	return nil
}

// remembered is what the last run of the cpuset or systemd callback name remembered (the state
// file, or the callback before a reload), nil for none.
func (a *Agent) remembered(name string) *callback.CpusetMemory {
	m, ok := a.prevCpusets[name]
	if !ok {
		return nil
	}
	cm := callback.CpusetMemory(m)
	return &cm
}

// newCpuset makes the cpuset callback of c, from what the last run remembered for its name, and
// starts its periodic look at the cpusets.
func (a *Agent) newCpuset(c config.Callback, logger *slog.Logger) (cpusetRun, error) {
	cs, err := callback.NewCpuset(callback.CpusetOptions{
		Name: c.Name, Root: c.Cpuset.Root, Cgroups: c.Cpuset.Cgroups, Add: c.Cpuset.Add,
		Memory: c.ClassGUID == notify.GUIDDeviceMemory, SysfsPath: a.o.SysfsPath, Logger: logger,
		Observe:  func(pattern, result string) { a.metrics.CpusetWrite(c.Name, pattern, result) },
		OnChange: a.requestSave, Restore: a.remembered(c.Name),
	})
	if err != nil {
		return cpusetRun{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		cs.Run(ctx, c.Cpuset.Interval())
	}()
	return cpusetRun{memory: cs.Memory, callback: cs.Callback(), stop: func() { cancel(); <-done }}, nil
}

// newSystemd makes the systemd callback of c, connected to systemd, from what the last run
// remembered for its name.
func (a *Agent) newSystemd(c config.Callback, logger *slog.Logger) (cpusetRun, error) {
	sd, err := callback.NewSystemd(context.Background(), callback.SystemdOptions{
		Name: c.Name, Units: c.Systemd.Units, Add: c.Systemd.Add, Memory: c.ClassGUID == notify.GUIDDeviceMemory,
		SysfsPath: a.o.SysfsPath, Logger: logger,
		Observe:  func(unit, result string) { a.metrics.SystemdWrite(c.Name, unit, result) },
		OnChange: a.requestSave, Restore: a.remembered(c.Name),
	})
	if err != nil {
		return cpusetRun{}, err
	}
	return cpusetRun{memory: sd.Memory, callback: sd.Callback(), stop: sd.Close}, nil
}

// registerConfigured registers the configured device-interface callback c. With a state file its
// registration is durable and resumes from the cursor the last run saved for c's name, when
// that was for the same class and kind of registration (per block, per memory device).
func (a *Agent) registerConfigured(c config.Callback, flags notify.Flags, cb notify.Callback, logger *slog.Logger) (*notify.Registry, *notify.Entry, error) {
	reg, cursors := a.registry, a.cursors
	if c.MemoryDevices {
		if c.ClassGUID != notify.GUIDDeviceMemory {
			return nil, nil, fmt.Errorf("memory_devices is for the memory class, not %s", notify.ClassName(c.ClassGUID))
		}
		reg, cursors = a.devices, a.deviceCursors
	}
	if a.o.StatePath == "" {
		e, err := reg.Register(notify.EventCategoryDeviceInterfaceChange, flags, c.ClassGUID, c.Name, cb, nil)
		return reg, e, err
	}
	var resume *notify.Cursor
	if cur, ok := cursors[c.Name]; ok {
		switch {
		case cur.Class != c.ClassGUID:
			logger.Warn("callback's class changed since the last run: it starts afresh", "was", notify.ClassName(cur.Class), "now", notify.ClassName(c.ClassGUID))
		default:
			resume = &cur
			if len(cur.Pending) > 0 {
				logger.Info("callback resumes: the notifications it was owed come first", "pending", len(cur.Pending), "first_id", cur.Pending[0].ID)
			}
		}
	}
	e, err := reg.RegisterDurable(notify.EventCategoryDeviceInterfaceChange, flags, c.ClassGUID, c.Name, cb, nil, resume)
	a.durable.Store(true)
	return reg, e, err
}

// openCgroups prepares a cgroup of its own for each exec run, where one can be made; a directory
// of the same name that an agent killed with the same state file left is emptied first, so that
// nothing its callbacks started still runs when this agent's first callback does.
func (a *Agent) openCgroups() {
	if a.cgroupsTried {
		return
	}
	a.cgroupsTried = true
	cg, err := callback.NewCgroups(execCgroupName(a.o.StatePath), a.log)
	if err != nil {
		a.log.Info("exec callbacks: no cgroup of their own; each command's process group is killed when it exits, which a daemon that calls setsid escapes", "reason", err)
		return
	}
	a.cgroups = cg
	a.log.Info("exec callbacks: each command runs in a cgroup of its own, killed when it exits", "dir", cg.Dir())
}

// execCgroupName names the directory of the exec runs' cgroups after the state file, which no two
// agents share and the next start of this agent uses again; without one, after the process.
func execCgroupName(statePath string) string {
	if statePath == "" {
		return fmt.Sprintf("hotplug-agent-exec-pid%d", os.Getpid())
	}
	if abs, err := filepath.Abs(statePath); err == nil {
		statePath = abs
	}
	sum := sha256.Sum256([]byte(statePath))
	return "hotplug-agent-exec-" + hex.EncodeToString(sum[:6])
}

// changeLog is the log action of a two-phase callback: one line per phase; it never vetoes.
func changeLog(l *slog.Logger) notify.ChangeCallback {
	return func(ctx context.Context, n notify.ChangeNotification, _ any) error {
		attrs := []slog.Attr{
			slog.String("phase", n.State.String()),
			slog.String("interface_class", notify.ClassName(n.InterfaceClassGUID)),
			slog.String("symbolic_link", n.SymbolicLinkName),
			slog.String("cause", string(n.Cause)),
		}
		if n.Status != nil {
			attrs = append(attrs, slog.String("status", n.Status.Error()))
		}
		l.LogAttrs(ctx, slog.LevelInfo, "processor change", attrs...)
		return nil
	}
}

// targetLog is the log action of a target-device callback: one line per event; it never vetoes.
func targetLog(l *slog.Logger) notify.TargetCallback {
	return func(ctx context.Context, n notify.TargetNotification, _ any) error {
		attrs := []slog.Attr{
			slog.String("event", notify.EventName(n.Event)),
			slog.String("symbolic_link", n.SymbolicLinkName),
			slog.Bool("requested", n.Requested),
		}
		if n.Requested {
			attrs = append(attrs, slog.Int("requester_uid", n.Requester.UID), slog.Int("requester_pid", n.Requester.PID))
		}
		if n.Status != nil {
			attrs = append(attrs, slog.String("status", n.Status.Error()))
		}
		l.LogAttrs(ctx, slog.LevelInfo, "target device change", attrs...)
		return nil
	}
}

// handleControl carries out one item of a control request. A memory device goes block by
// block, with a progress line for each (deviceRequest); ctx ending stops it.
func (a *Agent) handleControl(ctx context.Context, op string, t control.Target, peer control.Peer, progress func(control.Progress)) control.Result {
	req := notify.Requester{UID: peer.UID, PID: peer.PID}
	if t.Kind == control.KindMemoryDevice {
		d, ok := a.memdevs.Device(t.ID)
		if !ok {
			return control.NewResult(t, control.NotFound, fmt.Errorf("memory-device %s: no such memory device (hotplug-agent list shows each block's device)", t.ID))
		}
		return a.deviceRequest(ctx, d, op == control.OpOnline, req, progress)
	}
	n, err := t.Number()
	if err != nil {
		return control.NewResult(t, control.NotFound, err)
	}
	res := a.onliner.Request(ctx, online.Resource{Memory: t.Kind == control.KindMemory, Number: n},
		op == control.OpOnline, req)
	r := control.NewResult(t, string(res.Outcome), res.Err)
	if t.Kind == control.KindMemory && op == control.OpOffline && res.Changed {
		r.FreedBytes, r.FreedBlocks = a.blockSize, 1
	}
	return r
}

// deviceRequest takes every block of memory device d offline, highest first, or online,
// lowest first, each as `offline memory N` would (its target registrations are asked, and may
// veto), and calls progress after each block. The device is taken offline whole or not at all:
// when one block cannot go (a veto, the kernel's error: memory in use), or ctx ends (the client
// cancelled, the deadline passed: the block in the kernel's hands is stopped there), the blocks
// this request took offline are brought back online, each with a progress line marked rollback,
// and the result is that block's error. A successful offline says how much memory it freed. It
// blocks until done.
func (a *Agent) deviceRequest(ctx context.Context, d memdev.Device, up bool, req notify.Requester, progress func(control.Progress)) control.Result {
	t := control.Target{Kind: control.KindMemoryDevice, ID: d.ID}
	blocks := slices.Clone(d.Blocks)
	state := control.OpOnline
	if !up {
		slices.Reverse(blocks)
		state = control.OpOffline
	}
	var done int      // blocks in the state asked for
	var changed []int // blocks this request changed
	var freed uint64
	for _, b := range blocks {
		start := time.Now()
		var res online.Result
		begun := ctx.Err() == nil
		if begun {
			res = a.onliner.Request(ctx, online.Resource{Memory: true, Number: b}, up, req)
		} else {
			res = online.Result{Outcome: online.Failed, Err: fmt.Errorf("memory %d: not begun: %w", b, context.Cause(ctx))}
		}
		if res.Outcome == online.Success {
			done++
			if res.Changed {
				changed = append(changed, b)
				if !up {
					freed += a.blockSize
				}
			}
		}
		if begun {
			p := control.NewProgress(d.ID, b, state, string(res.Outcome), res.Err)
			p.Done, p.Of, p.FreedBytes, p.ElapsedMS = done, len(blocks), freed, time.Since(start).Milliseconds()
			progress(p)
		}
		if res.Outcome == online.Success {
			continue
		}
		err := fmt.Errorf("memory-device %s: %w", d.ID, res.Err)
		if !up && len(changed) > 0 {
			// The rollback is not the request's to cancel: the device must be whole again.
			bctx := context.WithoutCancel(ctx)
			var back, stuck []int
			for _, r := range slices.Backward(changed) {
				start := time.Now()
				res := a.onliner.Request(bctx, online.Resource{Memory: true, Number: r}, true, req)
				if res.Outcome == online.Success {
					back = append(back, r)
					done--
					freed -= a.blockSize
				} else {
					stuck = append(stuck, r)
					a.log.Error("memory device: a block taken offline could not be brought back online", "device", d.ID, "block", r, "err", res.Err)
				}
				p := control.NewProgress(d.ID, r, control.OpOnline, string(res.Outcome), res.Err)
				p.Rollback = true
				p.Done, p.Of, p.FreedBytes, p.ElapsedMS = done, len(blocks), freed, time.Since(start).Milliseconds()
				progress(p)
			}
			slices.Sort(back)
			if len(back) > 0 {
				err = fmt.Errorf("%w (memory blocks %s, taken offline first, are online again)", err, sysfs.FormatCPUList(back))
			}
			if len(stuck) > 0 {
				slices.Sort(stuck)
				err = fmt.Errorf("%w (memory blocks %s, taken offline first, could not be brought back online)", err, sysfs.FormatCPUList(stuck))
			}
		}
		r := control.NewResult(t, string(res.Outcome), err)
		if !up && freed > 0 {
			r.FreedBytes, r.FreedBlocks = freed, int(freed/a.blockSize)
		}
		return r
	}
	r := control.NewResult(t, control.Success, nil)
	if !up {
		r.FreedBytes, r.FreedBlocks = freed, len(changed)
	}
	return r
}

// onlineOf returns the online interfaces of class in fs, for the add-existing replay.
func onlineOf(fs sysfs.FS, class uuid.UUID) ([]notify.Interface, error) {
	present, err := state.Present(fs)
	if err != nil {
		return nil, err
	}
	var out []notify.Interface
	for _, i := range present {
		if i.ClassGUID == class && (i.State == "online" || i.State == "going-offline") {
			out = append(out, i)
		}
	}
	return out, nil
}

// Addrs are the addresses the HTTP server listens on.
func (a *Agent) Addrs() []net.Addr {
	out := make([]net.Addr, len(a.listeners))
	for i, l := range a.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Registry is the agent's notification registry, for code built into the agent.
func (a *Agent) Registry() *notify.Registry { return a.registry }

// Register is IoRegisterPlugPlayNotification for code built into the agent: Registry.Register,
// except that a registration for GUIDDeviceMemory with notify.FlagMemoryDevices goes to the
// memory-device registry (one arrival per memory device instead of one per block). It does not
// block on callbacks and is safe for concurrent use.
func (a *Agent) Register(category notify.EventCategory, flags notify.Flags, class uuid.UUID, owner string, cb notify.Callback, userCtx any) (*notify.Entry, error) {
	if flags&notify.FlagMemoryDevices == 0 {
		return a.registry.Register(category, flags, class, owner, cb, userCtx)
	}
	if class != notify.GUIDDeviceMemory {
		return nil, fmt.Errorf("register %s: FlagMemoryDevices is for the memory class, not %s", owner, notify.ClassName(class))
	}
	return a.devices.Register(category, flags&^notify.FlagMemoryDevices, class, owner, cb, userCtx)
}

// Unregister is IoUnregisterPlugPlayNotification for an entry from Register, whichever registry
// holds it. It does not block on callbacks and is safe for concurrent use.
func (a *Agent) Unregister(e *notify.Entry) error {
	if err := a.registry.Unregister(e); !errors.Is(err, notify.ErrUnregistered) {
		return err
	}
	return a.devices.Unregister(e)
}

// MemoryDevices returns the memory devices announced as present. It does not block.
func (a *Agent) MemoryDevices() []notify.Interface { return a.memdevs.Announced() }

// Run serves HTTP and follows the kernel's uevents until ctx is cancelled, then shuts down:
// streams end, the other HTTP requests get a second before their connections are closed, and
// meanwhile callbacks in flight get ShutdownGrace to finish. Under systemd it reports READY=1
// once everything runs, feeds the watchdog while the event loop is healthy, and reports
// STOPPING=1 on the way out. It blocks; call it once.
func (a *Agent) Run(ctx context.Context) error {
	// Before anything serves /healthz, which reads stuckAfter.
	interval := watchdogInterval(a.log)
	if interval > 0 {
		a.stuckAfter = min(a.stuckAfter, interval)
	}
	streams, stopStreams := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStreams()
	servers := make([]*http.Server, len(a.listeners))
	serveErr := make(chan error, len(a.listeners))
	webLog := a.log.With("component", "web")
	for i, l := range a.listeners {
		l = a.conns.Listener(l)
		// WriteTimeout: a handler whose client stops reading fails its write rather than
		// blocking in it for ever (such a connection is never idle); /events moves the deadline
		// forward before each batch of writes.
		srv := &http.Server{
			Handler:           a.handler,
			ReadHeaderTimeout: 10 * time.Second,
			MaxHeaderBytes:    maxHeaderBytes,
			IdleTimeout:       a.o.IdleTimeout,
			WriteTimeout:      a.o.WriteTimeout,
			ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
			BaseContext:       func(net.Listener) context.Context { return streams },
		}
		servers[i] = srv
		go func() {
			err := toolkit.Serve(l, srv, &toolkit.FlagConfig{WebConfigFile: &a.o.WebConfigFile}, webLog)
			if !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
	}

	loopCtx, stopLoop := context.WithCancel(ctx)
	defer stopLoop()
	loopErr := make(chan error, 1)
	go func() { loopErr <- a.loop(loopCtx) }()
	var wg sync.WaitGroup
	saverCtx, stopSaver := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSaver()
	wg.Go(func() { a.saver(saverCtx) })
	wg.Go(func() { a.onliner.Run(loopCtx) })
	wg.Go(func() { a.memdevs.Run(loopCtx) })
	if a.control != nil {
		wg.Go(func() {
			if err := a.control.Serve(loopCtx); err != nil {
				a.log.Error("control socket failed; hotplug-agent online, offline and reload cannot reach the agent until it restarts", "err", err)
			}
		})
	}
	notifyReady(a.log)
	if interval > 0 {
		wg.Go(func() { a.watchdog(loopCtx, interval) })
	}
	addrs := make([]string, len(a.listeners))
	for i, l := range a.listeners {
		addrs[i] = l.Addr().String()
	}
	rcvbuf := 0
	if c, ok := a.source.(interface{ ReceiveBufferBytes() int }); ok {
		rcvbuf = c.ReceiveBufferBytes()
	}
	a.log.Info("agent ready", "listen", strings.Join(addrs, ","), "sysfs", a.o.SysfsPath,
		"receive_buffer_bytes", rcvbuf, "interfaces", len(a.registry.Active()))

	var err error
	loopDone := false
	select {
	case <-ctx.Done():
	case err = <-loopErr:
		loopDone = true
	case err = <-serveErr:
		err = fmt.Errorf("web: %w", err)
	}
	notifyStopping(a.log)
	a.log.Info("agent stopping")
	stopLoop() // the loop, and what runs with it (the control socket, its reloads included)
	// No reload from now on: one in progress ends first (its context ends with the loop's, or
	// with Run's), so that it registers nothing after the registries stop.
	a.stopping.Store(true)
	a.reloadMu.Lock()
	a.reloadMu.Unlock() // only to wait for a reload in progress
	// Callbacks in flight get the grace, from now, and nothing more starts, in every registry at
	// once, while the loop finishes its batch: what is queued, and what the loop still
	// publishes, stays for the last save, to be given at the next start.
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.o.ShutdownGrace)
	defer cancel()
	callbacksDone := make(chan struct{})
	go func() {
		defer close(callbacksDone)
		a.stopCallbacks(shutdown)
	}()
	if !loopDone {
		select {
		case e := <-loopErr:
			if err == nil {
				err = e
			}
		case <-shutdown.Done():
			a.log.Error("event loop stuck at shutdown; leaving it behind", "grace", a.o.ShutdownGrace)
		}
	}
	stopStreams()
	a.source.Close()
	// The HTTP servers get a short budget of their own, then lose their connections, beside the
	// callbacks' grace rather than before it: a client that stops reading holds its handler in
	// a write until WriteTimeout, and must neither hold the shutdown nor eat into the grace.
	webDone := make(chan struct{})
	go func() {
		defer close(webDone)
		a.shutdownWeb(ctx, servers)
	}()
	<-callbacksDone
	<-webDone
	stopSaver()
	wg.Wait()
	a.restoreKernel(shutdown)
	a.stopCpusets()
	if e := a.saveState(true, true); e != nil {
		a.log.Error("state file not saved at shutdown", "err", e)
	}
	// Only now: the last save holds the notifications still queued for the callbacks.
	closing, cancelClosing := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancelClosing()
	if e := a.registry.Close(closing); e != nil {
		a.log.Warn("callbacks still running at shutdown", "err", e)
	}
	if e := a.devices.Close(closing); e != nil {
		a.log.Warn("memory device callbacks still running at shutdown", "err", e)
	}
	a.closeCgroups()
	return err
}

// stopCallbacks stops every registry at once: nothing more starts, and the callbacks in flight
// get until ctx ends to finish. It blocks until they have, or ctx has ended.
func (a *Agent) stopCallbacks(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range []struct {
		what string
		stop func(context.Context) error
	}{
		{"callbacks", a.registry.Stop},
		{"memory device callbacks", a.devices.Stop},
		{"two-phase callbacks", a.changes.Close},
		{"target device callbacks", a.targets.Close},
	} {
		wg.Go(func() {
			if e := r.stop(ctx); e != nil {
				a.log.Warn(r.what+" still running at shutdown", "err", e)
			}
		})
	}
	wg.Wait()
}

// shutdownWeb shuts the HTTP servers down: their listeners close and /events streams end at
// once; the other requests in progress get webShutdownBudget (at most ShutdownGrace) to
// finish, then the connections left are closed, their handlers' writes failing. It blocks until
// then.
func (a *Agent) shutdownWeb(ctx context.Context, servers []*http.Server) {
	budget, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(webShutdownBudget, a.o.ShutdownGrace))
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Go(func() {
			if err := srv.Shutdown(budget); err != nil {
				a.log.Warn("web shutdown: requests still in progress; closing their connections", "err", err)
			}
			srv.Close()
		})
	}
	wg.Wait()
}

// maxBatch is the most uevents the loop takes from the socket's queue before it handles them.
// What a burst costs once (the read of cpu/online, a wake-up of each registration, several
// microseconds each on a VM) is shared by this many; the first uevent's callback waits for the
// others to be handled, well under a millisecond for 256.
const maxBatch = 256

// queuedSource is a Source that can return what its queue holds without waiting (*udev.Conn).
type queuedSource interface {
	ReadQueued() (udev.Event, bool, error)
}

// loop reads uevents and publishes what they change until ctx ends or the socket fails for good.
// It takes what the socket's queue holds after each wait, up to maxBatch uevents, and handles
// them in order as a batch: their CPU transitions are confirmed with one read of sysfs (see
// state.Tracker.BeginBatch).
func (a *Agent) loop(ctx context.Context) error {
	defer a.tracker.Close() // the batches' cpu/online
	backoff := time.Millisecond
	queued, _ := a.source.(queuedSource)
	batch := make([]udev.Event, 0, maxBatch)
	for {
		rctx, cancel := ctx, context.CancelFunc(nil)
		if a.resyncOwed != "" {
			if wait, owed := a.resyncDue(time.Now()); owed {
				rctx, cancel = context.WithTimeout(ctx, wait) // a uevent or the next try, first
			}
		}
		a.busy.Store(0)
		ev, err := a.source.Read(rctx)
		if cancel != nil {
			cancel()
		}
		now := time.Now()
		a.busy.Store(now.UnixNano())
		switch {
		case err == nil:
			backoff = time.Millisecond
		case ctx.Err() != nil:
			return nil
		case rctx.Err() != nil:
			continue // a resync that failed is due again
		case errors.Is(err, udev.ErrOverflow):
			a.overflowed(now)
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
		batch = append(batch[:0], ev)
		var after error // what ended the batch, other than an empty queue
		if queued != nil {
			for len(batch) < maxBatch {
				ev, ok, err := queued.ReadQueued()
				if err != nil || !ok {
					after = err
					break
				}
				batch = append(batch, ev)
			}
			a.tracker.BeginBatch()
		}
		// A registration that keeps up is woken once for the batch, at its end, not once per
		// notification (handle never blocks).
		a.registry.HoldWakes()
		for i := range batch {
			a.handle(ctx, &batch[i])
		}
		a.publish(a.tracker.EndBatch())
		a.registry.ReleaseWakes()
		clear(batch) // hold no uevent's buffer while waiting for the next
		switch {
		case after == nil || ctx.Err() != nil || errors.Is(after, net.ErrClosed):
			// Nothing more, or the end: the next Read returns what ends the loop.
		case errors.Is(after, udev.ErrOverflow):
			a.overflowed(time.Now())
		default: // the next Read reports it again if it lasts, and backs off
			a.log.Warn("uevent read failed", "err", after)
		}
	}
}

// overflowed rescans sysfs after the socket's queue overflowed, at now.
func (a *Agent) overflowed(now time.Time) {
	a.metrics.NetlinkOverflows.Inc()
	a.log.Warn("uevents lost: netlink receive queue overflowed; rescanning sysfs")
	a.resync(state.ReasonOverflow, 0, now)
}

// handle counts, checks and applies one uevent, and publishes what it changes.
func (a *Agent) handle(ctx context.Context, ev *udev.Event) {
	a.metrics.Uevent(ev.Subsystem, ev.Action)
	if state.Suspicious(ev.Subsystem, ev.DevPath) {
		a.metrics.Rejected("devpath")
		a.log.Warn("uevent with a device path outside /devices/system dropped", "devpath", ev.DevPath, "seqnum", ev.Seqnum)
		return
	}
	kind, n := state.Classify(ev.Subsystem, ev.DevPath)
	if kind != state.KindNone && a.log.Enabled(ctx, slog.LevelDebug) {
		// Guarded: building the attributes costs allocations on the hot path (the profile in
		// BENCHMARKS.md).
		a.log.Debug("uevent", "action", ev.Action, "devpath", ev.DevPath, "seqnum", ev.Seqnum, "synthetic", ev.Synthetic())
	}
	out := a.tracker.Handle(ev)
	a.publish(out.Notes)
	// Only the kernel's add of a device that was not there, and that sysfs shows, is a
	// hot-add; only its remove of one that sysfs no longer shows is a hot-remove.
	if kind == state.KindMemory {
		switch {
		case out.HotAdd:
			a.memdevs.Added(n, ev.ReadAt)
		case out.HotRemove:
			a.memdevs.Removed(n, ev.ReadAt)
			a.onliner.RemovedMemoryBlock(n)
		}
	}
	if out.HotAdd || out.HotRemove {
		a.requestSave() // what is present is in the state file
	}
	if out.HotAdd {
		// The arrival follows the online uevent the write causes, as Windows announces a
		// processor only once threads can run on it; with two-phase registrations, AddStart
		// comes before the write and AddComplete before the arrival.
		switch kind {
		case state.KindCPU:
			a.onliner.AddCPU(n, ev.Seqnum, ev.ReadAt)
		case state.KindMemory:
			a.onliner.AddMemoryBlock(n, ev.Seqnum, ev.ReadAt)
		}
	}
	if out.Gap {
		a.resync(state.ReasonSeqnumGap, ev.Seqnum, ev.ReadAt)
	}
}

// resync rescans sysfs and publishes what the lost events would have said.
func (a *Agent) resync(reason string, seqnum uint64, readAt time.Time) {
	a.metrics.Resyncs.WithLabelValues(reason).Inc()
	before := a.tracker.Present()
	var err error
	for attempt := range 3 {
		var notes []notify.Notification
		resync := a.tracker.Resync
		if reason == state.ReasonSeqnumGap {
			resync = a.tracker.ResyncGap
		}
		if notes, err = resync(seqnum, readAt); err == nil {
			if len(notes) > 0 {
				a.log.Info("resync found changes", "reason", reason, "notifications", len(notes))
			}
			a.publish(notes)
			a.resyncOwed, a.resyncWait = "", 0
			if now := a.tracker.Present(); before != nil && now != nil {
				a.hotAdded(newlyPresent(before.CPUs, before.MemoryBlocks, now),
					"CPUs and memory blocks were hot-added while uevents were lost")
				a.hotRemoved(missing(before.MemoryBlocks, now.MemoryBlocks), readAt)
			}
			return
		}
		time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
	}
	a.resyncOwed = reason
	a.resyncWait = min(max(2*a.resyncWait, time.Second), maxResyncWait)
	a.resyncAt = time.Now().Add(a.resyncWait)
	a.log.Error("resync failed; trying again", "reason", reason, "err", err, "in", a.resyncWait)
}

// maxResyncWait is the longest wait between tries of a resync that keeps failing.
const maxResyncWait = 30 * time.Second

// resyncDue reports how long the loop may wait for a uevent before it tries again a resync that
// failed (resyncOwed), and tries it when that time has come; ok is false when none is owed.
func (a *Agent) resyncDue(now time.Time) (wait time.Duration, ok bool) {
	if a.resyncOwed == "" {
		return 0, false
	}
	if now.Before(a.resyncAt) {
		return a.resyncAt.Sub(now), true
	}
	a.resync(a.resyncOwed, 0, now)
	return a.resyncAt.Sub(now), a.resyncOwed != ""
}

// publish hands notes to the registry through the gate, which holds back those of a CPU or
// block the onliner is changing until its participants have been told.
func (a *Agent) publish(notes []notify.Notification) {
	if len(notes) > 0 {
		a.gate.Publish(notes)
	}
}

// publishOne publishes one notification, counts it and asks for the state file to be saved. The
// gate calls it, in order.
func (a *Agent) publishOne(n notify.Notification) bool {
	if !a.registry.Publish(n) {
		return false
	}
	a.memdevs.Changed(n)
	a.metrics.Notified(&n)
	if n.InterfaceClassGUID == notify.GUIDDeviceMemory && n.IsArrival() && !n.Interface.IsMemoryDevice() {
		a.metrics.MemoryOnlined(a.onliner.Onlined(n.Interface.Number), n.Interface.Zones)
	}
	a.requestSave()
	return true
}

// publishDevice publishes a memory-device notification and asks for the state file to be saved.
// The memory-device tracker calls it, in order.
func (a *Agent) publishDevice(n notify.Notification) bool {
	if !a.devices.Publish(n) {
		return false
	}
	a.metrics.DeviceNotified(&n)
	a.requestSave()
	return true
}

// ChangeRegistry is the agent's two-phase registry, for code built into the agent.
func (a *Agent) ChangeRegistry() *notify.ChangeRegistry { return a.changes }

// TargetRegistry is the agent's target-device registry, for code built into the agent.
func (a *Agent) TargetRegistry() *notify.TargetRegistry { return a.targets }

// healthy reports an event loop stuck on the uevents it read for longer than stuckAfter, or
// behind the kernel: uevents waiting in its socket's queue that long, without it catching up.
func (a *Agent) healthy() error {
	now := time.Now()
	if since := a.busy.Load(); since != 0 {
		if d := now.Sub(time.Unix(0, since)); d > a.stuckAfter {
			return fmt.Errorf("event loop busy with the uevents it read %s ago", d.Round(time.Millisecond))
		}
	}
	if d := a.backlog(now); d > a.stuckAfter {
		return fmt.Errorf("event loop behind the kernel: uevents have waited in its queue for %s", d.Round(time.Millisecond))
	}
	return nil
}

// backlog is how long the uevent socket's queue has held uevents without the loop catching up
// (udev.Conn.Behind); 0 for a source that cannot tell.
func (a *Agent) backlog(now time.Time) time.Duration {
	if b, ok := a.source.(interface{ Behind(time.Time) time.Duration }); ok {
		return b.Behind(now)
	}
	return 0
}

// Reload reads the configuration again (Options.LoadConfig) and applies what can change while
// the agent runs: the configured callbacks and log_notifications, and the online policy. A
// callback whose definition is unchanged is not touched, so it, like every /events subscriber,
// misses nothing and gets nothing twice; one removed is unregistered (IoUnregisterPlugPlay-
// NotificationEx: its callback in flight gets ShutdownGrace to finish); one added is
// registered; one changed is both, and starts afresh as a new registration (with
// include_existing, from the interfaces active now). What else changed (two_phase,
// max_exec_processes) takes effect at the next start, and the log says so. A configuration that
// cannot be read or is invalid is refused with an error saying why, and the running one stays.
// So does one with a callback that cannot be made (a cpuset root that is not there, systemd out
// of reach): what the reload did is undone (see rollback), and the error says why. Reload
// blocks until done; it is safe for concurrent use (reloads are made one at a time).
func (a *Agent) Reload(ctx context.Context) error {
	if a.o.LoadConfig == nil {
		return errors.New("no configuration to read again")
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.stopping.Load() {
		return errStopping
	}
	notifyReloading(a.log)
	defer notifyReady(a.log)
	cfg, err := a.o.LoadConfig()
	if err == nil {
		err = cfg.Online.Policy().Validate()
	}
	if err == nil {
		err = a.kernel.Sync(cfg.Online.Policy())
	}
	if err != nil {
		a.log.Error("configuration refused; the running one stays", "err", err)
		return err
	}
	old := a.o.Config
	var later []string
	if !reflect.DeepEqual(old.TwoPhase, cfg.TwoPhase) {
		later = append(later, "two_phase")
	}
	if old.ExecLimit() != cfg.ExecLimit() {
		later = append(later, "max_exec_processes")
	}

	grace, cancel := context.WithTimeout(ctx, a.o.ShutdownGrace)
	defer cancel()
	var removed, added, changed []string
	next := map[string]config.Callback{}
	for _, c := range cfg.Callbacks {
		next[c.Name] = c
	}
	// undone holds the definitions unregistered here, for a rollback.
	undone := map[string]config.Callback{}
	for _, name := range slices.Sorted(maps.Keys(a.configured)) {
		was := a.configured[name]
		now, ok := next[name]
		if ok && reflect.DeepEqual(was.def, now) {
			continue
		}
		a.unregisterConfigured(grace, name, "reload: a callback unregistered was still running")
		undone[name] = was.def
		if ok {
			changed = append(changed, name)
		} else {
			removed = append(removed, name)
		}
	}
	if a.stopping.Load() {
		// The agent stops: nothing is registered after its registries stop. What was
		// unregistered stays so; the next start reads the file anew.
		a.log.Warn("reload interrupted: the agent is stopping", "unregistered", strings.Join(slices.Sorted(maps.Keys(undone)), ","))
		return errStopping
	}
	hadLog := a.logEntry != nil
	if a.logEntry != nil && !cfg.LogEnabled() {
		if err := a.registry.Retire(grace, a.logEntry); err != nil {
			a.log.Warn("reload: the log callback was still running", "err", err)
		}
		a.logEntry = nil
		removed = append(removed, logOwner)
	}
	var failed []error
	if a.logEntry == nil && cfg.LogEnabled() {
		if err := a.registerLog(); err != nil {
			failed = append(failed, err)
		} else {
			added = append(added, logOwner)
		}
	}
	policy := cfg.Online.Policy()
	var registered []string
	for _, c := range cfg.Callbacks {
		if _, ok := a.configured[c.Name]; ok {
			continue
		}
		if err := a.registerCallback(c, policy); err != nil {
			failed = append(failed, err)
			continue
		}
		registered = append(registered, c.Name)
		if !slices.Contains(changed, c.Name) {
			added = append(added, c.Name)
		}
	}
	if len(failed) > 0 {
		err := errors.Join(failed...)
		a.rollback(grace, old, registered, undone, hadLog)
		a.log.Error("configuration refused: a callback could not be made; the running one stays", "err", err,
			"registered_again", strings.Join(slices.Sorted(maps.Keys(undone)), ","))
		return err
	}
	a.prevCpusets = nil
	a.onliner.SetPolicy(policy)
	a.onliner.CheckOthers()
	a.o.Config = cfg
	attrs := []any{"added", strings.Join(added, ","), "removed", strings.Join(removed, ","), "changed", strings.Join(changed, ","),
		"online_cpu", policy.CPU, "online_memory", policy.Memory}
	if len(later) > 0 {
		attrs = append(attrs, "at_next_start", strings.Join(later, ","))
	}
	a.log.Info("configuration reloaded", attrs...)
	return nil
}

// errStopping is Reload's error once Run is shutting down.
var errStopping = errors.New("the agent is stopping")

// unregisterConfigured unregisters the configured callback name (its callback in flight gets
// until ctx ends to finish) and keeps what it remembers for the next registration of that name
// (carryMemory). reloadMu is held.
func (a *Agent) unregisterConfigured(ctx context.Context, name, warning string) {
	carry := a.carryMemory(name)
	if err := a.configured[name].unregister(ctx); err != nil {
		a.log.Warn(warning, "callback", name, "err", err)
	}
	carry()
	delete(a.configured, name)
}

// rollback undoes a reload that could not make one of its callbacks, so that the configuration
// old stays in force: the callbacks the reload registered are unregistered, those it unregistered
// (undone) are registered again from their definitions, with what they remembered (a cpuset
// callback's CPUs owed to its cgroups) and as new registrations, so they start afresh as a
// changed callback does; the log callback is as it was (hadLog), and the kernel's onlining
// settings are those of old's policy again. What cannot be put back is logged. reloadMu is held.
func (a *Agent) rollback(ctx context.Context, old *config.Config, registered []string, undone map[string]config.Callback, hadLog bool) {
	for _, name := range registered {
		a.unregisterConfigured(ctx, name, "reload undone: a callback unregistered was still running")
	}
	policy := old.Online.Policy()
	for _, name := range slices.Sorted(maps.Keys(undone)) {
		if err := a.registerCallback(undone[name], policy); err != nil {
			a.log.Error("reload undone: a callback of the running configuration could not be registered again", "callback", name, "err", err)
		}
	}
	switch {
	case hadLog && a.logEntry == nil:
		if err := a.registerLog(); err != nil {
			a.log.Error("reload undone: the log callback could not be registered again", "err", err)
		}
	case !hadLog && a.logEntry != nil:
		if err := a.registry.Retire(ctx, a.logEntry); err != nil {
			a.log.Warn("reload undone: the log callback was still running", "err", err)
		}
		a.logEntry = nil
	}
	if err := a.kernel.Sync(policy); err != nil {
		a.log.Error("reload undone: the kernel's onlining settings could not be put back", "err", err)
	}
	a.prevCpusets = nil
}
