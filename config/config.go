// Package config loads and checks the agent's YAML configuration file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.yaml.in/yaml/v3"

	"github.com/hotplug-agent/hotplug-agent/callback"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/online"
)

// MaxSize bounds a configuration file: anything larger is a mistake, not a configuration.
const MaxSize = 1 << 20

// Config is the agent's configuration file.
type Config struct {
	// LogNotifications registers the built-in callback that logs one line per notification
	// (owner "log", every class). Default true.
	LogNotifications *bool `yaml:"log_notifications"`
	// Callbacks are the registrations the agent makes at start.
	Callbacks []Callback `yaml:"callbacks"`
	// Online is the online policy for hot-added CPUs and memory blocks.
	Online Online `yaml:"online"`
	// MaxExecProcesses bounds the exec callback processes running at once, across all
	// callbacks. Default 16.
	MaxExecProcesses *int `yaml:"max_exec_processes"`
	// TwoPhase sets the deadline of the calls that may veto a change (AddStart of a two-phase
	// add, query-remove of a removal on request) and what a missed deadline counts as.
	TwoPhase TwoPhase `yaml:"two_phase"`
}

// The kinds of callback registration.
const (
	// KindDeviceInterface is IoRegisterPlugPlayNotification(EventCategoryDeviceInterfaceChange):
	// arrivals and removals of a class, after the fact. The default.
	KindDeviceInterface = "device_interface"
	// KindTwoPhase is KeRegisterProcessorChangeCallback, for processors or memory: add_start
	// (which may veto) before the agent onlines a CPU or block, then add_complete or add_failure.
	KindTwoPhase = "two_phase"
	// KindTargetDevice is IoRegisterPlugPlayNotification(EventCategoryTargetDeviceChange) for one
	// interface: query_remove (which may veto) before a removal on request, then remove_complete
	// or remove_cancelled; remove_complete also for a removal nobody asked the agent for.
	KindTargetDevice = "target_device"
)

// DefaultVetoTimeout is the default deadline of a call that may veto.
const DefaultVetoTimeout = 10 * time.Second

// TwoPhase configures the calls that may veto a change.
type TwoPhase struct {
	// Timeout is the deadline of each AddStart and query-remove call, and how long a change
	// waits for the calls that end it. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// OnTimeout is what a callback that misses the deadline counts as: "veto" (default) or
	// "consent". Either way it is logged.
	OnTimeout string `yaml:"on_timeout"`
}

// VetoTimeout is Timeout with its default.
func (t TwoPhase) VetoTimeout() time.Duration {
	if t.Timeout <= 0 {
		return DefaultVetoTimeout
	}
	return t.Timeout
}

// ConsentOnTimeout reports whether a missed deadline counts as consent.
func (t TwoPhase) ConsentOnTimeout() bool { return t.OnTimeout == "consent" }

// ExecLimit is MaxExecProcesses with its default.
func (c *Config) ExecLimit() int {
	if c.MaxExecProcesses == nil {
		return 16
	}
	return *c.MaxExecProcesses
}

// Online is the online policy: what the agent does with a CPU or memory block the kernel has
// just added (hot-added resources stay offline on Linux unless something onlines them).
type Online struct {
	// CPU is "online" or "none" (default).
	CPU string `yaml:"cpu"`
	// Memory is "online", "online_kernel", "online_movable", "auto" (online only where the
	// kernel's auto_online_blocks does not), "planned" (the zone planner decides MOVABLE or
	// KERNEL per memory device), "kernel" (the kernel onlines, configured by the agent while it
	// runs) or "none" (default).
	Memory string `yaml:"memory"`
	// MovableRatio is the most MOVABLE memory per KERNEL memory, in percent, per NUMA node and
	// for the whole machine, for "planned" and for "kernel" with kernel_online: auto-movable.
	// Default 301 (the kernel's).
	MovableRatio *Percent `yaml:"movable_ratio"`
	// KernelOnline is what the kernel does with hot-added memory under memory: kernel:
	// "auto-movable" (default), "online_movable", "online_kernel" or "online".
	KernelOnline string `yaml:"kernel_online"`
	// Retries bounds the further attempts after a failed online: 0 to 10 (online.MaxRetries).
	// Default 3.
	Retries *int `yaml:"retries"`
}

