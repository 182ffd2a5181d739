//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hotplug-agent/hotplug-agent/bench"
	"github.com/hotplug-agent/hotplug-agent/internal/qemu"
)

// QEMUResult is the figure of the QEMU hotplug benchmark.
type QEMUResult struct {
	Machine Machine `json:"machine"`
	Command string  `json:"command"`
	QEMU    string  `json:"qemu"`
	Guest   string  `json:"guest_kernel"`
	Boot    string  `json:"boot"` // how the guest boots
	// CPU and DIMM are the hot-adds, one entry each.
	CPU  []Hotplug `json:"cpu"`
	DIMM []Hotplug `json:"dimm"`
}

// Hotplug is one hot-add, timed on the host's clock from just before the QMP device_add: the
// guest kernel's uevents for the device as their console lines appeared on the host, the guest
// agent's read of the online uevent, and the arrival on the host's /events stream; and the same
// online uevent through the floor (bench/cmd/uevent-sse-floor), which runs in the same guest
// beside the agent: its read, and its line on the host.
//
// The agent's read is placed on the host's clock through the guest's: the notification's ReadAt
// (the guest's wall clock), turned into the kernel's printk clock with the offset the kernel's
// own "setting system clock to ... (<epoch>)" line gives, is so long after the printk time of the
// kernel's online line; that line appeared on the host at KernelOnline. (The agent's own log line
// is no use for this: user-space console output lags by milliseconds under TCG.)
type Hotplug struct {
	Device       string        `json:"device"` // cpuN, memoryN
	QMPReturn    time.Duration `json:"qmp_return_ns"`
	KernelAdd    time.Duration `json:"kernel_add_ns"`
	KernelOnline time.Duration `json:"kernel_online_ns"`
	// OnlineToRead is, on the guest's clock, from the kernel's online uevent to the agent's read.
	OnlineToRead time.Duration `json:"online_to_read_ns"`
	Events       time.Duration `json:"events_ns"`
	// FloorOnlineToRead is, on the guest's clock, from the kernel's online uevent to the floor's
	// read of it; FloorEvents when the floor's line for it reached the host.
	FloorOnlineToRead time.Duration `json:"floor_online_to_read_ns"`
	FloorEvents       time.Duration `json:"floor_events_ns"`
}

// AgentRead is the agent's read of the online uevent on the host's clock.
func (h Hotplug) AgentRead() time.Duration { return h.KernelOnline + h.OnlineToRead }

// The guest's agent: it onlines hot-added CPUs (Linux leaves them offline); the kernel onlines
// hot-added memory itself (memhp_default_state=online). No log callback, and the agent's default
// log level: at debug it writes a line per uevent to the serial console, which under TCG puts
// 0.3 to 2.5 ms on the path of each uevent (5 ms on the first) that the floor does not pay.
const qemuAgentConfig = `log_notifications: false
online:
  cpu: online
  memory: auto
`

