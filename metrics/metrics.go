// Package metrics holds the agent's Prometheus metrics. Their names and labels are part of the
// agent's interface: dashboards and alerts depend on them.
package metrics

import (
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

const namespace = "hotplug_agent"

// latencyBuckets span 10 µs to 10 s: the kernel-to-callback path is sub-millisecond when all is
// well, and a stuck callback shows up in the upper buckets.
var latencyBuckets = [...]float64{
	0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// Metrics is the agent's set of collectors. All methods are safe for concurrent use and never block.
type Metrics struct {
	Notifications    *prometheus.CounterVec
	DispatchLatency  *DurationVec
	CallbackDuration *DurationVec
	CallbackErrors   *prometheus.CounterVec
	QueueOverflows   *prometheus.CounterVec
	Uevents          *prometheus.CounterVec
	UeventsRejected  *prometheus.CounterVec
	NetlinkOverflows prometheus.Counter
	Resyncs          *prometheus.CounterVec
	Interfaces       *prometheus.GaugeVec
	StreamCuts       prometheus.Counter
	// HTTPRefused counts the HTTP connections and /events subscribers refused at their limits,
	// by reason: connections, subscribers (web.RefusedConnections, web.RefusedSubscribers).
	HTTPRefused *prometheus.CounterVec
	// DeviceNotifications counts the memory-device notifications (notify.FlagMemoryDevices),
	// apart from Notifications: the blocks of a device are counted there already.
	DeviceNotifications *prometheus.CounterVec
	OnlineAttempts      *prometheus.CounterVec
	OnlineDuration      *prometheus.HistogramVec
	// MemoryBlocksOnlined counts the memory blocks that came online, by who onlined them (agent,
	// kernel, other) and the zone they joined (movable, kernel, unknown).
	MemoryBlocksOnlined *prometheus.CounterVec
	// ZonePlans counts the memory blocks the zone planner decided, by the kind of their device
	// (acpi, virtio-mem, none) and the zone it chose (movable, kernel).
	ZonePlans *prometheus.CounterVec
	// CpusetWrites counts the cpuset callbacks' writes, by callback, the configured cgroup
	// pattern that names the cgroup, and result (ok, error).
	CpusetWrites *prometheus.CounterVec
	// SystemdWrites counts the systemd callbacks' runtime property changes, by callback, unit
	// and result (ok, error).
	SystemdWrites *prometheus.CounterVec
	BuildInfo     *prometheus.GaugeVec
	// Errors keeps each callback's last error and the recent errors' times, for the status
	// page.
	Errors *ErrorLog

	// The series of the hot path, looked up once: WithLabelValues checks and hashes the values
	// and takes the vector's lock on every call, a fifth of the agent's CPU per event before.
	// Those whose labels come from a uevent or are the agent's classes and events are made at
	// start, one per allowed value.
	uevents   [len(subsystems)][len(actions)]prometheus.Counter
	rejected  [len(rejectReasons)]prometheus.Counter
	notes     [len(classes)][len(events)]prometheus.Counter // class, event
	ifaces    [len(classes)]prometheus.Gauge                // class
	callbacks cache[string, callbackSeries]                 // owner
}

// classes and events are those of the agent's notifications, whose series are made at start.
var (
	classes = [...]uuid.UUID{notify.GUIDDeviceProcessor, notify.GUIDDeviceMemory}
	events  = [...]uuid.UUID{notify.GUIDDeviceInterfaceArrival, notify.GUIDDeviceInterfaceRemoval}
)

// The values of labels taken from uevents: anything else counts as "other", so that no uevent
// can add a series (a flood of distinct subsystems once made thousands).
var (
	subsystems = [...]string{"cpu", "memory", "other"}
	actions    = [...]string{"add", "remove", "change", "move", "online", "offline", "bind", "unbind", "other"}
	// rejectReasons are those of hotplug_agent_uevents_rejected_total.
	rejectReasons = [...]string{"sender", "malformed", "truncated", "devpath", "seqnum", "unconfirmed", "other"}
	// onliners, zones and planDevices are the label values of hotplug_agent_memory_blocks_onlined_total
	// and hotplug_agent_zone_plan_blocks_total; the last of each is what any other value counts as.
	onliners    = [...]string{"agent", "kernel", "other"}
	zones       = [...]string{"movable", "kernel", "unknown"}
	planDevices = [...]string{"acpi", "virtio-mem", "none"}
)

// indexOf returns the index of v in values, or the last index ("other").
func indexOf(values []string, v string) int {
	for i, s := range values[:len(values)-1] {
		if s == v {
			return i
		}
	}
	return len(values) - 1
}

// callbackSeries are one registration's series.
type callbackSeries struct {
	latency, duration *Durations
	errors            prometheus.Counter
}

// cache holds the series of a vector by their label values, none of which comes from outside
// input (registration owners), so nothing is evicted. A sync.Map: a read takes no lock, which
// the event loop and the registrations' goroutines on other cores can do at once without sharing
// a written cache line (a read lock's counter is one), and an insert costs the same however many
// keys there are. Safe for concurrent use.
type cache[K comparable, V any] struct {
	m sync.Map // K -> V
}

// get returns the series of k, made by mk the first time (mk may run twice for one k when two
// goroutines race; the vector returns the same series both times).
func (c *cache[K, V]) get(k K, mk func(K) V) V {
	if v, ok := c.m.Load(k); ok {
		return v.(V)
	}
	v, _ := c.m.LoadOrStore(k, mk(k))
	return v.(V)
}

// New creates the collectors and registers them with reg. It panics only if reg already holds
// collectors of the same names (a programming error).
func New(reg prometheus.Registerer, version string) *Metrics {
	m := &Metrics{
		Notifications: counterVec("notifications_total",
			"Device interface notifications emitted, by interface class and event (arrival, removal).",
			"interface_class", "event"),
		DispatchLatency: newDurationVec("dispatch_latency_seconds",
			"Time from reading the uevent off the socket to the start of the callback, by callback."),
		CallbackDuration: newDurationVec("callback_duration_seconds", "Time a callback took to run, by callback."),
		CallbackErrors: counterVec("callback_errors_total",
			"Callbacks that returned an error or panicked, by callback.",
			"callback"),
		QueueOverflows: counterVec("callback_queue_overflows_total",
			"Times a registration fell so far behind that notifications were dropped (a device interface registration's queue replaced by a resynchronisation; a target-device registration's oldest queued call), by callback.",
			"callback"),
		Uevents: counterVec("uevents_total",
			"Kernel uevents received, by subsystem (cpu, memory, other) and action (other for one the kernel may add later).",
			"subsystem", "action"),
		UeventsRejected: counterVec("uevents_rejected_total",
			"Datagrams dropped: not originated by the kernel (sender), unparseable (malformed), cut short (truncated), naming a device path outside /devices/system (devpath), with a SEQNUM the kernel has not reached (seqnum), or a transition sysfs did not confirm (unconfirmed).",
			"reason"),
		NetlinkOverflows: counter("netlink_overflows_total",
			"Times the netlink receive queue overflowed (ENOBUFS) and events were lost; each is followed by a resync."),
		Resyncs: counterVec("resyncs_total",
			"Rescans of sysfs to recover lost events, by reason (overflow, seqnum_gap).",
			"reason"),
		Interfaces: gaugeVec("interfaces",
			"Active device interfaces (online CPUs, online memory blocks), by interface class.",
			"interface_class"),
		StreamCuts: counter("stream_subscribers_cut_total",
			"Event stream (/events) subscribers cut off for falling too far behind or not reading; they resume by event ID."),
		HTTPRefused: counterVec("http_refused_total",
			"HTTP connections refused beyond the connection limit (connections), and /events requests answered 503 beyond the subscriber limit (subscribers).",
			"reason"),
		DeviceNotifications: counterVec("memory_device_notifications_total",
			"Notifications of whole memory devices (a DIMM, a virtio-mem plug), by event.",
			"event"),
		CpusetWrites: counterVec("cpuset_writes_total",
			"Writes of cpuset.cpus or cpuset.mems by the cpuset callbacks, by callback, configured cgroup pattern and result (ok, error).",
			"callback", "cgroup", "result"),
		SystemdWrites: counterVec("systemd_writes_total",
			"Runtime changes of AllowedCPUs= or AllowedMemoryNodes= by the systemd callbacks, by callback, configured unit and result (ok, error).",
			"callback", "unit", "result"),
		OnlineAttempts: counterVec("online_attempts_total",
			"Writes of the online policy to bring a hot-added CPU or memory block online, by interface class and result (success, failure).",
			"interface_class", "result"),
		OnlineDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "online_duration_seconds",
			Help:    "Time from the kernel's add uevent to the resource being online by the online policy, by interface class.",
			Buckets: latencyBuckets[:],
		}, []string{"interface_class"}),
		MemoryBlocksOnlined: counterVec("memory_blocks_onlined_total",
			"Memory blocks that came online, by who onlined them (agent: the agent wrote their state; kernel: the kernel's auto-online was on; other: a udev rule, daxctl, an administrator) and the zone they joined (movable, kernel; unknown when it could not be read).",
			"onliner", "zone"),
		ZonePlans: counterVec("zone_plan_blocks_total",
			"Memory blocks the zone planner (online policy planned) brought online, by the kind of their memory device (acpi, virtio-mem, none) and the zone it chose (movable, kernel).",
			"device", "zone"),
		BuildInfo: gaugeVec("build_info",
			"Build information of the agent; the value is always 1.",
			"version", "goversion", "revision"),
	}
	m.Errors = NewErrorLog()
	reg.MustRegister(m.Notifications, m.DispatchLatency, m.CallbackDuration, m.CallbackErrors,
		m.QueueOverflows, m.Uevents, m.UeventsRejected, m.NetlinkOverflows, m.Resyncs, m.Interfaces,
		m.StreamCuts, m.HTTPRefused, m.OnlineAttempts, m.OnlineDuration, m.BuildInfo, m.DeviceNotifications,
		m.MemoryBlocksOnlined, m.ZonePlans, m.CpusetWrites, m.SystemdWrites)

	revision, goversion := "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goversion = bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	m.BuildInfo.WithLabelValues(version, goversion, revision).Set(1)
	for i, c := range classes {
		m.ifaces[i] = m.Interfaces.WithLabelValues(notify.ClassName(c))
		m.OnlineAttempts.WithLabelValues(notify.ClassName(c), "success")
		m.OnlineAttempts.WithLabelValues(notify.ClassName(c), "failure")
		for j, e := range events {
			m.notes[i][j] = m.Notifications.WithLabelValues(notify.ClassName(c), notify.EventName(e))
		}
	}
	m.NetlinkOverflows.Add(0)
	for _, e := range []string{"arrival", "removal"} {
		m.DeviceNotifications.WithLabelValues(e)
	}
	for _, r := range []string{"overflow", "seqnum_gap"} {
		m.Resyncs.WithLabelValues(r)
	}
	for i, r := range rejectReasons {
		m.rejected[i] = m.UeventsRejected.WithLabelValues(r)
	}
	for i, sub := range subsystems {
		for j, a := range actions {
			m.uevents[i][j] = m.Uevents.WithLabelValues(sub, a)
		}
	}
	for _, r := range []string{"connections", "subscribers"} {
		m.HTTPRefused.WithLabelValues(r)
	}
	for _, z := range zones {
		for _, o := range onliners {
			m.MemoryBlocksOnlined.WithLabelValues(o, z)
		}
		for _, d := range planDevices {
			if z != "unknown" {
				m.ZonePlans.WithLabelValues(d, z)
			}
		}
	}
	return m
}

