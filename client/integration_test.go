//go:build linux

package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/agent"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// liveAgent is the real agent, in this process, on the machine's real uevents and sysfs.
type liveAgent struct {
	a      *agent.Agent
	addr   string
	cancel context.CancelFunc
	done   chan error
}

func startLiveAgent(t *testing.T, name, statePath string) *liveAgent {
	t.Helper()
	a, err := agent.New(agent.Options{
		SysfsPath:          "/sys",
		ListenAddresses:    []string{"127.0.0.1:0"},
		StatePath:          statePath,
		ReceiveBufferBytes: 16 << 20,
		Version:            "test",
		Logger:             testLogger(t, name),
	})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &liveAgent{a: a, addr: a.Addrs()[0].String(), cancel: cancel, done: make(chan error, 1)}
	go func() { l.done <- a.Run(ctx) }()
	t.Cleanup(func() { l.stop(t) })
	return l
}

// stop shuts the agent down as SIGTERM does (the state file is saved); it may be called again.
func (l *liveAgent) stop(t *testing.T) {
	t.Helper()
	if l.cancel == nil {
		return
	}
	l.cancel()
	l.cancel = nil
	select {
	case err := <-l.done:
		if err != nil {
			t.Errorf("agent run: %v", err)
		}
	case <-time.After(patience):
		t.Errorf("agent did not stop within %s", patience)
	}
}

// interfaces is the agent's /interfaces, as a user reads it.
func (l *liveAgent) interfaces(t *testing.T) []notify.Interface {
	t.Helper()
	resp, err := http.Get("http://" + l.addr + "/interfaces")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw []json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatalf("/interfaces: %v", err)
	}
	out := make([]notify.Interface, 0, len(raw))
	for _, r := range raw {
		i, err := DecodeInterface(r)
		if err != nil {
			t.Fatalf("/interfaces: %v", err)
		}
		out = append(out, i)
	}
	return out
}

// settle returns once the agent has handled every uevent the kernel sent before the call: it
// writes a synthetic "move" uevent to cpu0 (no test sends that action otherwise, and the agent
// announces nothing for it) and waits until the agent has counted it. Netlink delivers in order,
// and the agent publishes as it reads.
func (l *liveAgent) settle(t *testing.T) {
	t.Helper()
	count := func() float64 {
		resp, err := http.Get("http://" + l.addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, `hotplug_agent_uevents_total{action="move",subsystem="cpu"} `); ok {
				v, _ := strconv.ParseFloat(rest, 64)
				return v
			}
		}
		return 0
	}
	before := count()
	if err := testenv.Synthesize("/sys/devices/system/cpu/cpu0", "move"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent to read the barrier uevent", func() bool { return count() > before }, nil)
}

// stormer drives real kernel events: CPU offline/online (the CPU lock is held by the test) and
// synthetic uevents, which the agent checks against sysfs and must not announce.
type stormer struct {
	cpu    int
	online bool
	synth  []string // devices to write synthetic uevents to
	rng    *rand.Rand
	steps  int // CPU state changes made
	synths int
}

func newStormer(t *testing.T, cpu int, seed uint64) *stormer {
	t.Helper()
	testenv.SetCPUOnline(t, cpu, true) // the starting state, and the restore at the end
	devs := []string{"/sys/devices/system/cpu/cpu0", fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)}
	blocks, _ := filepath.Glob("/sys/devices/system/memory/memory[0-9]*")
	slices.Sort(blocks)
	devs = append(devs, blocks[:min(4, len(blocks))]...)
	return &stormer{cpu: cpu, online: true, synth: devs, rng: rand.New(rand.NewPCG(seed, 1))}
}

// set takes the CPU to the given state (nothing if it is there).
func (s *stormer) set(online bool) error {
	if s.online == online {
		return nil
	}
	v := "0"
	if online {
		v = "1"
	}
	p := fmt.Sprintf("/sys/devices/system/cpu/cpu%d/online", s.cpu)
	if err := os.WriteFile(p, []byte(v), 0); err != nil {
		return fmt.Errorf("write %s to %s: %w", v, p, err)
	}
	s.online = online
	s.steps++
	return nil
}

