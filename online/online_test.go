package online

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// fakeFS is a machine whose writes are recorded and can be made to fail.
type fakeFS struct {
	mu       sync.Mutex
	cpus     map[int]bool
	blocks   map[int]string
	zones    map[int]string // valid_zones of online blocks
	nodes    map[int]int
	auto     string
	failures int          // the next writes that fail with EBUSY
	fixed    map[int]bool // CPUs without an online file
	writes   []string
	wrote    chan string
	onWrite  func(w string) // called after a successful write, as the kernel sends its uevent
	before   func(w string) // called as a write begins, without the lock
}

func newFake() *fakeFS {
	return &fakeFS{cpus: map[int]bool{}, blocks: map[int]string{}, zones: map[int]string{}, nodes: map[int]int{}, fixed: map[int]bool{},
		auto: "offline", wrote: make(chan string, 100)}
}

func (f *fakeFS) CPU(n int) (sysfs.CPU, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	on, ok := f.cpus[n]
	if !ok {
		return sysfs.CPU{}, fmt.Errorf("cpu%d: %w", n, fs.ErrNotExist)
	}
	return sysfs.CPU{Number: n, Online: on, Hotpluggable: !f.fixed[n], Node: 0}, nil
}

func (f *fakeFS) MemoryBlock(n int) (sysfs.MemoryBlock, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.blocks[n]
	if !ok {
		return sysfs.MemoryBlock{}, fmt.Errorf("memory%d: %w", n, fs.ErrNotExist)
	}
	b := sysfs.MemoryBlock{Index: n, State: s, PhysStart: uint64(n) << 27, Size: 1 << 27, Node: f.nodes[n]}
	if s == "online" {
		b.ValidZones = f.zones[n]
	}
	return b, nil
}

func (f *fakeFS) BlockSize() uint64 { return 1 << 27 }

func (f *fakeFS) MemoryBlocks() ([]sysfs.MemoryBlock, error) {
	f.mu.Lock()
	nums := slices.Sorted(maps.Keys(f.blocks))
	f.mu.Unlock()
	var out []sysfs.MemoryBlock
	for _, n := range nums {
		b, _ := f.MemoryBlock(n)
		out = append(out, b)
	}
	return out, nil
}

func (f *fakeFS) MemoryBlockBasics(n int) (sysfs.MemoryBlock, error) { return f.MemoryBlock(n) }

func (f *fakeFS) AutoOnlineBlocks() (string, error) { return f.auto, nil }

func (f *fakeFS) write(w string, apply func()) error {
	if f.before != nil {
		f.before(w)
	}
	f.mu.Lock()
	f.writes = append(f.writes, w)
	fail := f.failures > 0
	if fail {
		f.failures--
	} else {
		apply()
	}
	hook := f.onWrite
	f.mu.Unlock()
	f.wrote <- w
	if fail {
		return fmt.Errorf("write %s: %w", w, syscall.EBUSY)
	}
	if hook != nil {
		hook(w)
	}
	return nil
}

func (f *fakeFS) SetCPUOnline(n int, on bool) error {
	return f.write(fmt.Sprintf("cpu%d=%v", n, on), func() { f.cpus[n] = on })
}

func (f *fakeFS) SetMemoryState(n int, s string) error {
	return f.write(fmt.Sprintf("memory%d=%s", n, s), func() {
		switch s {
		case "online_movable":
			f.zones[n] = "Movable"
		case "online", "online_kernel":
			f.zones[n] = "Normal"
		}
		if strings.HasPrefix(s, "online") {
			s = "online"
		}
		f.blocks[n] = s
	})
}

func (f *fakeFS) OfflineMemoryBlock(ctx context.Context, n int) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory%d: not begun: %w", n, context.Cause(ctx))
	}
	return f.SetMemoryState(n, "offline")
}

type outcome struct{ Class, Result string }

