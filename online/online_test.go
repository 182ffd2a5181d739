package online

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// fakeFS is a machine whose writes are recorded and can be made to fail.
type fakeFS struct {
	mu       sync.Mutex
	cpus     map[int]bool
	blocks   map[int]string
	auto     string
	failures int          // the next writes that fail with EBUSY
	fixed    map[int]bool // CPUs without an online file
	writes   []string
	wrote    chan string
	onWrite  func(w string) // called after a successful write, as the kernel sends its uevent
}

func newFake() *fakeFS {
	return &fakeFS{cpus: map[int]bool{}, blocks: map[int]string{}, fixed: map[int]bool{}, auto: "offline", wrote: make(chan string, 100)}
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
	return sysfs.MemoryBlock{Index: n, State: s, PhysStart: uint64(n) << 27, Size: 1 << 27, Node: 0}, nil
}

func (f *fakeFS) MemoryBlockBasics(n int) (sysfs.MemoryBlock, error) { return f.MemoryBlock(n) }

func (f *fakeFS) AutoOnlineBlocks() (string, error) { return f.auto, nil }

func (f *fakeFS) write(w string, apply func()) error {
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
		if strings.HasPrefix(s, "online") {
			s = "online"
		}
		f.blocks[n] = s
	})
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
			o.handle(context.Background(), item{memory: true, n: 7, added: time.Now()})
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
		{Policy{CPU: Online, Memory: Auto, Retries: 3}, ""},
		{Policy{}, ""},
	} {
		err := tt.p.Validate()
		if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v; want %q", tt.p, err, tt.want)
		}
	}
}