// Policy returns the online policy with its defaults filled in.
func (o Online) Policy() online.Policy {
	p := online.Policy{CPU: o.CPU, Memory: o.Memory, Retries: 3, MovableRatio: online.DefaultMovableRatio, KernelOnline: o.KernelOnline}
	if o.MovableRatio != nil {
		p.MovableRatio = int(*o.MovableRatio)
	}
	if p.CPU == "" {
		p.CPU = online.None
	}
	if p.Memory == "" {
		p.Memory = online.None
	}
	if o.Retries != nil {
		p.Retries = *o.Retries
	}
	return p
}

// Percent is a whole number of percent: 301 means 3.01:1. A number with a fraction is an error,
// not rounded down as the YAML decoder would round it into an int (3.01 would be 3%).
type Percent int

// UnmarshalYAML accepts an integer scalar only.
func (p *Percent) UnmarshalYAML(n *yaml.Node) error {
	var v int
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" && n.Decode(&v) == nil {
		*p = Percent(v)
		return nil
	}
	// The decoder's own message for a value of the wrong type, which explain rewrites.
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: cannot unmarshal %s `%s` into config.Percent", n.Line, n.ShortTag(), n.Value)}}
}

// Callback is one named registration.
type Callback struct {
	// Name is the owner: it labels the callback's logs and metrics. Unique, [a-zA-Z0-9_.-]+.
	Name string `yaml:"name"`
	// Kind is the registration: KindDeviceInterface (default), KindTwoPhase or KindTargetDevice.
	Kind string `yaml:"kind"`
	// Class is "processor", "memory", or an interface class GUID; for KindTwoPhase processor or
	// memory; for KindTargetDevice optional (the target says it).
	Class string `yaml:"class"`
	// Target is the symbolic link of the one interface a KindTargetDevice callback watches, such
	// as /sys/devices/system/cpu/cpu1.
	Target string `yaml:"target"`
	// IncludeExisting delivers an arrival for every interface already active at start
	// (PNPNOTIFY_DEVICE_INTERFACE_INCLUDE_EXISTING_INTERFACES); for KindTwoPhase it replays the
	// online CPUs or blocks at start, add_start for each, then add_complete for each
	// (KE_PROCESSOR_CHANGE_ADD_EXISTING).
	IncludeExisting bool `yaml:"include_existing"`
	// MemoryDevices, for KindDeviceInterface and class memory, delivers one arrival per memory
	// device (a DIMM, a virtio-mem device's plug) once all its blocks are online, and its
	// removal when the first of them goes, instead of one per memory block
	// (notify.FlagMemoryDevices).
	MemoryDevices bool `yaml:"memory_devices"`
	// Exec runs a command per notification.
	Exec *Exec `yaml:"exec"`
	// Webhook POSTs each notification's JSON to a URL.
	Webhook *Webhook `yaml:"webhook"`
	// Log writes a log line per notification.
	Log bool `yaml:"log"`
	// Cpuset keeps the named cgroups' cpusets in step with hotplug (class processor: cpuset.cpus;
	// class memory: cpuset.mems).
	Cpuset *Cpuset `yaml:"cpuset"`
	// Systemd extends the named units' AllowedCPUs= (class processor) or AllowedMemoryNodes=
	// (class memory) with new CPUs or nodes.
	Systemd *Systemd `yaml:"systemd"`

	// ClassGUID is Class parsed; set by Parse.
	ClassGUID uuid.UUID `yaml:"-"`
}

// Exec is the exec action of a callback.
type Exec struct {
	// Command is the argument vector (never a shell string): ["/usr/local/bin/grow-pool", "--cpu"].
	// Its first element is an executable file: an absolute path, or a name found in the fixed
	// exec PATH (callback.DefaultPath), not in the agent's own; Parse checks that it is there.
	Command []string `yaml:"command"`
	// Timeout bounds one run; the command's process group is killed when it passes. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
}

// Webhook is the webhook action of a callback.
type Webhook struct {
	// URL receives a POST of each notification's JSON, with an Idempotency-Key header.
	URL string `yaml:"url"`
	// Timeout bounds one request. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// Retries bounds the further attempts after a failure (backoff doubling from 200ms to 30s).
	// Default 5.
	Retries *int `yaml:"retries"`
	// InsecureSkipVerify turns TLS certificate verification off (it is on by default).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// Headers are added to each request, for example Authorization. A name is an HTTP token and
	// a value holds no control character but the tab (callback.CheckHeader); names are
	// case-insensitive, so each is given once.
	Headers map[string]string `yaml:"headers"`
}

