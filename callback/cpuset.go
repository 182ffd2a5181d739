package callback

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// The ways a cpuset callback treats a CPU or memory node that was never online before (a
// hot-added one), besides giving back what the kernel took from a cpuset at a removal.
const (
	// CpusetAddSpanning adds it to the named cpusets that held every online CPU (or node) before
	// the arrival: those meant to use the whole machine. The default.
	CpusetAddSpanning = "spanning"
	// CpusetAddAll adds it to every named cpuset that lists its CPUs (or nodes) explicitly.
	CpusetAddAll = "all"
	// CpusetAddNone only gives back what the kernel took.
	CpusetAddNone = "none"
)

// CpusetMemory is what a cpuset callback remembers, and the agent keeps in its state file across
// restarts. Paths are cgroups relative to the callback's cgroup mount; lists are sorted.
type CpusetMemory struct {
	// Resource is "cpus" or "mems": what the numbers are.
	Resource string
	// Known are the CPUs (or nodes with memory) the callback has seen online: an arrival of
	// another one is of a new one.
	Known []int
	// Gone are those removed and not back yet.
	Gone []int
	// Held is what each named cpuset held at the callback's last look.
	Held map[string][]int
	// Owed is what a removal took from each named cpuset: it is given back at the arrival.
	Owed map[string][]int
}

// Cpuset is the cpuset callback: it keeps the named cgroups' cpuset.cpus (for class processor)
// or cpuset.mems (for class memory) in step with hotplug. On cgroup v1 the kernel drops an
// offlined CPU (or a node whose memory went offline) from every cpuset but the root and never
// gives it back; on cgroup v2 an explicit cpuset.cpus never gains a CPU hot-added after it was
// written. Cpuset gives back, at the arrival, what a removal took from a named cpuset, and adds
// a new CPU (or node) to the named cpusets its Add mode picks. It writes nothing else: a cgroup
// no pattern names is never read or written.
//
// Create it with NewCpuset; its methods are safe for concurrent use.
type Cpuset struct {
	name     string
	root     string
	patterns []string
	add      string
	res      string // "cpus" or "mems"
	online   string // the sysfs file listing what is online
	log      *slog.Logger
	observe  func(pattern, result string)
	onChange func()

	mu         sync.Mutex
	known      set
	gone       set
	held, owed map[string]set
}

// CpusetOptions configure a Cpuset.
type CpusetOptions struct {
	// Name is the callback's name, for the log.
	Name string
	// Root is the cgroup mount: a cgroup v1 hierarchy with the cpuset controller, or cgroup2.
	// "" finds one (CgroupRoot).
	Root string
	// Cgroups are the cpusets the callback may write: paths relative to Root, each element a
	// shell pattern (filepath.Match); "." is Root itself.
	Cgroups []string
	// Add is CpusetAddSpanning (""), CpusetAddAll or CpusetAddNone.
	Add string
	// Memory: keep cpuset.mems (NUMA nodes with memory) instead of cpuset.cpus.
	Memory bool
	// SysfsPath is the sysfs mount; "" is /sys.
	SysfsPath string
	Logger    *slog.Logger
	// Observe is told of each write: the pattern that names the cgroup, and "ok" or "error".
	// It must not block. Nil: nothing.
	Observe func(pattern, result string)
	// OnChange is called when what the callback remembers changed (to save it). It must not block.
	OnChange func()
	// Memory is what the callback remembered in an earlier run; nil starts afresh.
	Restore *CpusetMemory
}

// set is a set of CPU or node numbers.
type set map[int]bool

func setOf(l []int) set {
	s := set{}
	for _, n := range l {
		s[n] = true
	}
	return s
}

func (s set) list() []int { return slices.Sorted(maps.Keys(s)) }

