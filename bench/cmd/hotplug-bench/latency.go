//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/hotplug-agent/hotplug-agent/agent"
	"github.com/hotplug-agent/hotplug-agent/bench"
	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/udev"
)

// The four ways a uevent reaches code, measured side by side.
const (
	vFloor  = "floor"  // a bare recvmsg loop in this process
	vInproc = "inproc" // the agent in this process, a Go callback registered on its registry
	vExec   = "exec"   // the agent in this process, an exec callback from its configuration
	vUdevd  = "udevd"  // systemd-udevd with one RUN+= rule
)

var variants = []string{vFloor, vInproc, vExec, vUdevd}

// LatencyResult is the figure of the kernel-to-callback benchmark.
type LatencyResult struct {
	Machine      Machine `json:"machine"`
	Command      string  `json:"command"`
	CPU          int     `json:"cpu"`           // the CPU whose uevent file is written
	Events       int     `json:"events"`        // timed events per variant
	Warmup       int     `json:"warmup"`        // untimed rounds first
	Gap          string  `json:"gap"`           // pause after each event
	UdevdVersion string  `json:"udevd_version"` // systemd-udevd --version
	// FromWrite is, per variant, the time from just before the write(2) to the uevent file to
	// the start of the code that handles it.
	FromWrite map[string]bench.Summary `json:"from_write"`
	// FromFloor is, per variant, the time from the bare loop's recvmsg of the same uevent to the
	// start of the code: what each path adds to reading the datagram.
	FromFloor map[string]bench.Summary `json:"from_floor"`
	// FloorAll is the bare loop on every uevent written, whichever variant it was for.
	FloorAll bench.Summary `json:"floor_all"`
	// InprocRead splits the in-process path: from the bare loop's recvmsg to the agent's own
	// (ReadAt: the kernel waking a second socket, and Go's netpoller), and from the agent's read to
	// the callback (parse, translate with its sysfs read, publish, hand-off to the registration's
	// goroutine). Measured in the same events as FromWrite[inproc].
	InprocFloorToRead bench.Summary `json:"inproc_floor_to_read"`
	InprocReadToCall  bench.Summary `json:"inproc_read_to_callback"`
	// Lost counts events whose handler never reported within the timeout, per variant.
	Lost map[string]int `json:"lost"`
	// Real is the same paths on real offline/online cycles of the CPU, the agents unmodified.
	Real *RealCycles `json:"real,omitempty"`
}

// RealCycles is the paths on real CPU online transitions: the agents open their uevent sockets
// themselves, as in production (no TaggedSource), and udevd runs a rule for the CPU's online.
type RealCycles struct {
	Cycles int `json:"cycles"`
	// FromWrite is, per variant, the time from the write of 1 to cpuN/online to the bare loop's
	// read of the kernel's online uevent (floor) or to the handler's start; the kernel's bring-up
	// of the CPU is most of it.
	FromWrite map[string]bench.Summary `json:"from_write"`
	// FromFloor is the in-process callback's AfterFloor (kept for results without AfterFloor).
	FromFloor bench.Summary `json:"from_floor"`
	// AfterFloor is, per variant but the floor, the bare loop's recvmsg of the online uevent to
	// the handler's start.
	AfterFloor map[string]bench.Summary `json:"after_floor,omitempty"`
	// Lost counts cycles whose handler never reported within the timeout, per variant.
	Lost map[string]int `json:"lost,omitempty"`
}