// step flips the CPU and writes a synthetic uevent or two.
func (s *stormer) step() error {
	if err := s.set(!s.online); err != nil {
		return err
	}
	for range 1 + s.rng.IntN(2) {
		dev := s.synth[s.rng.IntN(len(s.synth))]
		action := []string{"change", "online", "offline", "add"}[s.rng.IntN(4)]
		if err := testenv.Synthesize(dev, action); err != nil {
			return err
		}
		s.synths++
	}
	return nil
}

// run steps until stop is closed or max steps are made, then leaves the CPU online.
func (s *stormer) run(stop <-chan struct{}, max int) error {
	for s.steps < max {
		select {
		case <-stop:
			return s.set(true)
		default:
		}
		if err := s.step(); err != nil {
			return err
		}
	}
	return s.set(true)
}

// steps makes n steps.
func (s *stormer) stepN(n int) error {
	for range n {
		if err := s.step(); err != nil {
			return err
		}
	}
	return nil
}

func testSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("HOTPLUG_TEST_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("random seed %d (HOTPLUG_TEST_SEED=%d repeats this run)", seed, seed)
	return seed
}

// TestIntegrationKillConnectionDuringStorm kills the client's connection 100 times at random
// points (anywhere in the stream, inside a frame, inside the request) while the real kernel sends
// CPU offline/online uevents and synthetic ones: the client's sequence is the agent's exactly,
// every ID once and in order, per interface alternating, and its view ends as the agent's.
func TestIntegrationKillConnectionDuringStorm(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	seed := testSeed(t)
	kills, maxSteps := 100, 1000
	if testing.Short() {
		kills, maxSteps = 10, 100
	}
	st := newStormer(t, cpu, seed)
	la := startLiveAgent(t, "agent", filepath.Join(t.TempDir(), "state.json"))
	reg := la.a.Registry()

	// The ground truth: a registration inside the agent, never interrupted.
	truth := newRecorder()
	if _, err := reg.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.AllClasses, "truth", truth.registryCallback, nil); err != nil {
		t.Fatal(err)
	}
	before := reg.LastID()
	px := newProxy(t, la.addr, seed)
	c := newTestClient(t, px.URL(), Options{})
	all, cpus := newRecorder(), newRecorder()
	ra, _ := c.Register(Filter{}, notify.FlagIncludeExistingInterfaces, all.callback)
	rc, _ := c.Register(Filter{Class: notify.GUIDDeviceProcessor}, 0, cpus.callback)
	waitReady(t, ra)
	waitReady(t, rc)
	start := reg.LastID()
	if start != before {
		t.Logf("the agent published %d notifications while the client connected; compared from %d", start-before, start)
	}
	startSet := la.interfaces(t)

	stop := make(chan struct{})
	stormErr := make(chan error, 1)
	go func() { stormErr <- st.run(stop, maxSteps) }()
	rng := rand.New(rand.NewPCG(seed, 2))
	var modes [cutModes]int
	for px.kills.Load() < int64(kills) {
		select {
		case err := <-stormErr:
			t.Fatalf("the storm ended (%v) after %d steps with only %d kills", err, st.steps, px.kills.Load())
		case <-time.After(time.Duration(rng.IntN(120)) * time.Millisecond):
		}
		m := cutMode(rng.IntN(int(cutModes)))
		modes[m]++
		px.Cut(m)
	}
	close(stop)
	if err := <-stormErr; err != nil {
		t.Fatal(err)
	}
	la.settle(t)
	last := reg.LastID()
	waitFor(t, "the client to catch up with the agent", func() bool { return all.lastID() == last && truth.lastID() == last },
		func() string { return fmt.Sprintf("client at %d, agent at %d", all.lastID(), last) })

	var want []notify.Notification
	for _, n := range truth.all() {
		if n.ID > start {
			want = append(want, n)
		}
	}
	got := numbered(all.all())
	if !slices.Equal(shorts(got), shorts(want)) {
		t.Fatalf("the client's sequence differs from the agent's:\n got %v\nwant %v", shorts(got), shorts(want))
	}
	for i := range got {
		if got[i].Seqnum != want[i].Seqnum || got[i].Interface != want[i].Interface {
			t.Fatalf("notification %d: %+v; the agent's %+v", got[i].ID, got[i], want[i])
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i].ID != got[i-1].ID+1 {
			t.Fatalf("IDs %d then %d: a gap", got[i-1].ID, got[i].ID)
		}
	}
	var wantCPUs []string
	for _, n := range want {
		if n.InterfaceClassGUID == notify.GUIDDeviceProcessor {
			wantCPUs = append(wantCPUs, short(n))
		}
	}
	if gotCPUs := shorts(cpus.all()); !slices.Equal(gotCPUs, wantCPUs) {
		t.Fatalf("the processor registration's sequence differs from the agent's:\n got %v\nwant %v", gotCPUs, wantCPUs)
	}
	final := la.interfaces(t)
	sameView(t, "all classes", checkAlternation(t, nil, all.all()), final)
	var startCPUs, finalCPUs []notify.Interface
	for _, i := range startSet {
		if i.ClassGUID == notify.GUIDDeviceProcessor {
			startCPUs = append(startCPUs, i)
		}
	}
	for _, i := range final {
		if i.ClassGUID == notify.GUIDDeviceProcessor {
			finalCPUs = append(finalCPUs, i)
		}
	}
	sameView(t, "processors", checkAlternation(t, startCPUs, cpus.all()), finalCPUs)
	s := c.Stats()
	if s.Resyncs != 0 || s.Inconsistencies != 0 {
		t.Errorf("stats %+v; want no resync (the history reaches back) and no inconsistency", s)
	}
	if len(got) < 2*kills/3 {
		t.Errorf("only %d notifications during %d kills: the storm was too thin to test anything", len(got), kills)
	}
	t.Logf("%d kills (asked: %d now, %d mid-frame, %d in the request), %d connections, %d CPU state changes, "+
		"%d synthetic uevents, %d notifications delivered in the agent's order", px.kills.Load(), modes[cutNow], modes[cutMidFrame],
		modes[cutRequest], s.Connects, st.steps, st.synths, len(got))
}

