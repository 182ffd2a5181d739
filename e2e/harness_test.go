//go:build linux

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"

	"github.com/hotplug-agent/hotplug-agent/internal/qemu"
)

// guestPort is the agent's HTTP port inside the guest.
const guestPort = 19100

// env is what every guest needs, prepared once per test binary by prepare.
var env struct {
	once     sync.Once
	missing  error // what is not installed: the tests skip (or fail when CI=true)
	err      error // a failure to prepare what is installed: the tests fail
	cacheDir string
	kernel   qemu.Kernel
	binDir   string
	init     string
	agent    string
}

// prepare finds QEMU and the kernel, and builds the static init and agent, once. It skips t
// when QEMU or the kernel is missing, or fails it then when CI=true: CI must never skip the QEMU
// tests silently. A build that fails fails t.
func prepare(t testing.TB) {
	t.Helper()
	env.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if major, minor, err := qemu.QEMUVersion(ctx, ""); err != nil {
			env.missing = err
			return
		} else if major < 10 {
			env.missing = fmt.Errorf("QEMU %d.%d is too old: 7.2 corrupts its heap after a vCPU unplug under TCG; need 10 (run: bash scripts/qemu-deps.sh)", major, minor)
			return
		}
		if env.cacheDir, env.err = qemu.DefaultCacheDir(); env.err != nil {
			return
		}
		if env.kernel, env.missing = qemu.FindKernel(env.cacheDir); env.missing != nil {
			return
		}
		root, err := qemu.ModuleRoot()
		if err != nil {
			env.err = err
			return
		}
		env.binDir, env.err = os.MkdirTemp("", "hotplug-e2e-bin")
		if env.err != nil {
			return
		}
		env.init = filepath.Join(env.binDir, "init")
		env.agent = filepath.Join(env.binDir, "hotplug-agent")
		start := time.Now()
		if env.err = qemu.BuildStatic(ctx, root, "./cmd/hotplug-guest-init", env.init); env.err != nil {
			return
		}
		if env.err = qemu.BuildStatic(ctx, root, "./cmd/hotplug-agent", env.agent); env.err != nil {
			return
		}
		fmt.Fprintf(os.Stderr, "e2e: built static init and agent in %v\n", time.Since(start).Round(time.Millisecond))
	})
	if env.err != nil {
		t.Fatalf("QEMU end-to-end tests: %v", env.err)
	}
	if env.missing != nil {
		testenv.Unavailable(t, "QEMU end-to-end tests: %v", env.missing)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if env.binDir != "" {
		os.RemoveAll(env.binDir)
	}
	if sysEnv.dir != "" {
		os.RemoveAll(sysEnv.dir)
	}
	os.Exit(code)
}

// guestOptions describe one guest.
type guestOptions struct {
	// name labels the guest's artefact folder and logs.
	name string
	// append is added to the kernel command line (e.g. memhp_default_state=offline).
	append []string
	// config is the agent's config.yaml.
	config string
	// memory, maxMem and slots size the guest's memory (-m memory,slots=,maxmem=); empty or 0
	// take qemu.Config's defaults (512M, 4G, 4).
	memory, maxMem string
	slots          int
	// helpers are static programs (host paths) the init starts beside the agent.
	helpers []string
	// vm, when set, adjusts the QEMU configuration (memory size, slots) before the boot.
	vm func(*qemu.Config)
}

// guest is a booted VM whose agent answers on base.
type guest struct {
	name     string
	vm       *qemu.VM
	base     string // http://127.0.0.1:port
	dir      string // artefacts: serial.log, qmp.log, command line
	bootTime time.Duration
	qmpLog   *os.File
	logMu    sync.Mutex
	tainted  bool

	// boot values, read once the agent is ready
	bootCPUs, bootBlocks int

	// what the scenarios plugged and have not yet unplugged
	dimms []plugged
	cpus  []plugged
	seq   int
}

// artefactRoot is where guests keep their logs: $HOTPLUG_E2E_ARTEFACTS, or <cache>/artefacts.
func artefactRoot() string {
	if d := os.Getenv("HOTPLUG_E2E_ARTEFACTS"); d != "" {
		return d
	}
	return filepath.Join(env.cacheDir, "artefacts")
}

// artefactDir returns the emptied folder <root>/<test>/<name> for a guest's logs.
func artefactDir(t testing.TB, test, name string) string {
	clean := regexp.MustCompile(`[^A-Za-z0-9_.-]+`)
	dir := filepath.Join(artefactRoot(), clean.ReplaceAllString(test, "_"), clean.ReplaceAllString(name, "_"))
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artefact folder: %v", err)
	}
	return dir
}