// Presence counts the CPUs and memory blocks present in sysfs, online or not. It is called at
// each scrape and must be cheap.
type Presence func() (cpus, blocks int, err error)

// presentCollector exports hotplug_agent_present from a Presence read at scrape time, so a
// hot-added block left offline shows as present minus active.
type presentCollector struct {
	desc  *prometheus.Desc
	count Presence
}

// RegisterPresent registers hotplug_agent_present{interface_class} with reg.
func RegisterPresent(reg prometheus.Registerer, count Presence) {
	reg.MustRegister(presentCollector{
		desc: prometheus.NewDesc(namespace+"_present",
			"CPUs and memory blocks present in sysfs, online or not, by interface class.",
			[]string{"interface_class"}, nil),
		count: count,
	})
}

func (c presentCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c presentCollector) Collect(ch chan<- prometheus.Metric) {
	cpus, blocks, err := c.count()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(cpus), "processor")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(blocks), "memory")
}

// InitCallback creates the per-callback series of owner at zero, so that a query or an alert on
// a callback that has not failed yet finds a series.
func (m *Metrics) InitCallback(owner string) {
	m.CallbackErrors.WithLabelValues(owner)
	m.QueueOverflows.WithLabelValues(owner)
}

// Uevent counts one received uevent under its subsystem and action, or "other".
func (m *Metrics) Uevent(subsystem, action string) {
	m.uevents[indexOf(subsystems[:], subsystem)][indexOf(actions[:], action)].Inc()
}