func start(t *testing.T, p Policy, f *fakeFS) (*Onliner, chan outcome) {
	t.Helper()
	got := make(chan outcome, 100)
	p.Backoff = time.Millisecond
	o := New(p, f, nil, func(class, result string, _ time.Duration) { got <- outcome{class, result} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { o.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return o, got
}

// outcomes waits for n outcomes.
func outcomes(t *testing.T, ch chan outcome, n int) []outcome {
	t.Helper()
	var got []outcome
	for range n {
		select {
		case o := <-ch:
			got = append(got, o)
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d outcomes: %v", len(got), got)
		}
	}
	return got
}

// waitWrite waits for the write w, failing on any other.
func waitWrite(t *testing.T, f *fakeFS, w string) {
	t.Helper()
	select {
	case got := <-f.wrote:
		if got != w {
			t.Fatalf("write %q; want %q", got, w)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no write %q", w)
	}
}

func TestCPUOnline(t *testing.T) {
	f := newFake()
	f.cpus[2], f.cpus[3] = true, false
	o, got := start(t, Policy{CPU: Online}, f)
	o.AddCPU(2, 0, time.Now()) // already online: no write
	o.AddCPU(3, 0, time.Now())
	waitWrite(t, f, "cpu3=true")
	if diff := cmp.Diff([]outcome{{"processor", "success"}}, outcomes(t, got, 1)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
}

func TestMemoryAscendingWithZone(t *testing.T) {
	f := newFake()
	for _, n := range []int{40, 41, 42} {
		f.blocks[n] = "offline"
	}
	o := New(Policy{Memory: OnlineMovable}, f, nil, nil)
	// Queued before Run starts: one batch, in whatever order the events came.
	o.AddMemoryBlock(42, 0, time.Now())
	o.AddMemoryBlock(40, 0, time.Now())
	o.AddMemoryBlock(41, 0, time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go o.Run(ctx)
	for _, w := range []string{"memory40=online_movable", "memory41=online_movable", "memory42=online_movable"} {
		waitWrite(t, f, w)
	}
}

// TestMemoryRoundLoggedOnce: the blocks of one round (a hot-added DIMM's) are logged in one line
// with their ranges and count, not a line each; a CPU keeps its own line.
func TestMemoryRoundLoggedOnce(t *testing.T) {
	f := newFake()
	for _, n := range []int{40, 41, 42, 44} {
		f.blocks[n] = "offline"
	}
	f.cpus[3] = false
	var logs testenv.Buffer
	o := New(Policy{Memory: OnlineMovable, CPU: Online}, f, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	for _, n := range []int{44, 40, 42, 41} {
		o.AddMemoryBlock(n, 0, time.Now())
	}
	o.AddCPU(3, 0, time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go o.Run(ctx)
	for _, w := range []string{"cpu3=true", "memory40=online_movable", "memory41=online_movable", "memory42=online_movable", "memory44=online_movable"} {
		waitWrite(t, f, w)
	}
	const round = `msg="online policy: brought memory online" blocks=40-42,44 count=4 state=online_movable`
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), round); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("log:\n%s\nwant a line with %s", logs.String(), round)
		}
	}
	if n := strings.Count(logs.String(), "level=INFO"); n != 2 {
		t.Errorf("log:\n%s\n%d lines at INFO; want 2: the CPU's and the round's", logs.String(), n)
	}
	if !strings.Contains(logs.String(), `msg="online policy: brought online" device=cpu3`) {
		t.Errorf("log:\n%s\nwant cpu3's own line", logs.String())
	}
}

func TestAutoFollowsTheKernel(t *testing.T) {
	for _, tt := range []struct {
		auto  string
		write []string
	}{{"offline", []string{"memory7=online"}}, {"online", nil}, {"online_movable", nil}, {"online_kernel", nil}} {
		t.Run(tt.auto, func(t *testing.T) {
			f := newFake()
			f.auto = tt.auto
			f.blocks[7] = "offline"
			o := New(Policy{Memory: Auto}, f, nil, nil)
			handleOnce(context.Background(), o, item{memory: true, n: 7, added: time.Now()})
			if diff := cmp.Diff(tt.write, f.writes); diff != "" {
				t.Errorf("auto_online_blocks=%s: writes (-want +got):\n%s", tt.auto, diff)
			}
		})
	}
}

func TestRetries(t *testing.T) {
	f := newFake()
	f.cpus[1] = false
	f.failures = 2
	o, got := start(t, Policy{CPU: Online, Retries: 3}, f)
	o.AddCPU(1, 0, time.Now())
	for range 3 {
		waitWrite(t, f, "cpu1=true")
	}
	// Retries exhausted: three attempts in all, then it gives up.
	f.cpus[2] = false
	f.mu.Lock()
	f.failures = 100
	f.mu.Unlock()
	if diff := cmp.Diff([]outcome{{"processor", "failure"}, {"processor", "failure"}, {"processor", "success"}}, outcomes(t, got, 3)); diff != "" {
		t.Errorf("outcomes with recovery (-want +got):\n%s", diff)
	}
	o2, got2 := start(t, Policy{CPU: Online, Retries: 2}, f)
	o2.AddCPU(2, 0, time.Now())
	for range 3 {
		waitWrite(t, f, "cpu2=true")
	}
	// A barrier: once CPU 3 is handled, CPU 2's retries are over; no fourth write may precede it.
	f.mu.Lock()
	f.failures, f.cpus[3] = 0, false
	f.mu.Unlock()
	o2.AddCPU(3, 0, time.Now())
	waitWrite(t, f, "cpu3=true")
	if diff := cmp.Diff([]outcome{{"processor", "failure"}, {"processor", "failure"}, {"processor", "failure"}}, outcomes(t, got2, 3)); diff != "" {
		t.Errorf("outcomes when it never works (-want +got):\n%s", diff)
	}
}

func TestNoneWritesNothing(t *testing.T) {
	f := newFake()
	f.cpus[1], f.blocks[3] = false, "offline"
	o := New(Policy{CPU: None, Memory: None}, f, nil, nil)
	o.AddCPU(1, 0, time.Now())
	o.AddMemoryBlock(3, 0, time.Now())
	if len(o.pending) != 0 {
		t.Errorf("policy none queued %d items", len(o.pending))
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		p    Policy
		want string
	}{
		{Policy{CPU: "yes"}, `cpu: "yes"`},
		{Policy{Memory: "movable"}, `memory: "movable"`},
		{Policy{Retries: -1}, "retries: -1"},
		{Policy{Retries: 100}, "retries: 100: want 0 to 10"},
		{Policy{Retries: 11}, "retries: 11: want 0 to 10"},
		{Policy{Retries: 10}, ""},
		{Policy{CPU: Online, Memory: Auto, Retries: 3}, ""},
		{Policy{}, ""},
	} {
		err := tt.p.Validate()
		if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v; want %q", tt.p, err, tt.want)
		}
	}
}

// TestRetryWait: the wait between attempts doubles from the base up to MaxBackoff, and stays
// there, never negative, however many attempts (the uncapped shift was 14.5 h at attempt 20 and
// negative at 38).
func TestRetryWait(t *testing.T) {
	for _, tt := range []struct {
		base    time.Duration
		attempt int
		want    time.Duration
	}{
		{0, 0, 50 * time.Millisecond},
		{-time.Second, 0, 50 * time.Millisecond},
		{50 * time.Millisecond, 1, 100 * time.Millisecond},
		{50 * time.Millisecond, 6, 3200 * time.Millisecond},
		{50 * time.Millisecond, 7, MaxBackoff},
		{50 * time.Millisecond, 20, MaxBackoff},
		{50 * time.Millisecond, 38, MaxBackoff},
		{50 * time.Millisecond, 1 << 40, MaxBackoff},
		{time.Nanosecond, 62, MaxBackoff},
		{time.Hour, 0, MaxBackoff},
		{time.Millisecond, -1, time.Millisecond},
	} {
		if got := retryWait(tt.base, tt.attempt); got != tt.want {
			t.Errorf("retryWait(%s, %d) = %s; want %s", tt.base, tt.attempt, got, tt.want)
		}
	}
	prev := time.Duration(0)
	for attempt := range 200 {
		d := retryWait(DefaultBackoff, attempt)
		if d <= 0 || d > MaxBackoff || d < prev {
			t.Fatalf("retryWait(%s, %d) = %s after %s; want it growing, within (0, %s]", DefaultBackoff, attempt, d, prev, MaxBackoff)
		}
		prev = d
	}
}

// TestRequestDuringRetries: a request does not wait behind the policy's retries of a failed
// online. Arriving while the policy waits to retry, or while the write that fails is under way, it
// is answered with ErrBusy, naming what is retried, long before its deadline (the retries take
// over 20 s); once the retries end, requests are served again.
func TestRequestDuringRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.cpus[1], f.cpus[2] = false, true
		f.failures = MaxRetries + 1 // every attempt at cpu1 fails
		entered, proceed := make(chan struct{}), make(chan struct{})
		first := sync.OnceFunc(func() { close(entered); <-proceed })
		f.before = func(w string) {
			if w == "cpu1=true" {
				first()
			}
		}
		online := func(n int) bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.cpus[n]
		}
		o := New(Policy{CPU: Online, Retries: MaxRetries}, f, nil, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { o.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		o.AddCPU(1, 0, time.Now())
		<-entered // the first attempt is under way and holds the change lock

		request := func() Result {
			rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
			defer rcancel()
			return o.Request(rctx, Resource{Number: 2}, false, notify.Requester{})
		}
		during := make(chan Result, 1)
		go func() { during <- request() }()
		synctest.Wait() // it waits for the change in progress
		close(proceed)  // which fails and waits to retry
		for name, res := range map[string]Result{"during the write": <-during, "during the wait": request()} {
			if res.Outcome != Failed || !errors.Is(res.Err, ErrBusy) || !strings.Contains(res.Err.Error(), "retrying cpu1 (attempt 1 of 11 failed") {
				t.Errorf("request %s = %+v; want operation-failed, busy, naming cpu1", name, res)
			}
		}
		if !online(2) {
			t.Error("a busy request took cpu2 offline")
		}
		// The retries end (about 21 s of waits); then a request is served.
		time.Sleep(time.Minute)
		synctest.Wait()
		if res := request(); res.Outcome != Success || online(2) {
			t.Errorf("request after the retries = %+v; want success", res)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if n := len(f.writes); n != MaxRetries+2 {
			t.Errorf("%d writes %v; want %d attempts at cpu1, then cpu2", n, f.writes, MaxRetries+1)
		}
	})
}

// handleOnce handles it as a round of its own would: handle, then settle the round.
func handleOnce(ctx context.Context, o *Onliner, it item) {
	round := &planRound{}
	o.handle(ctx, it, round)
	o.settle(round)
}

// TestRoundReleasesArrivalsTogether: the arrivals of the memory blocks a round brings online are
// held back until the round settles, then published in the order of the writes, and the round
// gives the change lock back.
func TestRoundReleasesArrivalsTogether(t *testing.T) {
	f := newFake()
	var mu sync.Mutex
	var published []string
	gate := NewGate(func(n notify.Notification) bool {
		mu.Lock()
		published = append(published, n.SymbolicLinkName)
		mu.Unlock()
		return true
	}, nil)
	o := New(Policy{Memory: Online}, f, nil, nil)
	o.SetParticipants(Participants{Gate: gate})
	o.releaseAfter = time.Hour   // only the round's end releases
	f.onWrite = func(w string) { // the kernel's online uevent, through the event loop
		var n int
		fmt.Sscanf(w, "memory%d", &n)
		iface, _, _ := o.read(true, n)
		gate.Publish([]notify.Notification{notify.NewNotification(notify.GUIDDeviceInterfaceArrival, iface, 1, time.Now(), notify.CauseUevent)})
	}
	blocks := []int{10, 11, 12}
	for _, n := range blocks {
		f.blocks[n] = "offline"
	}
	ctx := context.Background()
	round := &planRound{}
	for _, n := range blocks {
		o.handle(ctx, item{memory: true, n: n, added: time.Now()}, round)
	}
	mu.Lock()
	early := slices.Clone(published)
	mu.Unlock()
	if len(early) != 0 {
		t.Errorf("published before the round settled: %v", early)
	}
	o.settle(round)
	want := []string{state.MemoryBlockLink(10), state.MemoryBlockLink(11), state.MemoryBlockLink(12)}
	mu.Lock()
	got := slices.Clone(published)
	mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("published after the round (-want +got):\n%s", diff)
	}
	// The lock is free again: a request goes through.
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := o.lockForRequest(lctx); err != nil {
		t.Fatalf("the change lock after the round: %v", err)
	}
	o.unlock()
}