// bootGuest builds the guest's initramfs, boots it, and waits until the agent's /healthz answers
// through the host-forwarded port. It fails t if the guest does not come up (stopping it); the
// caller stops it otherwise (guest.stop).
func bootGuest(t testing.TB, o guestOptions, dir string) *guest {
	t.Helper()
	prepare(t)
	g := &guest{name: o.name, dir: dir}
	initrd := filepath.Join(g.dir, "initramfs.cpio")
	err := qemu.Guest{
		Init:        env.init,
		Agent:       env.agent,
		AgentConfig: o.config,
		AgentArgs:   []string{"--log.level=debug"},
		Helpers:     o.helpers,
		Port:        guestPort,
		Kernel:      env.kernel,
	}.WriteInitramfs(initrd)
	if err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	os.WriteFile(filepath.Join(g.dir, "config.yaml"), []byte(o.config), 0o644)
	g.qmpLog, err = os.Create(filepath.Join(g.dir, "qmp-events.log"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg qemu.Config
	var port int
	// The host port is free when chosen, but another process may take it before QEMU binds it:
	// then QEMU exits at once, and another port is tried.
	for attempt := 1; ; attempt++ {
		if port, err = qemu.FreePort(); err != nil {
			t.Fatal(err)
		}
		cfg = qemu.Config{
			Kernel:    env.kernel,
			Initramfs: initrd,
			Append:    o.append,
			Memory:    o.memory,
			MaxMem:    o.maxMem,
			Slots:     o.slots,
			Forwards:  []qemu.Forward{{HostPort: port, GuestPort: guestPort}},
			Dir:       g.dir,
		}
		if o.vm != nil {
			o.vm(&cfg)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		g.vm, err = qemu.Start(ctx, cfg, qemu.WithEventHandler(func(e qemu.Event) {
			g.logMu.Lock()
			fmt.Fprintf(g.qmpLog, "%s %s\n", e.Time.Format("15:04:05.000000"), e)
			g.logMu.Unlock()
		}))
		cancel()
		if err == nil {
			break
		}
		if attempt < 3 && strings.Contains(err.Error(), "host forwarding") {
			t.Logf("QEMU could not forward port %d (taken meanwhile?); trying another: %v", port, err)
			continue
		}
		t.Fatalf("start QEMU: %v", err)
	}
	os.WriteFile(filepath.Join(g.dir, "command.txt"), []byte(g.vm.Command()+"\n"), 0o644)
	ok := false
	defer func() {
		if !ok {
			g.stop()
			g.logArtefacts(t)
		}
	}()
	g.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	// Boot: the agent answers /healthz through user networking's host forward.
	bctx, bcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer bcancel()
	if err := g.waitHealthy(bctx); err != nil {
		t.Fatalf("guest %s: %v", g.name, err)
	}
	g.bootTime = time.Since(g.vm.Started)
	os.Remove(initrd) // QEMU read it at start; 20 MB less in the artefacts
	cpus, blocks := g.interfaceCounts(t)
	g.bootCPUs, g.bootBlocks = cpus, blocks
	t.Logf("guest %s: agent ready %v after QEMU started (kernel %s, %s); %d CPUs and %d memory blocks online; artefacts in %s",
		g.name, g.bootTime.Round(time.Millisecond), env.kernel.Version, bootKind(cfg), cpus, blocks, g.dir)
	ok = true
	return g
}

// stop quits QEMU. Safe to call more than once.
func (g *guest) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.vm.Stop(ctx)
	g.logMu.Lock()
	g.qmpLog.Close()
	g.logMu.Unlock()
}

// logArtefacts tells where the guest's logs are, and the end of its console.
func (g *guest) logArtefacts(t testing.TB) {
	t.Helper()
	t.Logf("guest %s artefacts kept in %s: serial console %s, QMP events %s, command line %s",
		g.name, g.dir, g.vm.SerialLog, filepath.Join(g.dir, "qmp-events.log"), filepath.Join(g.dir, "command.txt"))
	t.Logf("guest %s console (last 80 lines):\n%s", g.name, tail(g.vm.Serial(), 80))
	if out := g.vm.Output(); out != "" {
		t.Logf("QEMU said: %s", out)
	}
}

// pool keeps at most one guest running (the machine has two cores; a TCG guest uses one) and
// reuses it across the scenarios that need the same kind. A guest that a failed scenario used is
// not reused: its state is unknown.
type pool struct {
	test    string // the top-level test's name: the artefacts' folder
	mu      sync.Mutex
	current *guest
	boots   map[string]int
}

// use returns a running guest of kind o.name, booting it (and stopping any other) when needed.
// If t fails, the guest's artefacts are logged and the guest is retired.
func (p *pool) use(t testing.TB, o guestOptions) *guest {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if g := p.current; g != nil && (g.name != o.name || g.tainted) {
		g.stop()
		p.current = nil
	}
	if p.current == nil {
		if p.boots == nil {
			p.boots = map[string]int{}
		}
		p.boots[o.name]++
		name := o.name
		if n := p.boots[o.name]; n > 1 {
			name = fmt.Sprintf("%s-boot%d", o.name, n) // keep the retired guest's logs
		}
		p.current = bootGuest(t, o, artefactDir(t, p.test, name))
	}
	g := p.current
	t.Cleanup(func() {
		if t.Failed() {
			g.tainted = true
			g.logArtefacts(t)
		}
	})
	return g
}

// close stops the running guest.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current != nil {
		p.current.stop()
		p.current = nil
	}
}