// Cpuset is the cpuset action of a callback (callback.Cpuset).
type Cpuset struct {
	// Root is the cgroup mount; "" finds it: the cgroup v1 cpuset hierarchy, else cgroup2.
	Root string `yaml:"root"`
	// Cgroups are the cgroups the callback may write, relative to Root; each path element may be
	// a shell pattern ("docker/*"); "." is Root itself. Required.
	Cgroups []string `yaml:"cgroups"`
	// Add says which named cpusets a CPU (or node) that was never online before joins:
	// "spanning" (default: those that held every online one before it came), "all" or "none".
	Add string `yaml:"add"`
	// ScanInterval is how often the named cpusets are looked at, to know what a removal takes
	// from each. Default 1s.
	ScanInterval time.Duration `yaml:"scan_interval"`
}

// Systemd is the systemd action of a callback (callback.Systemd).
type Systemd struct {
	// Units are the unit names whose AllowedCPUs= or AllowedMemoryNodes= may be extended, like
	// workload.service or batch.slice. Required.
	Units []string `yaml:"units"`
	// Add is as Cpuset.Add: spanning (default), all or none.
	Add string `yaml:"add"`
}

// DefaultCpusetScanInterval is Cpuset.ScanInterval when unset.
const DefaultCpusetScanInterval = time.Second

// Interval is ScanInterval with its default.
func (c *Cpuset) Interval() time.Duration {
	if c.ScanInterval <= 0 {
		return DefaultCpusetScanInterval
	}
	return c.ScanInterval
}

// Load reads and parses the file at path. Errors name the file and, for an invalid value, the field.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("config %s: larger than %d bytes", path, MaxSize)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse parses and validates a configuration: one YAML document. Unknown keys are errors; a YAML error
// is one line that names the line, the key's path and what is expected there, in the terms of
// the file (line 5: callbacks[0].exec.timeout: "30" is not a duration (write 30s)).
func Parse(b []byte) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, explain(b, err)
	}
	// The agent reads one document: one after it (after a "---" line) would be ignored, and the
	// first may be the empty one before it. A "---" that ends the file starts an empty one.
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, errors.New(oneLine(err.Error()))
	case len(next.Content) > 0 && next.Content[0].Tag != "!!null":
		return nil, fmt.Errorf("line %d: the file holds more than one YAML document: the agent reads one (remove the \"---\" line before this one)", next.Content[0].Line)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// LogEnabled reports whether the built-in log callback is on.
func (c *Config) LogEnabled() bool { return c.LogNotifications == nil || *c.LogNotifications }

// streamOwner is web.StreamOwner, the owner of the /events stream's registration (config does
// not import web).
const streamOwner = "events"

// logOwner is the owner of the built-in log callback (log_notifications).
const logOwner = "log"