func latencyCmd(ctx context.Context, fs *flag.FlagSet, out *string) error {
	n := fs.Int("n", 1000, "timed events per variant")
	warmup := fs.Int("warmup", 20, "untimed rounds first")
	cpu := fs.Int("cpu", 1, "CPU whose uevent file is written (and, for -real, taken offline and back)")
	stamp := fs.String("stamp", ".cache/bench/stamp", "the static stamp helper (cc -O2 -static -o stamp bench/stamp/stamp.c)")
	udevd := fs.String("udevd", "/lib/systemd/systemd-udevd", "systemd-udevd binary")
	gap := fs.Duration("gap", 3*time.Millisecond, "pause after each event, for the machine to settle")
	real := fs.Int("real", 100, "real offline/online cycles of the CPU for the unmodified agents and udevd (0: none)")
	fs.Parse(os.Args[2:])
	if err := requireRoot(); err != nil {
		return err
	}
	stampPath, err := filepath.Abs(*stamp)
	if err != nil {
		return err
	}
	if _, err := os.Stat(stampPath); err != nil {
		return fmt.Errorf("stamp helper: %w (bench/run.sh builds it)", err)
	}
	unlock, err := lockCPUs(ctx)
	if err != nil {
		return err
	}
	defer unlock()

	res := LatencyResult{
		Machine: machine(),
		Command: "hotplug-bench " + strings.Join(os.Args[1:], " "),
		CPU:     *cpu, Events: *n, Warmup: *warmup, Gap: gap.String(),
	}
	if b, err := exec.Command(*udevd, "--version").Output(); err == nil {
		res.UdevdVersion = strings.TrimSpace(string(b))
	}
	h, err := newHarness(ctx, *cpu, stampPath, *udevd)
	if err != nil {
		return err
	}
	defer h.close()
	if err := h.interleaved(ctx, &res, *warmup, *n, *gap); err != nil {
		return err
	}
	h.stopUdevd()
	h.stopAgent(vExec)
	h.stopAgent(vInproc)
	if _, err := os.Stat(h.dev + "/online"); err != nil && *real > 0 {
		fmt.Fprintf(os.Stderr, "latency: cpu%d cannot be taken offline (%v): no real cycles\n", *cpu, err)
	} else if *real > 0 {
		if res.Real, err = h.realCycles(ctx, *real, stampPath, *udevd); err != nil {
			return err
		}
	}
	res.Machine.done()
	printLatency(&res)
	return save(*out, "latency", &res)
}

// harness holds the four consumers of the benchmark's uevents.
type harness struct {
	cpu    int
	dev    string // /sys/devices/system/cpu/cpuN
	uevent int    // fd of dev/uevent, open for writing
	dir    string // temporary: the stamp sockets, udevd's log

	floorFD int
	floor   chan floorMsg
	stamps  chan stampMsg
	socks   []*net.UnixConn
	stop    context.CancelFunc
	agents  map[string]chan error // Run's result, per agent variant
	// sysfs is, per tagged agent variant, the root of the sysfs tree the agent reads: a small
	// fixture whose cpuN/online and cpu/online the harness sets to what each tagged uevent says,
	// since the agent believes a transition only when sysfs shows it, and a synthetic uevent
	// changes nothing in /sys.
	sysfs  map[string]string
	cancel map[string]context.CancelFunc
	udevd  *exec.Cmd
}

// floorMsg is one uevent as the bare loop read it.
type floorMsg struct {
	uuid string // SYNTH_UUID; "" for a real uevent
	tag  string // SYNTH_ARG_BENCH
	dev  string // DEVPATH
	act  string // ACTION
	seq  uint64
	at   int64 // CLOCK_MONOTONIC ns right after recvmsg returned
}

// stampMsg is one handler's start: from the Go callback, or from the stamp helper.
type stampMsg struct {
	src string
	seq uint64
	at  int64 // CLOCK_MONOTONIC ns
	// sinceRead is, for the Go callback, the time since the agent read the uevent
	// (time.Since(Notification.ReadAt), on Go's monotonic clock).
	sinceRead time.Duration
}