// TestIntegrationAgentRestartDuringStorm restarts the real agent while the kernel keeps sending
// CPU uevents: when the agent's history still reaches the client's last ID (a clean restart with
// the state file) the client resumes, changes made while the agent was down arriving with cause
// "startup"; when it does not (the client was cut off longer, or the agent lost its state) the
// client gets a resync and delivers exactly what reconciles its view; restarts at random moments
// of the storm keep every invariant. At the end the client's view is the agent's /interfaces.
func TestIntegrationAgentRestartDuringStorm(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	seed := testSeed(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	st := newStormer(t, cpu, seed)
	state := filepath.Join(t.TempDir(), "state.json")
	n := 0
	start := func() *liveAgent { n++; return startLiveAgent(t, fmt.Sprintf("agent%d", n), state) }
	la := start()
	px := newProxy(t, la.addr, seed)
	c := newTestClient(t, px.URL(), Options{})
	all := newRecorder()
	r, _ := c.Register(Filter{}, notify.FlagIncludeExistingInterfaces, all.callback)
	waitReady(t, r)
	catchUp := func(what string) {
		t.Helper()
		la.settle(t)
		last := la.a.Registry().LastID()
		waitFor(t, "the client to catch up: "+what, func() bool {
			return c.LastEventID() == last && r.Queued() == 0 && r.Delivered() == uint64(len(all.all()))
		}, func() string { return fmt.Sprintf("client at %d, agent at %d", c.LastEventID(), last) })
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// stormWhile runs f while the CPU flips steps times (at least once).
	stormWhile := func(steps int, f func()) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- st.stepN(steps) }()
		f()
		must(<-done)
	}

	// Restarts at random moments of a running storm: whatever the client gets (a resume or a
	// resync), the invariants hold; checked at the end.
	restarts := 3
	if testing.Short() {
		restarts = 1
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	for range restarts {
		stormWhile(6+rng.IntN(6), func() {
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			la.stop(t)
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			la = start()
			px.SetTarget(la.addr)
		})
	}
	must(st.set(true))
	catchUp("after the random restarts")

	// 1. A clean restart with the client current: it resumes. The CPU goes offline while no
	// agent runs: the next one announces it at start (cause startup, the next ID).
	resyncs := c.Stats().Resyncs
	la.stop(t)
	stopped := la.a.Registry().LastID()
	must(st.stepN(4)) // while no agent runs
	must(st.set(false))
	la = start()
	px.SetTarget(la.addr)
	catchUp("after a clean restart")
	if s := c.Stats(); s.Resyncs != resyncs {
		t.Errorf("a clean restart with the history at hand cost a resync (stats %+v)", s)
	}
	after := numbered(all.all())
	var first notify.Notification
	for _, n := range after {
		if n.ID > stopped {
			first = n
			break
		}
	}
	if first.ID != stopped+1 || first.Cause != notify.CauseStartup || first.SymbolicLinkName != link || first.IsArrival() {
		t.Errorf("first notification after the restart: %s; want the removal of %s with id %d, cause startup", short(first), link, stopped+1)
	}

	// 2. The client is cut off while the storm goes on and the agent restarts: its ID is older
	// than the new agent's history, so it gets a resync. The CPU ends offline while the
	// client's view has it online: the resync removes it.
	stormWhile(3, func() {}) // online again (3 steps from offline) and some traffic
	must(st.set(true))
	catchUp("before the cut")
	px.Down()
	must(st.stepN(5)) // the client misses these; the CPU ends offline
	la.settle(t)      // and the agent has published them: its last ID is beyond the client's
	stormWhile(2, func() { la.stop(t) })
	must(st.set(false))
	la = start()
	px.SetTarget(la.addr)
	px.Up()
	catchUp("after the resync")
	if s := c.Stats(); s.Resyncs != resyncs+1 {
		t.Errorf("stats %+v; want one more resync (%d)", s, resyncs+1)
	}
	if got := all.all(); short(got[len(got)-1]) != short(notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, notify.Interface{SymbolicLink: link}, 0, time.Time{}, notify.CauseResync)) {
		t.Errorf("last notification after the resync: %s; want the removal of %s, cause resync", short(got[len(got)-1]), link)
	}

	// 3. The agent loses its state (IDs start again): the client's ID is unknown to it, so it
	// resynchronises. The CPU came online while no agent ran.
	la.stop(t)
	must(os.Remove(state))
	must(st.set(true))
	la = start()
	px.SetTarget(la.addr)
	waitFor(t, "the resync after the reset", func() bool { return c.Stats().Resyncs == resyncs+2 }, func() string { return fmt.Sprintf("%+v", c.Stats()) })
	// A resync may give a removal and then the arrival (an interface whose details changed): wait
	// for the arrival, not for the first notification of the CPU.
	waitFor(t, "the arrival", func() bool {
		got := all.all()
		return got[len(got)-1].SymbolicLinkName == link && got[len(got)-1].IsArrival()
	}, func() string { got := all.all(); return short(got[len(got)-1]) })
	if got := all.all(); got[len(got)-1].Cause != notify.CauseResync || !got[len(got)-1].IsArrival() {
		t.Errorf("last notification after the reset: %s; want the arrival of %s, cause resync", short(got[len(got)-1]), link)
	}
	stormWhile(6, func() {})
	must(st.set(true))
	catchUp("at the end")

	// Across everything: per interface alternating, no duplicate; every break in the ID sequence
	// comes with a resync; the view is the agent's.
	seq := all.all()
	sameView(t, "at the end", checkAlternation(t, nil, seq), la.interfaces(t))
	s := c.Stats()
	breaks, prev := 0, uint64(0)
	for i, n := range numbered(seq) {
		if i > 0 && n.ID != prev+1 {
			breaks++
		}
		prev = n.ID
	}
	if breaks > int(s.Resyncs) {
		t.Errorf("%d breaks in the ID sequence but %d resyncs: a notification was skipped", breaks, s.Resyncs)
	}
	t.Logf("%d agents, %d connections, %d resyncs, %d CPU state changes, %d synthetic uevents, %d notifications",
		n, s.Connects, s.Resyncs, st.steps, st.synths, len(seq))
}