// NewCpuset checks the options, looks at the named cpusets once and returns the callback. An
// error says what is wrong in one line: no cgroup mount with the cpuset controller, a Root that
// is not a cgroup. It blocks on reading cgroupfs and sysfs only.
func NewCpuset(o CpusetOptions) (*Cpuset, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SysfsPath == "" {
		o.SysfsPath = "/sys"
	}
	if o.Add == "" {
		o.Add = CpusetAddSpanning
	}
	if o.Root == "" {
		root, err := CgroupRoot("/proc/self/mountinfo")
		if err != nil {
			return nil, err
		}
		o.Root = root
	}
	if _, err := os.Stat(filepath.Join(o.Root, "cgroup.procs")); err != nil {
		return nil, fmt.Errorf("cpuset: root %s: not a cgroup mount (%w)", o.Root, errors.Unwrap(err))
	}
	c := &Cpuset{name: o.Name, root: o.Root, patterns: o.Cgroups, add: o.Add, res: "cpus",
		online: filepath.Join(o.SysfsPath, "devices/system/cpu/online"),
		log:    o.Logger, observe: o.Observe, onChange: o.OnChange,
		known: set{}, gone: set{}, held: map[string]set{}, owed: map[string]set{}}
	if o.Memory {
		c.res = "mems"
		c.online = filepath.Join(o.SysfsPath, "devices/system/node/has_memory")
	}
	on, err := c.readOnline()
	if err != nil {
		return nil, err
	}
	if r := o.Restore; r != nil && r.Resource == c.res {
		c.known, c.gone = setOf(r.Known), setOf(r.Gone)
		for p, l := range r.Held {
			c.held[p] = setOf(l)
		}
		for p, l := range r.Owed {
			c.owed[p] = setOf(l)
		}
	}
	for n := range on {
		c.known[n] = true
	}
	c.mu.Lock()
	c.scan(on)
	c.mu.Unlock()
	c.log.Info("cpuset callback: watching cpusets", "root", c.root, "file", "cpuset."+c.res,
		"cgroups", strings.Join(slices.Sorted(maps.Keys(c.held)), ","), "add", c.add)
	return c, nil
}

// CgroupRoot finds in mountinfo (/proc/self/mountinfo) the cgroup mount whose cpusets hotplug
// concerns: the cgroup v1 hierarchy with the cpuset controller if there is one, else the cgroup2
// mount. It blocks on reading the file only.
func CgroupRoot(mountinfo string) (string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", fmt.Errorf("cpuset: find the cgroup mount: %w", err)
	}
	defer f.Close()
	var v2 string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 0:30 / /sys/fs/cgroup/cpuset rw,relatime shared:7 - cgroup cgroup rw,cpuset
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, after := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(after) < 3 {
			continue
		}
		mnt := strings.ReplaceAll(fields[4], `\040`, " ")
		switch after[0] {
		case "cgroup":
			if slices.Contains(strings.Split(after[2], ","), "cpuset") {
				return mnt, nil
			}
		case "cgroup2":
			if v2 == "" {
				v2 = mnt
			}
		}
	}
	if v2 == "" {
		return "", errors.New("cpuset: no cgroup mount with the cpuset controller (neither cgroup v1 cpuset nor cgroup2 in /proc/self/mountinfo)")
	}
	return v2, nil
}

// Root returns the cgroup mount the callback works under.
func (c *Cpuset) Root() string { return c.root }

// Memory returns what the callback remembers, for the state file. It does not block.
func (c *Cpuset) Memory() CpusetMemory {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := CpusetMemory{Resource: c.res, Known: c.known.list(), Gone: c.gone.list(), Held: map[string][]int{}, Owed: map[string][]int{}}
	for p, s := range c.held {
		m.Held[p] = s.list()
	}
	for p, s := range c.owed {
		if len(s) > 0 {
			m.Owed[p] = s.list()
		}
	}
	return m
}

// Run looks at the named cpusets every interval until ctx ends, so that what a removal takes
// from a cpuset created or changed since the last notification is known. It blocks.
func (c *Cpuset) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			on, err := c.readOnline()
			if err != nil {
				c.log.Warn("cpuset callback: cannot read what is online", "err", err)
				continue
			}
			c.mu.Lock()
			changed, _ := c.scan(on)
			c.mu.Unlock()
			if changed {
				c.changed()
			}
		}
	}
}

func (c *Cpuset) changed() {
	if c.onChange != nil {
		c.onChange()
	}
}

// named returns the cgroups the patterns name now, relative to the root, each with the first
// pattern that names it.
func (c *Cpuset) named() map[string]string {
	out := map[string]string{}
	for _, p := range c.patterns {
		matches, _ := filepath.Glob(filepath.Join(c.root, p)) // patterns are checked by the config
		for _, m := range matches {
			rel, err := filepath.Rel(c.root, m)
			if err != nil || strings.HasPrefix(rel, "..") {
				continue
			}
			if _, ok := out[rel]; ok {
				continue
			}
			if fi, err := os.Stat(filepath.Join(m, "cpuset."+c.res)); err == nil && fi.Mode().IsRegular() {
				out[rel] = p
			}
		}
	}
	return out
}

func (c *Cpuset) readOnline() (set, error) { return readSet("cpuset", c.online) }

func (c *Cpuset) read(rel string) (set, error) {
	return readSet("cpuset", filepath.Join(c.root, rel, "cpuset."+c.res))
}