func newHarness(ctx context.Context, cpu int, stamp, udevd string) (_ *harness, err error) {
	h := &harness{
		cpu:    cpu,
		dev:    fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu),
		floor:  make(chan floorMsg, 1<<16),
		stamps: make(chan stampMsg, 1<<12),
		agents: map[string]chan error{},
		cancel: map[string]context.CancelFunc{},
		sysfs:  map[string]string{},
	}
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	if h.dir, err = os.MkdirTemp("", "hotplug-bench-latency-"); err != nil {
		return nil, err
	}
	if h.uevent, err = unix.Open(h.dev+"/uevent", unix.O_WRONLY|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("open %s/uevent: %w", h.dev, err)
	}
	var hctx context.Context
	hctx, h.stop = context.WithCancel(ctx)

	// Where the stamp helper reports, one socket per program that runs it.
	for _, src := range []string{vExec, vUdevd} {
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(h.dir, src+".sock"), Net: "unixgram"})
		if err != nil {
			return nil, err
		}
		h.socks = append(h.socks, c)
		go h.readStamps(c, src)
	}

	// (a) The floor.
	if h.floorFD, err = openFloor(); err != nil {
		return nil, err
	}
	go h.readFloor(hctx)

	for _, v := range []string{vInproc, vExec} {
		h.sysfs[v] = filepath.Join(h.dir, "sys-"+v)
		if err := os.Mkdir(h.sysfs[v], 0o755); err != nil {
			return nil, err
		}
		if err := bench.WriteFixture(h.sysfs[v], cpu+1, 0); err != nil {
			return nil, err
		}
	}
	// (b) The agent with a Go callback.
	if err := h.startAgent(hctx, vInproc, vInproc, h.sysfs[vInproc], nil); err != nil {
		return nil, err
	}
	// (c) The agent with an exec callback, configured as a user would.
	cfg, err := h.execConfig(stamp)
	if err != nil {
		return nil, err
	}
	if err := h.startAgent(hctx, vExec, vExec, h.sysfs[vExec], cfg); err != nil {
		return nil, err
	}
	// (d) udevd, its rule for the tagged uevents.
	rule := fmt.Sprintf(`ACTION=="online", SUBSYSTEM=="cpu", ENV{%s}=="%s", RUN+="%s %s"`,
		bench.TagKey, vUdevd, stamp, filepath.Join(h.dir, vUdevd+".sock"))
	if err := h.startUdevd(udevd, rule); err != nil {
		return nil, err
	}
	return h, nil
}

// execConfig is the configuration of the exec variant: a processor callback that runs the
// stamp helper, as a user would write it.
func (h *harness) execConfig(stamp string) (*config.Config, error) {
	return config.Parse(fmt.Appendf(nil, `log_notifications: false
callbacks:
  - name: stamp
    class: processor
    exec:
      command: [%q, %q]
`, stamp, filepath.Join(h.dir, vExec+".sock")))
}

// openFloor opens the bare loop's socket: blocking, so that recvmsg returns straight from the
// kernel's wake-up, with udevd's 128 MiB buffer and a receive timeout so that the loop can stop.
func openFloor() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 128<<20); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("SO_RCVBUFFORCE: %w", err)
	}
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// readFloor is the bare loop: recvmsg, note the time, and only then look at the datagram. It
// runs on a thread of its own.
func (h *harness) readFloor(ctx context.Context) {
	runtime.LockOSThread()
	buf := make([]byte, 8192)
	for ctx.Err() == nil {
		n, _, _, from, err := unix.Recvmsg(h.floorFD, buf, nil, 0)
		at := bench.Mono()
		if err != nil {
			continue // EAGAIN: the receive timeout; ENOBUFS cannot happen at 128 MiB here
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue
		}
		m := floorMsg{at: at}
		for _, f := range bytes.Split(buf[:n], []byte{0}) {
			k, v, _ := bytes.Cut(f, []byte("="))
			switch string(k) {
			case "SYNTH_UUID":
				m.uuid = string(v)
			case bench.TagKey:
				m.tag = string(v)
			case "DEVPATH":
				m.dev = string(v)
			case "ACTION":
				m.act = string(v)
			case "SEQNUM":
				m.seq, _ = strconv.ParseUint(string(v), 10, 64)
			}
		}
		select {
		case h.floor <- m:
		default: // nobody is listening for a flood of other uevents: drop them
		}
	}
}

