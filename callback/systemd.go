package callback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// SystemdConn is what the systemd callback asks of systemd; a *dbus.Conn of go-systemd has it.
type SystemdConn interface {
	GetUnitTypePropertyContext(ctx context.Context, unit, unitType, propertyName string) (*sdbus.Property, error)
	SetUnitPropertiesContext(ctx context.Context, name string, runtime bool, properties ...sdbus.Property) error
}

// unitTypes are the unit types that have AllowedCPUs= and AllowedMemoryNodes=, by suffix, with
// the D-Bus interface that holds them.
var unitTypes = map[string]string{".service": "Service", ".scope": "Scope", ".slice": "Slice",
	".socket": "Socket", ".mount": "Mount", ".swap": "Swap"}

// UnitType returns the D-Bus unit type ("Service") of a unit name, and false for a unit type
// without AllowedCPUs=.
func UnitType(unit string) (string, bool) {
	t, ok := unitTypes[filepath.Ext(unit)]
	return t, ok
}

// Systemd is the systemd callback: for the units it names, it extends AllowedCPUs= (class
// processor) or AllowedMemoryNodes= (class memory) with a CPU (or node) that arrives for the
// first time, as a runtime change (systemctl set-property --runtime): the unit's cgroup gets it
// at once, and the unit files are not changed. A unit whose property is empty (no restriction)
// is left alone, as is every unit it does not name.
//
// Create it with NewSystemd; its methods are safe for concurrent use.
type Systemd struct {
	name     string
	units    []string
	add      string
	prop     string // AllowedCPUs or AllowedMemoryNodes
	res      string // "cpus" or "mems"
	online   string
	conn     SystemdConn
	log      *slog.Logger
	observe  func(unit, result string)
	onChange func()

	mu    sync.Mutex
	known set
}

// SystemdOptions configure a Systemd callback.
type SystemdOptions struct {
	Name string
	// Units are the unit names whose property may be extended, each with a suffix of UnitType.
	Units []string
	// Add is CpusetAddSpanning (""), CpusetAddAll or CpusetAddNone, as for Cpuset.
	Add string
	// Memory: AllowedMemoryNodes= and NUMA nodes instead of AllowedCPUs= and CPUs.
	Memory    bool
	SysfsPath string
	// Conn reaches systemd; nil connects (ConnectSystemd).
	Conn   SystemdConn
	Logger *slog.Logger
	// Observe is told of each change asked of systemd: the unit and "ok" or "error". It must
	// not block.
	Observe func(unit, result string)
	// OnChange is called when what the callback remembers changed. It must not block.
	OnChange func()
	// Restore is what the callback remembered in an earlier run (only Known is used).
	Restore *CpusetMemory
}

// ConnectSystemd connects to systemd: on its private socket (as root), else on the system bus.
// It blocks until connected; the connection is closed when ctx ends.
func ConnectSystemd(ctx context.Context) (*sdbus.Conn, error) {
	c, err := sdbus.NewSystemdConnectionContext(ctx)
	if err == nil {
		return c, nil
	}
	c, err2 := sdbus.NewSystemConnectionContext(ctx)
	if err2 != nil {
		return nil, fmt.Errorf("systemd: connect: private socket: %v; system bus: %w", err, err2)
	}
	return c, nil
}

// NewSystemd returns the systemd callback. It blocks on connecting to systemd (when o.Conn is
// nil; the connection lasts until Close, whatever becomes of ctx) and reading sysfs.
func NewSystemd(ctx context.Context, o SystemdOptions) (*Systemd, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SysfsPath == "" {
		o.SysfsPath = "/sys"
	}
	if o.Add == "" {
		o.Add = CpusetAddSpanning
	}
	s := &Systemd{name: o.Name, units: o.Units, add: o.Add, prop: "AllowedCPUs", res: "cpus",
		online: filepath.Join(o.SysfsPath, "devices/system/cpu/online"), conn: o.Conn,
		log: o.Logger, observe: o.Observe, onChange: o.OnChange, known: set{}}
	if o.Memory {
		s.prop, s.res = "AllowedMemoryNodes", "mems"
		s.online = filepath.Join(o.SysfsPath, "devices/system/node/has_memory")
	}
	if s.conn == nil {
		// The connection ends with the context it was made with: it must outlive ctx.
		c, err := ConnectSystemd(context.WithoutCancel(ctx))
		if err != nil {
			return nil, err
		}
		s.conn = c
	}
	on, err := readSet("systemd", s.online)
	if err != nil {
		return nil, err
	}
	if r := o.Restore; r != nil && r.Resource == s.res {
		s.known = setOf(r.Known)
	}
	for n := range on {
		s.known[n] = true
	}
	return s, nil
}