func qemuCmd(ctx context.Context, fs *flag.FlagSet, out *string) error {
	cpus := fs.Int("cpus", 4, "CPUs to hot-add, one at a time")
	dimms := fs.Int("dimms", 8, "128 MiB pc-dimms to hot-add, one at a time")
	fs.Parse(os.Args[2:])
	res := QEMUResult{Machine: machine(), Command: "hotplug-bench " + strings.Join(os.Args[1:], " ")}

	major, minor, err := qemu.QEMUVersion(ctx, "")
	if err != nil {
		return err
	}
	if major < 10 {
		return fmt.Errorf("QEMU %d.%d: need 10 (bash scripts/qemu-deps.sh)", major, minor)
	}
	res.QEMU = fmt.Sprintf("%d.%d", major, minor)
	cacheDir, err := qemu.DefaultCacheDir()
	if err != nil {
		return err
	}
	kernel, err := qemu.FindKernel(cacheDir)
	if err != nil {
		return err
	}
	res.Guest = kernel.Version
	root, err := qemu.ModuleRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "hotplug-bench-qemu-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	initBin, agentBin := filepath.Join(dir, "init"), filepath.Join(dir, "hotplug-agent")
	floorBin := filepath.Join(dir, "uevent-sse-floor")
	for pkg, out := range map[string]string{
		"./cmd/hotplug-guest-init":     initBin,
		"./cmd/hotplug-agent":          agentBin,
		"./bench/cmd/uevent-sse-floor": floorBin,
	} {
		if err := qemu.BuildStatic(ctx, root, pkg, out); err != nil {
			return err
		}
	}
	// The floor listens on its default port, 19101: the init starts it without arguments.
	const guestPort, floorGuestPort = 19100, 19101
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := (qemu.Guest{
		Init: initBin, Agent: agentBin, AgentConfig: qemuAgentConfig,
		AgentArgs: []string{"--path.state="},
		Port:      guestPort, Kernel: kernel,
		Helpers: []string{floorBin},
	}).WriteInitramfs(initrd); err != nil {
		return err
	}
	port, err := qemu.FreePort()
	if err != nil {
		return err
	}
	floorPort, err := qemu.FreePort()
	if err != nil {
		return err
	}
	cfg := qemu.Config{
		Kernel:    kernel,
		Initramfs: initrd,
		// The kernel's own uevent time: kobject_uevent_env's debug message, on the console.
		Append:   []string{"memhp_default_state=online", "loglevel=8", `dyndbg="file kobject_uevent.c +p"`},
		MaxCPUs:  1 + *cpus,
		Slots:    *dimms,
		Forwards: []qemu.Forward{{HostPort: port, GuestPort: guestPort}, {HostPort: floorPort, GuestPort: floorGuestPort}},
		Dir:      dir,
	}
	res.Boot = "vmlinuz, SeaBIOS"
	if cfg.PVH() {
		res.Boot = "vmlinux through PVH, qboot"
	}
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	vm, err := qemu.Start(bctx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		vm.Stop(sctx)
	}()
	fail := func(err error) error {
		return fmt.Errorf("%w\nguest console (end):\n%s", err, lastLines(vm.Serial(), 40))
	}
	console := newConsole(vm.SerialLog)
	defer console.stop()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	floorBase := fmt.Sprintf("http://127.0.0.1:%d", floorPort)
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	err = waitAgent(wctx, vm, base)
	if err == nil {
		err = waitHealthy(wctx, floorBase)
	}
	cancel()
	if err != nil {
		return fail(err)
	}
	events, err := subscribe(ctx, base+"/events")
	if err != nil {
		return fail(err)
	}
	defer events.close()
	floor, err := subscribe(ctx, floorBase+"/events")
	if err != nil {
		return fail(err)
	}
	defer floor.close()
	streams := streams{agent: events, floor: floor}

	slots, err := vm.FreeCPUSlots(ctx)
	if err != nil {
		return fail(err)
	}
	for i := range min(*cpus, len(slots)) {
		id := fmt.Sprintf("bench-cpu-%d", i)
		h, err := timeHotplug(ctx, console, streams, "processor", func(ctx context.Context) error {
			return vm.AddCPU(ctx, id, slots[i])
		})
		if err != nil {
			return fail(fmt.Errorf("CPU %s: %w", id, err))
		}
		res.CPU = append(res.CPU, h)
		time.Sleep(time.Second)
	}
	for i := range *dimms {
		id := fmt.Sprintf("bench-dimm-%d", i)
		h, err := timeHotplug(ctx, console, streams, "memory", func(ctx context.Context) error {
			return vm.AddDIMM(ctx, id, 128<<20)
		})
		if err != nil {
			return fail(fmt.Errorf("DIMM %s: %w", id, err))
		}
		res.DIMM = append(res.DIMM, h)
		time.Sleep(time.Second)
	}
	res.Machine.done()
	fmt.Print(renderQEMU(&res))
	if b, err := os.ReadFile(vm.SerialLog); err == nil {
		os.WriteFile(filepath.Join(*out, "qemu-serial.log"), b, 0o644)
	}
	return save(*out, "qemu", &res)
}