// readStamps receives the stamp helper's reports "<seqnum> <ns>" on c.
func (h *harness) readStamps(c *net.UnixConn, src string) {
	buf := make([]byte, 128)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		seq, at, ok := strings.Cut(string(buf[:n]), " ")
		s, err1 := strconv.ParseUint(seq, 10, 64)
		t, err2 := strconv.ParseInt(at, 10, 64)
		if ok && err1 == nil && err2 == nil {
			h.stamps <- stampMsg{src: src, seq: s, at: t}
		}
	}
}

// startAgent runs an agent named name (stopAgent's key) in this process on the sysfs tree at
// root and a real uevent socket with the agent's default 128 MiB buffer, through a TaggedSource
// for tag; with tag "" the agent opens its socket itself, as in production. cfg nil registers
// the Go callback (variant inproc); otherwise cfg's callbacks are the agent's.
func (h *harness) startAgent(ctx context.Context, name, tag, root string, cfg *config.Config) error {
	var src agent.Source
	if tag != "" {
		conn, err := udev.Listen(udev.Options{ReceiveBufferBytes: 128 << 20})
		if err != nil {
			return err
		}
		src = bench.TaggedSource{Conn: conn, Tag: tag}
	}
	inproc := cfg == nil
	if inproc {
		off := false
		cfg = &config.Config{LogNotifications: &off}
	}
	a, err := agent.New(agent.Options{
		SysfsPath:          root,
		ListenAddresses:    []string{"127.0.0.1:0"},
		ReceiveBufferBytes: 128 << 20,
		Config:             cfg,
		Version:            "bench",
		Source:             src,
	})
	if err != nil {
		if src != nil {
			src.Close()
		}
		return err
	}
	if inproc {
		cb := func(_ context.Context, n notify.Notification, _ any) error {
			at, since := bench.Mono(), time.Since(n.ReadAt)
			h.stamps <- stampMsg{src: vInproc, seq: n.Seqnum, at: at, sinceRead: since}
			return nil
		}
		if _, err := a.Registry().Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.GUIDDeviceProcessor, "bench", cb, nil); err != nil {
			return err
		}
	}
	actx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- a.Run(actx) }()
	h.agents[name], h.cancel[name] = errc, cancel
	return nil
}

// udevdScript runs in a new mount and network namespace: it hides every udev rules directory
// and the host's /run behind empty tmpfs mounts, writes the one rule, and becomes udevd. The
// mounts end with the namespace, when udevd exits; nothing on the host is touched. In the new
// network namespace (owned by the initial user namespace, so the kernel sends it the CPU's
// uevents) udevd's own re-broadcast reaches no one else.
const udevdScript = `set -e
mount -t tmpfs -o mode=0755 tmpfs /run
for d in /etc/udev/rules.d /usr/lib/udev/rules.d /lib/udev/rules.d /usr/local/lib/udev/rules.d; do
  if [ -d "$d" ]; then mount -t tmpfs tmpfs "$d"; fi
done
mkdir -p /run/udev/rules.d
printf '%s\n' "$RULE" > /run/udev/rules.d/99-hotplug-bench.rules
exec "$UDEVD"
`

// startUdevd starts udevd with the one rule, which must run for a synthetic online tagged
// udevd, and waits until it runs the rule.
func (h *harness) startUdevd(udevd, rule string) error {
	logf, err := os.Create(filepath.Join(h.dir, "udevd.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", udevdScript)
	cmd.Env = append(os.Environ(), "RULE="+rule, "UDEVD="+udevd)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start udevd: %w", err)
	}
	h.udevd = cmd
	// udevd is up once it runs the rule.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, _, err := h.event(vUdevd, "online", 500*time.Millisecond); err == nil {
			return nil
		}
	}
	log, _ := os.ReadFile(filepath.Join(h.dir, "udevd.log"))
	return fmt.Errorf("udevd never ran its rule; its log:\n%s", log)
}

// event writes "<action> <uuid> BENCH=<tag>" to the CPU's uevent file and waits for the bare
// loop to read the uevent and, unless tag is the floor, for tag's handler to start. It returns
// the times from just before the write to the floor's read and to the handler's start.
func (h *harness) event(tag, action string, timeout time.Duration) (floor, handler time.Duration, err error) {
	floor, handler, _, err = h.eventSplit(tag, action, timeout)
	return floor, handler, err
}