func (c *Config) validate() error {
	if err := c.Online.Policy().Validate(); err != nil {
		return fmt.Errorf("online.%w", err)
	}
	if n := c.ExecLimit(); n < 1 || n > 4096 {
		return fmt.Errorf("max_exec_processes: %d: want 1 to 4096", n)
	}
	if d := c.TwoPhase.Timeout; d < 0 || d > time.Hour {
		return fmt.Errorf("two_phase.timeout: %s: want a duration up to 1h", d)
	}
	switch c.TwoPhase.OnTimeout {
	case "", "veto", "consent":
	default:
		return fmt.Errorf("two_phase.on_timeout: %q: want veto or consent", c.TwoPhase.OnTimeout)
	}
	seen := map[string]bool{}
	for i := range c.Callbacks {
		cb := &c.Callbacks[i]
		field := fmt.Sprintf("callbacks[%d]", i)
		switch {
		case cb.Name == "":
			return fmt.Errorf("%s.name: required", field)
		case !validName(cb.Name):
			return fmt.Errorf("%s.name: %q: use letters, digits, '_', '-' or '.'", field, cb.Name)
		case cb.Name == streamOwner:
			// The /events stream's own registration: a callback of that name would share its
			// metrics and its line on the status page.
			return fmt.Errorf("%s.name: %q is the event stream's registration: choose another name", field, cb.Name)
		case cb.Name == logOwner && c.LogEnabled():
			// Given once, but the built-in log callback has it: "used twice" would puzzle.
			return fmt.Errorf("%s.name: %q is the built-in log callback's (log_notifications): choose another name, or set log_notifications: false", field, cb.Name)
		case seen[cb.Name]:
			return fmt.Errorf("%s.name: %q is used twice", field, cb.Name)
		}
		seen[cb.Name] = true
		if cb.Kind == "" {
			cb.Kind = KindDeviceInterface
		}
		if err := cb.validateKind(field); err != nil {
			return err
		}
		actions := 0
		for _, set := range []bool{cb.Exec != nil, cb.Webhook != nil, cb.Log, cb.Cpuset != nil, cb.Systemd != nil} {
			if set {
				actions++
			}
		}
		switch {
		case actions == 0:
			return fmt.Errorf("%s: needs an action: exec, webhook, log, cpuset or systemd", field)
		case actions > 1:
			return fmt.Errorf("%s: exec, webhook, log, cpuset and systemd are exclusive: use one callback each", field)
		}
		if cb.Systemd != nil {
			if err := cb.validateSystemd(field); err != nil {
				return err
			}
		}
		if cb.Cpuset != nil {
			if err := cb.validateCpuset(field); err != nil {
				return err
			}
		}
		if w := cb.Webhook; w != nil {
			u, err := url.Parse(w.URL)
			if err != nil {
				// Not quoted: it may hold a password, which the parser cannot tell apart.
				return fmt.Errorf("%s.webhook.url: not a URL: want an http:// or https:// URL", field)
			}
			if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("%s.webhook.url: %q: want an http:// or https:// URL", field, u.Redacted())
			}
			if w.Timeout < 0 {
				return fmt.Errorf("%s.webhook.timeout: %s is negative", field, w.Timeout)
			}
			if w.Retries != nil && (*w.Retries < 0 || *w.Retries > 1000) {
				return fmt.Errorf("%s.webhook.retries: %d: want 0 to 1000", field, *w.Retries)
			}
			// A header net/http refuses would fail every request.
			seen := map[string]string{}
			for _, k := range slices.Sorted(maps.Keys(w.Headers)) {
				if err := callback.CheckHeader(k, w.Headers[k]); err != nil {
					return fmt.Errorf("%s.webhook.headers: %w", field, err)
				}
				canon := http.CanonicalHeaderKey(k)
				if other, ok := seen[canon]; ok {
					return fmt.Errorf("%s.webhook.headers: %q and %q are the same header (names are case-insensitive): give it once", field, other, k)
				}
				seen[canon] = k
			}
		}
		if cb.Exec != nil {
			if len(cb.Exec.Command) == 0 || cb.Exec.Command[0] == "" {
				return fmt.Errorf("%s.exec.command: required, an argument list like [\"/usr/local/bin/on-hotplug\", \"--verbose\"]", field)
			}
			if cb.Exec.Timeout < 0 {
				return fmt.Errorf("%s.exec.timeout: %s is negative", field, cb.Exec.Timeout)
			}
			// The command must be there now: one that is not would fail at every notification.
			if _, err := callback.LookPath(cb.Exec.Command[0]); err != nil {
				return fmt.Errorf("%s.exec.command: %w", field, err)
			}
		}
	}
	return nil
}

// validateKind checks the fields that depend on the kind, and sets ClassGUID.
func (cb *Callback) validateKind(field string) error {
	var class uuid.UUID
	if cb.Class != "" {
		g, err := notify.ParseClass(cb.Class)
		if err != nil {
			return fmt.Errorf("%s.class: %w", field, err)
		}
		class = g
	}
	switch cb.Kind {
	case KindDeviceInterface:
		if cb.Class == "" {
			return fmt.Errorf("%s.class: required (processor, memory or a GUID)", field)
		}
		if cb.Target != "" {
			return fmt.Errorf("%s.target: only with kind: %s", field, KindTargetDevice)
		}
	case KindTwoPhase:
		if class != notify.GUIDDeviceProcessor && class != notify.GUIDDeviceMemory {
			return fmt.Errorf("%s.class: kind %s needs class processor or memory", field, KindTwoPhase)
		}
		if cb.Target != "" {
			return fmt.Errorf("%s.target: only with kind: %s", field, KindTargetDevice)
		}
	case KindTargetDevice:
		if cb.Target == "" {
			return fmt.Errorf("%s.target: required with kind %s: the symbolic link of one interface, like /sys/devices/system/cpu/cpu1", field, KindTargetDevice)
		}
		linkClass, _, err := notify.ParseSymbolicLink(cb.Target)
		if err != nil {
			return fmt.Errorf("%s.target: %w", field, err)
		}
		if cb.Class != "" && class != linkClass {
			return fmt.Errorf("%s.class: %s, but the target %s is a %s", field, cb.Class, cb.Target, notify.ClassName(linkClass))
		}
		if cb.IncludeExisting {
			return fmt.Errorf("%s.include_existing: not with kind %s", field, KindTargetDevice)
		}
		class = linkClass
	default:
		return fmt.Errorf("%s.kind: %q: want %s, %s or %s", field, cb.Kind, KindDeviceInterface, KindTwoPhase, KindTargetDevice)
	}
	if cb.MemoryDevices && (cb.Kind != KindDeviceInterface || class != notify.GUIDDeviceMemory) {
		return fmt.Errorf("%s.memory_devices: only with kind %s and class memory", field, KindDeviceInterface)
	}
	if cb.Kind != KindDeviceInterface && cb.Webhook != nil {
		return fmt.Errorf("%s.webhook: kind %s takes exec or log (webhooks are for kind device_interface)", field, cb.Kind)
	}
	cb.ClassGUID = class
	return nil
}