// streams are the host's subscriptions to the guest agent's /events and to the floor's.
type streams struct{ agent, floor *eventStream }

// timeHotplug runs add (the QMP device_add) and waits for the arrival of class on the agent's
// /events and for the floor's line of the device's online uevent, then finds the device's
// uevents in the console lines seen meanwhile.
func timeHotplug(ctx context.Context, c *console, s streams, class string, add func(context.Context) error) (Hotplug, error) {
	ev := s.agent
	ev.drain()
	s.floor.drain()
	mark := c.mark()
	t0 := time.Now()
	if err := add(ctx); err != nil {
		return Hotplug{}, err
	}
	h := Hotplug{QMPReturn: time.Since(t0)}
	n, at, err := ev.next(ctx, 60*time.Second)
	if err != nil {
		return h, err
	}
	if n.InterfaceClass != class || n.Event != "arrival" {
		return h, fmt.Errorf("got %s of %s on /events; want a %s arrival", n.Event, n.SymbolicLink, class)
	}
	h.Events = at.Sub(t0)
	h.Device = filepath.Base(n.SymbolicLink)
	var fl note
	for fl.Action != "online" || filepath.Base(fl.Devpath) != h.Device {
		if fl, at, err = s.floor.next(ctx, 5*time.Second); err != nil {
			return h, fmt.Errorf("the floor's online of %s: %w", h.Device, err)
		}
	}
	h.FloorEvents = at.Sub(t0)
	offset, ok := c.clockOffset()
	if !ok {
		return h, errors.New("the guest console has no \"setting system clock to\" line: cannot place the agent's read on the kernel's clock")
	}
	readAt := time.Duration(n.ReadAt.UnixNano()) - offset // on the printk clock
	// The kernel's uevent lines of the device: the first is its add; the online is the last one
	// printed before the agent read it.
	kernel := "kobject: '" + h.Device + "' "
	var first, online *consoleLine
	deadline := time.Now().Add(time.Second)
	for online == nil && time.Now().Before(deadline) {
		for _, l := range c.since(mark) {
			if !strings.Contains(l.text, kernel) || l.guest == 0 {
				continue
			}
			if first == nil {
				first = &l
			}
			if l.guest <= readAt {
				online = &l
			}
		}
		if online == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if first == nil || online == nil {
		return h, fmt.Errorf("the console shows no uevent of %s before the agent read it", h.Device)
	}
	h.KernelAdd, h.KernelOnline = first.at.Sub(t0), online.at.Sub(t0)
	h.OnlineToRead = readAt - online.guest
	h.FloorOnlineToRead = time.Duration(fl.ReadAt.UnixNano()) - offset - online.guest
	return h, nil
}

// console follows the guest's serial log, noting when each line appeared (host clock, polled
// every millisecond).
type console struct {
	mu    sync.Mutex
	lines []consoleLine
	done  chan struct{}
	wg    sync.WaitGroup
}

type consoleLine struct {
	at    time.Time     // when the host saw it
	guest time.Duration // its printk timestamp, for the kernel's lines; 0 otherwise
	text  string
}

// printkTime matches the printk timestamp that starts a kernel console line.
var printkTime = regexp.MustCompile(`^\[\s*(\d+)\.(\d{6})\]`)

// systemClock matches the kernel's line for setting the wall clock from the RTC at boot.
var systemClock = regexp.MustCompile(`setting system clock to .*\((\d+)\)`)

// clockOffset returns the guest's wall clock minus its printk clock, from the kernel's line that
// set the wall clock from the RTC just before it was printed: the RTC counts whole seconds, and
// rtc_hctosys sets the clock to the middle of the second it reads (tv_nsec = NSEC_PER_SEC >> 1).
func (c *console) clockOffset() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		if m := systemClock.FindStringSubmatch(l.text); m != nil && l.guest != 0 {
			epoch, err := strconv.ParseInt(m[1], 10, 64)
			if err != nil {
				return 0, false
			}
			return time.Duration(epoch)*time.Second + time.Second/2 - l.guest, true
		}
	}
	return 0, false
}