// Rejected counts one dropped datagram under reason, or "other".
func (m *Metrics) Rejected(reason string) { m.rejected[indexOf(rejectReasons[:], reason)].Inc() }

// Notified counts one notification emitted by the agent and moves the interface gauge with it.
func (m *Metrics) Notified(n *notify.Notification) {
	var notes prometheus.Counter
	var ifaces prometheus.Gauge
	c, e := slices.Index(classes[:], n.InterfaceClassGUID), slices.Index(events[:], n.Event)
	if c >= 0 && e >= 0 {
		notes, ifaces = m.notes[c][e], m.ifaces[c] // the series made at start
	} else { // never emitted by the agent: under the names notify gives the GUIDs
		class := notify.ClassName(n.InterfaceClassGUID)
		notes, ifaces = m.Notifications.WithLabelValues(class, notify.EventName(n.Event)), m.Interfaces.WithLabelValues(class)
	}
	notes.Inc()
	if n.IsArrival() {
		ifaces.Inc()
	} else {
		ifaces.Dec()
	}
}

// DeviceNotified counts one memory-device notification.
func (m *Metrics) DeviceNotified(n *notify.Notification) {
	m.DeviceNotifications.WithLabelValues(notify.EventName(n.Event)).Inc()
}

// RegisterMemoryDevices registers hotplug_agent_memory_devices, the memory devices announced as
// present, read from count at scrape time.
func RegisterMemoryDevices(reg prometheus.Registerer, count func() int) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "memory_devices",
		Help: "Memory devices (a DIMM, a virtio-mem plug) announced as present: all their blocks online.",
	}, func() float64 { return float64(count()) }))
}