// checkPerDevice checks what the cpuset and systemd actions (at field) need of their callback: a
// device interface callback per CPU or memory block, of class processor or memory, which they
// turn into what cpus or mems names.
func (cb *Callback) checkPerDevice(field, cpus, mems string) error {
	if cb.Kind != KindDeviceInterface || cb.MemoryDevices {
		return fmt.Errorf("%s: only with kind %s, per CPU or memory block (not memory_devices)", field, KindDeviceInterface)
	}
	if cb.ClassGUID != notify.GUIDDeviceProcessor && cb.ClassGUID != notify.GUIDDeviceMemory {
		return fmt.Errorf("%s: needs class processor (%s) or memory (%s)", field, cpus, mems)
	}
	return nil
}

// checkAdd checks the add mode of the cpuset or systemd action at field.
func checkAdd(field, add string) error {
	switch add {
	case "", callback.CpusetAddSpanning, callback.CpusetAddAll, callback.CpusetAddNone:
		return nil
	}
	return fmt.Errorf("%s.add: %q: want spanning, all or none", field, add)
}

// validateCpuset checks the cpuset action.
func (cb *Callback) validateCpuset(field string) error {
	field += ".cpuset"
	if err := cb.checkPerDevice(field, "cpuset.cpus", "cpuset.mems"); err != nil {
		return err
	}
	c := cb.Cpuset
	if c.Root != "" && (!filepath.IsAbs(c.Root) || filepath.Clean(c.Root) != c.Root) {
		return fmt.Errorf("%s.root: %q: want a clean absolute path, like /sys/fs/cgroup/cpuset", field, c.Root)
	}
	if len(c.Cgroups) == 0 {
		return fmt.Errorf("%s.cgroups: required: the cgroups it may widen, relative to the cgroup mount, like [\"docker/*\"]", field)
	}
	for i, p := range c.Cgroups {
		at := fmt.Sprintf("%s.cgroups[%d]", field, i)
		if p == "" || filepath.IsAbs(p) || filepath.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
			return fmt.Errorf("%s: %q: want a clean path relative to the cgroup mount, like docker/* (\".\" for the mount itself)", at, p)
		}
		if _, err := filepath.Match(p, ""); err != nil {
			return fmt.Errorf("%s: %q: %v", at, p, err)
		}
	}
	if err := checkAdd(field, c.Add); err != nil {
		return err
	}
	if c.ScanInterval != 0 && (c.ScanInterval < 10*time.Millisecond || c.ScanInterval > time.Hour) {
		return fmt.Errorf("%s.scan_interval: %s: want 10ms to 1h", field, c.ScanInterval)
	}
	return nil
}

// unitName is what a unit name may look like (systemd's rule, without templates left open).
var unitName = regexp.MustCompile(`^[A-Za-z0-9:_.@\\-]{1,255}$`)

// validateSystemd checks the systemd action.
func (cb *Callback) validateSystemd(field string) error {
	field += ".systemd"
	if err := cb.checkPerDevice(field, "AllowedCPUs=", "AllowedMemoryNodes="); err != nil {
		return err
	}
	if len(cb.Systemd.Units) == 0 {
		return fmt.Errorf("%s.units: required: the units it may widen, like [workload.service]", field)
	}
	for i, u := range cb.Systemd.Units {
		if _, ok := callback.UnitType(u); !ok || !unitName.MatchString(u) || strings.HasSuffix(u, "@.service") {
			return fmt.Errorf("%s.units[%d]: %q: want a unit name ending in .service, .scope, .slice, .socket, .mount or .swap", field, i, u)
		}
	}
	if err := checkAdd(field, cb.Systemd.Add); err != nil {
		return err
	}
	return nil
}

func validName(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

func oneLine(s string) string {
	s = strings.TrimPrefix(s, "yaml: ")
	s = strings.ReplaceAll(s, "\n ", ";")
	return strings.ReplaceAll(s, "\n", "; ")
}