func newConsole(path string) *console {
	c := &console{done: make(chan struct{})}
	c.wg.Go(func() {
		var off int64
		var partial []byte
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-c.done:
				return
			case <-time.After(time.Millisecond):
			}
			f, err := os.Open(path)
			if err != nil {
				continue
			}
			for {
				n, err := f.ReadAt(buf, off)
				if n > 0 {
					at := time.Now()
					off += int64(n)
					partial = append(partial, buf[:n]...)
					for {
						i := bytes.IndexByte(partial, '\n')
						if i < 0 {
							break
						}
						l := consoleLine{at: at, text: string(partial[:i])}
						if m := printkTime.FindStringSubmatch(l.text); m != nil {
							sec, _ := strconv.ParseInt(m[1], 10, 64)
							usec, _ := strconv.ParseInt(m[2], 10, 64)
							l.guest = time.Duration(sec)*time.Second + time.Duration(usec)*time.Microsecond
						}
						c.mu.Lock()
						c.lines = append(c.lines, l)
						c.mu.Unlock()
						partial = partial[i+1:]
					}
				}
				if err != nil || n == 0 {
					break
				}
			}
			f.Close()
		}
	})
	return c
}

func (c *console) stop() { close(c.done); c.wg.Wait() }

func (c *console) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

func (c *console) since(mark int) []consoleLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]consoleLine(nil), c.lines[mark:]...)
}

// waitAgent waits for the guest's init to start the agent, then for /healthz. (A connection made
// through the host forward before the guest listens is not refused, only delayed by seconds: so
// nothing is asked before the init says the agent runs.)
func waitAgent(ctx context.Context, vm *qemu.VM, base string) error {
	if err := vm.WaitSerial(ctx, "hotplug-guest-init: agent started"); err != nil {
		return err
	}
	return waitHealthy(ctx, base)
}