// eventSplit is event, also returning the in-process callback's time since the agent's read.
func (h *harness) eventSplit(tag, action string, timeout time.Duration) (floor, handler, sinceRead time.Duration, err error) {
	id := uuid.NewString()
	msg := []byte(action + " " + id + " BENCH=" + tag)
	if root := h.sysfs[tag]; root != "" {
		state := "0\n"
		if action == "online" {
			state = "1\n"
		}
		p := filepath.Join(root, fmt.Sprintf("devices/system/cpu/cpu%d/online", h.cpu))
		if err := os.WriteFile(p, []byte(state), 0o644); err != nil {
			return 0, 0, 0, err
		}
		// cpu/online too, as the kernel changes both: the fixture has CPUs 0 to h.cpu.
		list := fmt.Sprintf("0-%d\n", h.cpu)
		if action != "online" {
			list = fmt.Sprintf("0-%d\n", h.cpu-1)
		}
		if err := os.WriteFile(filepath.Join(root, "devices/system/cpu/online"), []byte(list), 0o644); err != nil {
			return 0, 0, 0, err
		}
	}
	t0 := bench.Mono()
	if _, err := unix.Pwrite(h.uevent, msg, 0); err != nil {
		return 0, 0, 0, fmt.Errorf("write %s/uevent: %w", h.dev, err)
	}
	f, err := h.waitFloor(func(m floorMsg) bool { return m.uuid == id }, timeout)
	if err != nil {
		return 0, 0, 0, err
	}
	floor = time.Duration(f.at - t0)
	if tag == vFloor {
		return floor, floor, 0, nil
	}
	s, err := h.waitStamp(tag, f.seq, timeout)
	if err != nil {
		return floor, 0, 0, err
	}
	return floor, time.Duration(s.at - t0), s.sinceRead, nil
}

func (h *harness) waitFloor(match func(floorMsg) bool, timeout time.Duration) (floorMsg, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case m := <-h.floor:
			if match(m) {
				return m, nil
			}
		case <-t.C:
			return floorMsg{}, errors.New("the bare loop never read the uevent")
		}
	}
}

var errLost = errors.New("handler never started")

func (h *harness) waitStamp(src string, seq uint64, timeout time.Duration) (stampMsg, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case s := <-h.stamps:
			if s.src == src && s.seq == seq {
				return s, nil
			}
		case <-t.C:
			return stampMsg{}, fmt.Errorf("%s, seqnum %d: %w", src, seq, errLost)
		}
	}
}

// interleaved runs warmup+n rounds; each round times one event per variant, in a random order.
// The agents announce an arrival only after a removal, so an agent's timed "online" is preceded
// by an untimed "offline" for the same agent.
func (h *harness) interleaved(ctx context.Context, res *LatencyResult, warmup, n int, gap time.Duration) error {
	fromWrite := map[string][]time.Duration{}
	fromFloor := map[string][]time.Duration{}
	var floorAll, floorToRead, readToCall []time.Duration
	res.Lost = map[string]int{}
	const timeout = 2 * time.Second
	order := []int{0, 1, 2, 3}
	for round := range warmup + n {
		if err := ctx.Err(); err != nil {
			return err
		}
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, i := range order {
			v := variants[i]
			if v == vInproc || v == vExec {
				if _, _, err := h.event(v, "offline", timeout); err != nil {
					return fmt.Errorf("the removal before a timed arrival: %w", err)
				}
				time.Sleep(gap)
			}
			floor, handler, sinceRead, err := h.eventSplit(v, "online", timeout)
			switch {
			case errors.Is(err, errLost):
				if round >= warmup {
					res.Lost[v]++
				}
				// The agent missed its arrival: its record says online, as the CPU is.
			case err != nil:
				return err
			case round >= warmup:
				fromWrite[v] = append(fromWrite[v], handler)
				fromFloor[v] = append(fromFloor[v], handler-floor)
				floorAll = append(floorAll, floor)
				if v == vInproc {
					floorToRead = append(floorToRead, handler-sinceRead-floor)
					readToCall = append(readToCall, sinceRead)
				}
			}
			time.Sleep(gap)
		}
		if round > 0 && round%100 == 0 {
			fmt.Fprintf(os.Stderr, "latency: %d/%d rounds\n", round, warmup+n)
		}
	}
	res.FromWrite = map[string]bench.Summary{}
	res.FromFloor = map[string]bench.Summary{}
	for _, v := range variants {
		res.FromWrite[v] = bench.Summarize(fromWrite[v])
		if v != vFloor {
			res.FromFloor[v] = bench.Summarize(fromFloor[v])
		}
	}
	res.FloorAll = bench.Summarize(floorAll)
	res.InprocFloorToRead = bench.Summarize(floorToRead)
	res.InprocReadToCall = bench.Summarize(readToCall)
	return nil
}