// scan reads the named cpusets: what one lost since the last look that is offline now, or that
// a removal took (gone), it is owed. A CPU an administrator took out of a cpuset while it was
// online is not owed. It returns whether what the callback remembers changed, and the named
// cpusets (see named). c.mu is held.
func (c *Cpuset) scan(on set) (bool, map[string]string) {
	named := c.named()
	changed := false
	for rel := range c.held {
		if _, ok := named[rel]; !ok { // removed, or no longer named
			delete(c.held, rel)
			delete(c.owed, rel)
			changed = true
		}
	}
	for rel := range named {
		cur, err := c.read(rel)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				c.log.Warn("cpuset callback: cannot read a cpuset", "cgroup", rel, "err", err)
			}
			continue
		}
		prev, seen := c.held[rel]
		owed := c.owed[rel]
		for n := range prev {
			if !cur[n] && (c.gone[n] || !on[n]) {
				if owed == nil {
					owed = set{}
					c.owed[rel] = owed
				}
				if !owed[n] {
					owed[n] = true
					changed = true
					c.log.Debug("cpuset callback: the kernel took from a cpuset what it will get back", "cgroup", rel, c.res, n)
				}
			}
		}
		for n := range owed {
			if cur[n] {
				delete(owed, n)
				changed = true
			}
		}
		if !seen || !maps.Equal(prev, cur) {
			changed = true
		}
		c.held[rel] = cur
	}
	return changed, named
}

// number returns the CPU (res "cpus") or the node (res "mems") a notification is about, and false when it is of another
// class or of memory on no known node.
func number(res string, n notify.Notification) (int, bool) {
	switch {
	case res == "cpus" && n.InterfaceClassGUID == notify.GUIDDeviceProcessor:
		return n.Interface.Number, true
	case res == "mems" && n.InterfaceClassGUID == notify.GUIDDeviceMemory && n.Interface.Node >= 0:
		return n.Interface.Node, true
	}
	return 0, false
}

// Callback returns the notification callback. A removal is remembered; an arrival gives the CPU
// (or node) back to every named cpuset a removal took it from, and a new one to the named
// cpusets the Add mode picks, parents before children, each write logged and observed. It
// blocks on cgroupfs writes; the error joins the writes that failed.
func (c *Cpuset) Callback() notify.Callback {
	return func(ctx context.Context, n notify.Notification, _ any) error {
		x, ok := number(c.res, n)
		if !ok {
			return nil
		}
		on, err := c.readOnline()
		if err != nil {
			return err
		}
		c.mu.Lock()
		defer c.changed()
		defer c.mu.Unlock()
		if n.Event == notify.GUIDDeviceInterfaceRemoval {
			// A CPU's removal means it went offline; a memory block's, only when it was the
			// node's last.
			if c.res == "cpus" || !on[x] {
				c.gone[x] = true
			}
			c.scan(on)
			return nil
		}
		if !on[x] {
			return nil // memory of a node the kernel does not count as having memory yet
		}
		_, named := c.scan(on)
		isNew := !c.known[x]
		others := maps.Clone(on)
		delete(others, x)
		type target struct{ rel, reason string }
		var targets []target
		for rel, cur := range c.held {
			switch {
			case cur[x]:
			case c.owed[rel][x]:
				targets = append(targets, target{rel, "restore"})
			case isNew && c.add != CpusetAddNone && len(cur) > 0 && (c.add == CpusetAddAll || contains(cur, others)):
				targets = append(targets, target{rel, "new"})
			}
		}
		// Parents first: on cgroup v1 a cpuset holds only what its parent holds.
		slices.SortFunc(targets, func(a, b target) int {
			if d := strings.Count(a.rel, "/") - strings.Count(b.rel, "/"); d != 0 || a.rel == b.rel {
				return d
			}
			return strings.Compare(a.rel, b.rel)
		})
		var errs []error
		for _, t := range targets {
			before := c.held[t.rel]
			want := maps.Clone(before)
			want[x] = true
			p := filepath.Join(c.root, t.rel, "cpuset."+c.res)
			value := sysfs.FormatCPUList(want.list())
			err := os.WriteFile(p, []byte(value), 0)
			result := "ok"
			attrs := []any{"cgroup", t.rel, "pattern", named[t.rel], "file", "cpuset." + c.res,
				"reason", t.reason, "before", sysfs.FormatCPUList(before.list()), "after", value,
				"since_arrival", time.Since(n.ReadAt).String(), "id", n.ID}
			if err != nil {
				result = "error"
				errs = append(errs, fmt.Errorf("cpuset: write %s to %s: %w", value, p, err))
				c.log.Error("cpuset callback: write failed", append(attrs, "err", err)...)
			} else {
				c.held[t.rel] = want
				delete(c.owed[t.rel], x)
				c.log.Info("cpuset callback: cpuset widened", attrs...)
			}
			if c.observe != nil {
				c.observe(named[t.rel], result)
			}
		}
		delete(c.gone, x)
		c.known[x] = true
		return errors.Join(errs...)
	}
}

// contains reports whether a holds every member of b.
func contains(a, b set) bool {
	for n := range b {
		if !a[n] {
			return false
		}
	}
	return true
}