// waitHealthy waits for base/healthz to answer 200.
func waitHealthy(ctx context.Context, base string) error {
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		req, _ := http.NewRequestWithContext(actx, "GET", base+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s/healthz: %w", base, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// eventStream is an /events subscription; each notification carries the host time its data line
// was read.
type eventStream struct {
	ch     chan timedNote
	cancel context.CancelFunc
}

type timedNote struct {
	n  note
	at time.Time
}

// note is a line of the agent's stream (Event, InterfaceClass, SymbolicLink) or the floor's
// (Action, Devpath); both carry ReadAt.
type note struct {
	Event          string    `json:"event"`
	InterfaceClass string    `json:"interface_class"`
	SymbolicLink   string    `json:"symbolic_link"`
	Action         string    `json:"action"`
	Devpath        string    `json:"devpath"`
	ReadAt         time.Time `json:"read_at"`
}

func subscribe(ctx context.Context, url string) (*eventStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	s := &eventStream{ch: make(chan timedNote, 1024), cancel: cancel}
	go func() {
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		for {
			line, err := r.ReadString('\n')
			at := time.Now()
			if data, ok := strings.CutPrefix(line, "data:"); ok {
				var n note
				if json.Unmarshal([]byte(strings.TrimSpace(data)), &n) == nil {
					s.ch <- timedNote{n, at}
				}
			}
			if err != nil {
				close(s.ch)
				return
			}
		}
	}()
	return s, nil
}

func (s *eventStream) next(ctx context.Context, d time.Duration) (note, time.Time, error) {
	select {
	case t, ok := <-s.ch:
		if !ok {
			return note{}, time.Time{}, errors.New("/events ended")
		}
		return t.n, t.at, nil
	case <-time.After(d):
		return note{}, time.Time{}, fmt.Errorf("no notification on /events within %v", d)
	case <-ctx.Done():
		return note{}, time.Time{}, ctx.Err()
	}
}

// drain discards notifications already received.
func (s *eventStream) drain() {
	for {
		select {
		case <-s.ch:
		default:
			return
		}
	}
}

func (s *eventStream) close() { s.cancel() }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// renderQEMU is the report's block for the QEMU figure.
func renderQEMU(r *QEMUResult) string {
	var s strings.Builder
	fmt.Fprintf(&s, "QEMU %s (TCG, 1 vCPU at boot), guest kernel %s (%s); the guest's agent onlines hot-added CPUs, the kernel onlines hot-added memory (`memhp_default_state=online`); `%s`. Times in ms on the host's clock from just before the QMP `device_add`. The guest kernel's uevents: their `kobject_uevent_env` debug lines (`dyndbg`) as they appeared on the serial console, polled every millisecond. The agent's read: the notification's `read_at`, on the guest's clock, after the kernel's `online` line.\n\n",
		r.QEMU, r.Guest, r.Boot, r.Command)
	row := func(kind string, h Hotplug) []string {
		return []string{kind + " " + h.Device, msf(h.QMPReturn), msf(h.KernelAdd), msf(h.KernelOnline), msf(h.AgentRead()), msf(h.Events),
			msf(h.OnlineToRead), msf(h.Events - h.AgentRead()), msf(h.Events - h.KernelOnline)}
	}
	var rows [][]string
	for _, h := range r.CPU {
		rows = append(rows, row("CPU", h))
	}
	for _, h := range r.DIMM {
		rows = append(rows, row("DIMM", h))
	}
	s.WriteString(table([]string{"hot-add", "QMP answered", "guest kernel `add` uevent", "guest kernel `online` uevent",
		"guest agent read `online`", "arrival on host `/events`", "kernel `online` to agent read (guest clock)", "agent read to `/events`",
		"kernel `online` to `/events`"}, rows))
	s.WriteString(renderFloor(r))
	return s.String()
}

// renderFloor compares the agent with the floor on the same online uevents.
func renderFloor(r *QEMUResult) string {
	all := append(append([]Hotplug(nil), r.CPU...), r.DIMM...)
	var rows [][]string
	var diff []time.Duration
	byKind := map[string][]time.Duration{}
	for i, h := range all {
		if h.FloorEvents == 0 {
			continue
		}
		kind := "CPU"
		if i >= len(r.CPU) {
			kind = "DIMM"
		}
		agent, floor := h.Events-h.KernelOnline, h.FloorEvents-h.KernelOnline
		diff = append(diff, agent-floor)
		byKind[kind] = append(byKind[kind], agent-floor)
		rows = append(rows, []string{kind + " " + h.Device,
			msf(h.FloorOnlineToRead), msf(h.OnlineToRead),
			msf(h.FloorEvents - h.KernelOnline - h.FloorOnlineToRead), msf(h.Events - h.AgentRead()),
			msf(floor), msf(agent), msf(agent - floor)})
	}
	if len(rows) == 0 {
		return ""
	}
	var s strings.Builder
	s.WriteString("\nThe same `online` uevents through the floor, `uevent-sse-floor` (a blocking `recvmsg` loop that writes one SSE line per uevent and flushes it, nothing else), running in the same guest beside the agent:\n\n")
	s.WriteString(table([]string{"hot-add", "kernel `online` to read: floor", "agent",
		"read to the host's line: floor", "agent", "kernel `online` to the host's line: floor", "agent", "agent minus floor"}, rows))
	sum, cpu, dimm := bench.Summarize(diff), bench.Summarize(byKind["CPU"]), bench.Summarize(byKind["DIMM"])
	fmt.Fprintf(&s, "\nAgent minus floor, kernel `online` to the host's line, over the %d hot-adds: median %s ms, max %s ms (CPUs: median %s ms; DIMMs: median %s ms).\n",
		sum.N, msf(sum.P50), msf(sum.Max), msf(cpu.P50), msf(dimm.P50))
	return s.String()
}