// stopAgent ends the agent of variant tag.
func (h *harness) stopAgent(tag string) {
	if c := h.cancel[tag]; c != nil {
		c()
		<-h.agents[tag]
		delete(h.cancel, tag)
		delete(h.agents, tag)
	}
}

// realCycles takes the CPU offline and back online cycles times with every path listening at
// once, as in the interleaved rounds: an in-process agent with the Go callback and one with the
// exec callback, each opening its uevent socket itself exactly as in production (no
// TaggedSource), and udevd with a rule for the CPU's online. Each path's time from the floor's
// read of the kernel's own online uevent to its handler is what it adds to the kernel.
func (h *harness) realCycles(ctx context.Context, cycles int, stamp, udevd string) (*RealCycles, error) {
	online := h.dev + "/online"
	if _, err := os.Stat(online); err != nil {
		return nil, fmt.Errorf("cpu%d cannot be taken offline: %w", h.cpu, err)
	}
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const inproc, exec = "real-" + vInproc, "real-" + vExec
	if err := h.startAgent(hctx, inproc, "", "/sys", nil); err != nil {
		return nil, err
	}
	defer h.stopAgent(inproc)
	cfg, err := h.execConfig(stamp)
	if err != nil {
		return nil, err
	}
	if err := h.startAgent(hctx, exec, "", "/sys", cfg); err != nil {
		return nil, err
	}
	defer h.stopAgent(exec)
	// The rule runs for the CPU's every online, real or synthetic: startUdevd's check writes a
	// synthetic one.
	rule := fmt.Sprintf(`ACTION=="online", SUBSYSTEM=="cpu", KERNEL=="cpu%d", RUN+="%s %s"`,
		h.cpu, stamp, filepath.Join(h.dir, vUdevd+".sock"))
	if err := h.startUdevd(udevd, rule); err != nil {
		return nil, err
	}
	defer h.stopUdevd()
	// Whatever happens, the CPU ends online.
	defer os.WriteFile(online, []byte("1"), 0)
	fd, err := unix.Open(online, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	devpath := "/devices/system/cpu/cpu" + strconv.Itoa(h.cpu)
	realOnline := func(m floorMsg) bool { return m.uuid == "" && m.act == "online" && m.dev == devpath }
	realOffline := func(m floorMsg) bool { return m.uuid == "" && m.act == "offline" && m.dev == devpath }
	paths := []string{vInproc, vExec, vUdevd}
	fromWrite := map[string][]time.Duration{}
	afterFloor := map[string][]time.Duration{}
	lost := map[string]int{}
	const timeout = 5 * time.Second
	for range cycles {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, err := unix.Pwrite(fd, []byte("0"), 0); err != nil {
			return nil, fmt.Errorf("offline cpu%d: %w", h.cpu, err)
		}
		f, err := h.waitFloor(realOffline, timeout)
		if err != nil {
			return nil, err
		}
		// Both agents have announced the removal (the exec callback has run) before the online.
		if _, missing := h.waitStamps(f.seq, []string{vInproc, vExec}, timeout); len(missing) > 0 {
			return nil, fmt.Errorf("the removal of cpu%d, seqnum %d: %s: %w", h.cpu, f.seq, strings.Join(missing, ", "), errLost)
		}
		time.Sleep(20 * time.Millisecond)
		t0 := bench.Mono()
		if _, err := unix.Pwrite(fd, []byte("1"), 0); err != nil {
			return nil, fmt.Errorf("online cpu%d: %w", h.cpu, err)
		}
		if f, err = h.waitFloor(realOnline, timeout); err != nil {
			return nil, err
		}
		fromWrite[vFloor] = append(fromWrite[vFloor], time.Duration(f.at-t0))
		got, missing := h.waitStamps(f.seq, paths, timeout)
		for _, v := range missing {
			lost[v]++
		}
		for v, s := range got {
			fromWrite[v] = append(fromWrite[v], time.Duration(s.at-t0))
			afterFloor[v] = append(afterFloor[v], time.Duration(s.at-f.at))
		}
		time.Sleep(20 * time.Millisecond)
	}
	rc := &RealCycles{Cycles: cycles, FromWrite: map[string]bench.Summary{}, AfterFloor: map[string]bench.Summary{}, Lost: lost}
	for _, v := range variants {
		rc.FromWrite[v] = bench.Summarize(fromWrite[v])
		if v != vFloor {
			rc.AfterFloor[v] = bench.Summarize(afterFloor[v])
		}
	}
	rc.FromFloor = rc.AfterFloor[vInproc]
	return rc, nil
}

// waitStamps waits for the handlers of srcs to report seqnum seq, discarding other reports, and
// returns the reports by source and the sources that did not report within timeout.
func (h *harness) waitStamps(seq uint64, srcs []string, timeout time.Duration) (map[string]stampMsg, []string) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	got := map[string]stampMsg{}
	for len(got) < len(srcs) {
		select {
		case s := <-h.stamps:
			if s.seq == seq && slices.Contains(srcs, s.src) {
				got[s.src] = s
			}
		case <-t.C:
			var missing []string
			for _, v := range srcs {
				if _, ok := got[v]; !ok {
					missing = append(missing, v)
				}
			}
			return got, missing
		}
	}
	return got, nil
}