// RegisterBacklog registers hotplug_agent_uevent_backlog_seconds, read from backlog at scrape
// time: how long uevents have waited in the socket's queue without the event loop catching up.
func RegisterBacklog(reg prometheus.Registerer, backlog func() time.Duration) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "uevent_backlog_seconds",
		Help: "How long kernel uevents have waited in the agent's socket queue without the event loop catching up; 0 while it waits for the next one.",
	}, func() float64 { return backlog().Seconds() }))
}

// SetInterfaces sets the active interface counts from the active set.
func (m *Metrics) SetInterfaces(active []notify.Interface) {
	var cpus, blocks int
	for _, i := range active {
		switch i.ClassGUID {
		case notify.GUIDDeviceProcessor:
			cpus++
		case notify.GUIDDeviceMemory:
			blocks++
		}
	}
	m.Interfaces.WithLabelValues("processor").Set(float64(cpus))
	m.Interfaces.WithLabelValues("memory").Set(float64(blocks))
}

// CallbackStarted implements notify.Observer.
func (m *Metrics) CallbackStarted(owner string, _ *notify.Notification, latency time.Duration) {
	m.callback(owner).latency.Observe(latency)
}

// callback returns owner's series.
func (m *Metrics) callback(owner string) callbackSeries {
	return m.callbacks.get(owner, func(o string) callbackSeries {
		return callbackSeries{latency: m.DispatchLatency.With(o), duration: m.CallbackDuration.With(o),
			errors: m.CallbackErrors.WithLabelValues(o)}
	})
}

// ForOwner implements notify.OwnerObserver: owner's series, looked up once for a registration
// rather than at each of its callbacks.
func (m *Metrics) ForOwner(owner string) notify.Observer {
	return ownerMetrics{Metrics: m, series: m.callback(owner)}
}

// ownerMetrics are the Metrics of one owner's registrations.
type ownerMetrics struct {
	*Metrics
	series callbackSeries
}

// CallbackStarted implements notify.Observer for the owner.
func (o ownerMetrics) CallbackStarted(_ string, _ *notify.Notification, latency time.Duration) {
	o.series.latency.Observe(latency)
}

// CallbackDone implements notify.Observer for the owner.
func (o ownerMetrics) CallbackDone(owner string, _ *notify.Notification, took time.Duration, err error) {
	o.done(o.series, owner, took, err)
}

// CallbackDone implements notify.Observer.
func (m *Metrics) CallbackDone(owner string, _ *notify.Notification, took time.Duration, err error) {
	m.done(m.callback(owner), owner, took, err)
}

// done records a callback of owner that took took and returned err in its series cs.
func (m *Metrics) done(cs callbackSeries, owner string, took time.Duration, err error) {
	cs.duration.Observe(took)
	if err != nil {
		cs.errors.Inc()
		m.Errors.Record(owner, time.Now(), err)
	}
}