// Close closes the connection to systemd if NewSystemd made it.
func (s *Systemd) Close() {
	if c, ok := s.conn.(*sdbus.Conn); ok {
		c.Close()
	}
}

// Memory returns what the callback remembers, for the state file. It does not block.
func (s *Systemd) Memory() CpusetMemory {
	s.mu.Lock()
	defer s.mu.Unlock()
	return CpusetMemory{Resource: s.res, Known: s.known.list()}
}

// readSet reads the CPU or node list at p (a sysfs list, a cpuset file); its errors begin with
// who, the callback kind.
func readSet(who, p string) (set, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", who, err)
	}
	l, err := sysfs.ParseCPUList(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", who, p, err)
	}
	return setOf(l), nil
}

// maskSet decodes systemd's CPU or node mask (byte i bit j is number 8i+j).
func maskSet(b []byte) set {
	s := set{}
	for i, v := range b {
		for j := range 8 {
			if v&(1<<j) != 0 {
				s[8*i+j] = true
			}
		}
	}
	return s
}

// setMask encodes s as systemd's mask.
func setMask(s set) []byte {
	hi := -1
	for n := range s {
		hi = max(hi, n)
	}
	b := make([]byte, hi/8+1)
	for n := range s {
		b[n/8] |= 1 << (n % 8)
	}
	return b
}

// Callback returns the notification callback: at the arrival of a CPU (or node) the callback
// never saw online, each named unit the Add mode picks gets it in its property, as a runtime
// change, one log line each. It blocks on systemd; the error joins the changes that failed.
func (s *Systemd) Callback() notify.Callback {
	return func(ctx context.Context, n notify.Notification, _ any) error {
		x, ok := number(s.res, n)
		if !ok || n.Event != notify.GUIDDeviceInterfaceArrival {
			return nil
		}
		on, err := readSet("systemd", s.online)
		if err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if !on[x] || s.known[x] || s.add == CpusetAddNone {
			if on[x] && !s.known[x] {
				s.known[x] = true
				defer s.changed()
			}
			return nil
		}
		others := maps.Clone(on)
		delete(others, x)
		var errs []error
		for _, unit := range s.units {
			typ, _ := UnitType(unit)
			p, err := s.conn.GetUnitTypePropertyContext(ctx, unit, typ, s.prop)
			if err != nil {
				errs = append(errs, fmt.Errorf("systemd: %s %s: %w", unit, s.prop, err))
				s.log.Warn("systemd callback: cannot read a unit's property", "unit", unit, "property", s.prop, "err", err)
				continue
			}
			b, ok := p.Value.Value().([]byte)
			if !ok {
				errs = append(errs, fmt.Errorf("systemd: %s %s: a %s, not bytes", unit, s.prop, p.Value.Signature()))
				continue
			}
			cur := maskSet(b)
			if len(cur) == 0 || cur[x] || (s.add == CpusetAddSpanning && !contains(cur, others)) {
				continue
			}
			want := maps.Clone(cur)
			want[x] = true
			start := time.Now()
			err = s.conn.SetUnitPropertiesContext(ctx, unit, true, sdbus.Property{Name: s.prop, Value: dbus.MakeVariant(setMask(want))})
			result := "ok"
			attrs := []any{"unit", unit, "property", s.prop, "before", sysfs.FormatCPUList(cur.list()),
				"after", sysfs.FormatCPUList(want.list()), "since_arrival", time.Since(n.ReadAt).String(),
				"took", time.Since(start).String(), "id", n.ID}
			if err != nil {
				result = "error"
				errs = append(errs, fmt.Errorf("systemd: set %s=%s on %s: %w", s.prop, sysfs.FormatCPUList(want.list()), unit, err))
				s.log.Error("systemd callback: set-property failed", append(attrs, "err", err)...)
			} else {
				s.log.Info("systemd callback: unit widened", attrs...)
			}
			if s.observe != nil {
				s.observe(unit, result)
			}
		}
		s.known[x] = true
		defer s.changed()
		return errors.Join(errs...)
	}
}

func (s *Systemd) changed() {
	if s.onChange != nil {
		s.onChange()
	}
}