func bootKind(c qemu.Config) string {
	if c.PVH() {
		return "vmlinux through PVH and qboot"
	}
	return "vmlinuz through SeaBIOS"
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var client = &http.Client{Timeout: 10 * time.Second}

// waitHealthy waits for the init to start the agent, then for /healthz to answer 200. (A
// connection made through the host forward before the guest listens is not refused: QEMU's
// user-mode stack retransmits its SYN with a backoff of seconds. So nothing is asked before
// the agent runs, and each attempt is short.)
func (g *guest) waitHealthy(ctx context.Context) error {
	if err := g.vm.WaitSerial(ctx, "hotplug-guest-init: agent started"); err != nil {
		return err
	}
	return g.waitHealthyHTTP(ctx)
}

// waitHealthyHTTP waits for /healthz to answer 200 through the host forward: ask only once the
// agent runs (see waitHealthy).
func (g *guest) waitHealthyHTTP(ctx context.Context) error {
	var last error
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		req, _ := http.NewRequestWithContext(actx, "GET", g.base+"/healthz", nil)
		resp, err := client.Do(req)
		cancel()
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the agent's /healthz through %s: %w (last error: %v)", g.base, ctx.Err(), last)
		case <-g.vm.Exited():
			return fmt.Errorf("waiting for the agent's /healthz: QEMU exited (%v)", g.vm.ExitErr())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// iface is an element of /interfaces, or the interface part of a notification.
type iface struct {
	InterfaceClass string `json:"interface_class"`
	SymbolicLink   string `json:"symbolic_link"`
	CPU            *int   `json:"cpu"`
	MemoryBlock    *int   `json:"memory_block"`
	PhysStart      uint64 `json:"phys_start"`
	Size           uint64 `json:"size"`
	State          string `json:"state"`
	Zones          string `json:"zones"`
	MemoryDevice   string `json:"memory_device"`
	MemoryBlocks   string `json:"memory_blocks"`
}

// notification is one /events data line.
type notification struct {
	iface
	ID     uint64    `json:"id"`
	Event  string    `json:"event"`
	Seqnum uint64    `json:"seqnum"`
	ReadAt time.Time `json:"read_at"`
	Cause  string    `json:"cause"`
	// SSEEvent is the frame's `event:` name: empty for a notification, "resync" for the active
	// set sent instead of a history that no longer reaches back. A resync's data is not a
	// notification: only LastID and Interfaces are set.
	SSEEvent string `json:"-"`
	// Recv is when the host read the notification off the stream (the host's clock).
	Recv       time.Time `json:"-"`
	LastID     uint64    `json:"last_id"`
	Interfaces []iface   `json:"interfaces"`
}

func (n notification) String() string {
	return fmt.Sprintf("%s %s (%s, %s, seqnum %d)", n.Event, n.SymbolicLink, n.State, n.Cause, n.Seqnum)
}

func (g *guest) get(t testing.TB, path string) []byte {
	t.Helper()
	resp, err := client.Get(g.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %v: %s", path, resp.Status, err, b)
	}
	return b
}

// interfaces returns /interfaces?class=class.
func (g *guest) interfaces(t testing.TB, class string) []iface {
	t.Helper()
	var out []iface
	if err := json.Unmarshal(g.get(t, "/interfaces?class="+class), &out); err != nil {
		t.Fatalf("/interfaces: %v", err)
	}
	return out
}

func (g *guest) interfaceCounts(t testing.TB) (cpus, blocks int) {
	t.Helper()
	return len(g.interfaces(t, "processor")), len(g.interfaces(t, "memory"))
}

// metrics scrapes /metrics into series -> value; a series is written as the exposition prints it:
// name{label="value",...} with labels in the order promhttp prints them (sorted).
func (g *guest) metrics(t testing.TB) metricSet {
	t.Helper()
	m := metricSet{}
	sc := bufio.NewScanner(strings.NewReader(string(g.get(t, "/metrics"))))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}

type metricSet map[string]float64

// get returns the value of the series name{labels...}; labels are given as "k", "v" pairs in
// alphabetical order of keys. A series not exposed is 0.
func (m metricSet) get(name string, labels ...string) float64 {
	key := name
	if len(labels) > 0 {
		var parts []string
		for i := 0; i+1 < len(labels); i += 2 {
			parts = append(parts, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
		}
		key += "{" + strings.Join(parts, ",") + "}"
	}
	return m[key]
}

// stream is an /events subscription.
type stream struct {
	ch     chan notification
	errc   chan error
	cancel context.CancelFunc
	what   string
	got    []notification
}

// subscribe opens /events with the query q and returns once the response headers have arrived
// (from then on the subscription misses nothing). It ends with t.
func (g *guest) subscribe(t testing.TB, q string) *stream {
	t.Helper()
	s := g.openStream(t, q)
	t.Cleanup(s.cancel)
	return s
}

// openStream is subscribe for a stream that outlives t: the caller ends it with its cancel.
func (g *guest) openStream(t testing.TB, q string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", g.base+"/events?"+q, nil)
	hc := &http.Client{} // no timeout: the stream lives as long as the test
	hctx, hcancel := context.WithTimeout(ctx, 15*time.Second)
	defer hcancel()
	stop := context.AfterFunc(hctx, func() {
		if errors.Is(hctx.Err(), context.DeadlineExceeded) {
			cancel()
		}
	})
	resp, err := hc.Do(req)
	stop()
	if err != nil {
		cancel()
		t.Fatalf("subscribe /events?%s: %v", q, err)
	}
	if resp.StatusCode != 200 {
		cancel()
		t.Fatalf("subscribe /events?%s: %s", q, resp.Status)
	}
	s := &stream{ch: make(chan notification, 4096), errc: make(chan error, 1), cancel: cancel, what: "/events?" + q}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event:"):
				event = strings.TrimSpace(line[6:])
			case strings.HasPrefix(line, "data:"):
				data := strings.TrimSpace(line[5:])
				if event == "error" {
					s.errc <- fmt.Errorf("stream error: %s", data)
					return
				}
				var n notification
				if err := json.Unmarshal([]byte(data), &n); err != nil {
					s.errc <- fmt.Errorf("bad notification %q: %v", data, err)
					return
				}
				n.SSEEvent = event
				n.Recv = time.Now()
				s.ch <- n
			case line == "":
				event = ""
			}
		}
		s.errc <- fmt.Errorf("stream ended: %v", sc.Err())
	}()
	return s
}