func (h *harness) stopUdevd() {
	if h.udevd == nil {
		return
	}
	// udevd ends its workers on SIGTERM; the group kill is for anything left behind.
	syscall.Kill(h.udevd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { h.udevd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-h.udevd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	syscall.Kill(-h.udevd.Process.Pid, syscall.SIGKILL)
	h.udevd = nil
}

func (h *harness) close() {
	h.stopUdevd()
	for tag, c := range h.cancel {
		c()
		<-h.agents[tag]
	}
	if h.stop != nil {
		h.stop()
	}
	if h.floorFD > 0 {
		time.Sleep(300 * time.Millisecond) // the floor loop's receive timeout
		unix.Close(h.floorFD)
	}
	for _, c := range h.socks {
		c.Close()
	}
	if h.uevent > 0 {
		unix.Close(h.uevent)
	}
	if h.dir != "" {
		os.RemoveAll(h.dir)
	}
}

func printLatency(r *LatencyResult) {
	fmt.Printf("kernel to handler, %d synthetic online uevents per variant on cpu%d (load %s -> %s)\n",
		r.Events, r.CPU, r.Machine.LoadBefore, r.Machine.LoadAfter)
	for _, v := range variants {
		s := r.FromWrite[v]
		fmt.Printf("  %-7s n=%4d p50 %s  p99 %s  max %s  lost %d\n", v, s.N, ms(s.P50), ms(s.P99), ms(s.Max), r.Lost[v])
	}
	if rc := r.Real; rc != nil {
		fmt.Printf("real online cycles: %d; write to the floor's read p50 %s; after the floor's read:\n", rc.Cycles, ms(rc.FromWrite[vFloor].P50))
		for _, v := range variants[1:] {
			s := rc.AfterFloor[v]
			fmt.Printf("  %-7s n=%4d p50 %s  p99 %s  max %s  lost %d\n", v, s.N, ms(s.P50), ms(s.P99), ms(s.Max), rc.Lost[v])
		}
	}
}