// OnlineAttempt counts one write of the online policy; a success also observes the time from
// the add uevent to the resource being online.
func (m *Metrics) OnlineAttempt(class, result string, sinceAdd time.Duration) {
	m.OnlineAttempts.WithLabelValues(class, result).Inc()
	if result == "success" {
		m.OnlineDuration.WithLabelValues(class).Observe(sinceAdd.Seconds())
	}
}

// MemoryOnlined counts one memory block that came online: onliner is "agent", "kernel" or
// "other" (any other value counts as "other"); validZones is the block's valid_zones ("Movable"
// counts as movable, DMA, DMA32, Normal and HighMem as kernel, anything else as unknown).
func (m *Metrics) MemoryOnlined(onliner, validZones string) {
	zone := "unknown"
	switch validZones {
	case "Movable":
		zone = "movable"
	case "DMA", "DMA32", "Normal", "HighMem":
		zone = "kernel"
	}
	m.MemoryBlocksOnlined.WithLabelValues(onliners[indexOf(onliners[:], onliner)], zone).Inc()
}

// ZonePlanned counts one memory block the zone planner decided: device is "acpi", "virtio-mem"
// or "none" (any other value counts as "none"), zone "movable" or "kernel".
func (m *Metrics) ZonePlanned(device, zone string) {
	if zone != "movable" {
		zone = "kernel"
	}
	m.ZonePlans.WithLabelValues(planDevices[indexOf(planDevices[:], device)], zone).Inc()
}

// InitCpuset makes the write series of a cpuset callback's patterns, at 0.
func (m *Metrics) InitCpuset(owner string, patterns []string) {
	for _, p := range patterns {
		m.CpusetWrites.WithLabelValues(owner, p, "ok")
		m.CpusetWrites.WithLabelValues(owner, p, "error")
	}
}

// CpusetWrite counts one write of the cpuset callback owner to a cgroup the pattern names;
// result is "ok" or "error".
func (m *Metrics) CpusetWrite(owner, pattern, result string) {
	m.CpusetWrites.WithLabelValues(owner, pattern, result).Inc()
}

// InitSystemd makes the write series of a systemd callback's units, at 0.
func (m *Metrics) InitSystemd(owner string, units []string) {
	for _, u := range units {
		m.SystemdWrites.WithLabelValues(owner, u, "ok")
		m.SystemdWrites.WithLabelValues(owner, u, "error")
	}
}

// SystemdWrite counts one property change of the systemd callback owner on a configured unit;
// result is "ok" or "error".
func (m *Metrics) SystemdWrite(owner, unit, result string) {
	m.SystemdWrites.WithLabelValues(owner, unit, result).Inc()
}

// Refused counts an HTTP connection or /events request refused at its limit; reason is
// "connections" or "subscribers" (other values would grow the series without bound, and are
// counted as neither).
func (m *Metrics) Refused(reason string) {
	if reason == "connections" || reason == "subscribers" {
		m.HTTPRefused.WithLabelValues(reason).Inc()
	}
}

// QueueOverflow implements notify.Observer.
func (m *Metrics) QueueOverflow(owner string, _ int) { m.QueueOverflows.WithLabelValues(owner).Inc() }

// RegisterHeadroom registers hotplug_agent_memory_hotadd_headroom_bytes, read from headroom at
// scrape time: the largest hot-add the machine can take now without running out of kernel memory
// for its memmap and page tables (see package headroom). A scrape when headroom fails (no memory
// hotplug, procfs unreadable) has no such series, rather than failing whole. RegisterHeadroom
// does not block; each scrape blocks on headroom, which must be safe for concurrent use.
func RegisterHeadroom(reg prometheus.Registerer, headroom func() (uint64, error)) {
	reg.MustRegister(headroomCollector{
		desc: prometheus.NewDesc(namespace+"_memory_hotadd_headroom_bytes",
			"Largest memory hot-add, in whole memory blocks, this machine can take now: its memmap and page tables, allocated from kernel memory at add time, fit above the zones' high watermarks and leave the reserve free.",
			nil, nil),
		read: headroom,
	})
}

type headroomCollector struct {
	desc *prometheus.Desc
	read func() (uint64, error)
}

func (c headroomCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c headroomCollector) Collect(ch chan<- prometheus.Metric) {
	if v, err := c.read(); err == nil {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v))
	}
}

// counterVec, gaugeVec and counter declare a metric in the agent's namespace.
func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
}

func gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
}

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
}