// next waits up to d for the next notification.
func (s *stream) next(t testing.TB, d time.Duration, waitingFor string) notification {
	t.Helper()
	select {
	case n := <-s.ch:
		s.got = append(s.got, n)
		return n
	case err := <-s.errc:
		t.Fatalf("%s: waiting for %s: %v (received so far: %v)", s.what, waitingFor, err, s.got)
	case <-time.After(d):
		t.Fatalf("%s: no notification within %v while waiting for %s (received so far: %v)", s.what, d, waitingFor, s.got)
	}
	return notification{}
}

// take waits up to d in all for n notifications.
func (s *stream) take(t testing.TB, n int, d time.Duration, waitingFor string) []notification {
	t.Helper()
	deadline := time.Now().Add(d)
	var out []notification
	for len(out) < n {
		left := time.Until(deadline)
		if left <= 0 {
			left = time.Millisecond
		}
		out = append(out, s.next(t, left, fmt.Sprintf("%s (%d of %d received: %v)", waitingFor, len(out), n, out)))
	}
	return out
}

// quiet asserts that nothing arrives within d: used after an expected sequence to show that
// nothing was announced twice.
func (s *stream) quiet(t testing.TB, d time.Duration, after string) {
	t.Helper()
	select {
	case n := <-s.ch:
		t.Fatalf("%s: unexpected notification after %s: %v", s.what, after, n)
	case err := <-s.errc:
		t.Fatalf("%s: after %s: %v", s.what, after, err)
	case <-time.After(d):
	}
}
