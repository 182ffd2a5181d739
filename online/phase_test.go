package online

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/state"
)

// world is an onliner over a fake machine whose writes cause notifications through a gate, with
// one two-phase registration per class and target registrations, all recording into one journal.
type world struct {
	fs      *fakeFS
	o       *Onliner
	changes *notify.ChangeRegistry
	targets *notify.TargetRegistry
	gate    *Gate

	mu      sync.Mutex
	journal []string
}

func (w *world) add(s string) {
	w.mu.Lock()
	w.journal = append(w.journal, s)
	w.mu.Unlock()
}

func (w *world) lines() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.journal...)
}

// newWorld builds the world. vetoStart and vetoQuery, when not nil, are the errors with which
// the registrations veto AddStart and query-remove.
func newWorld(t *testing.T, p Policy, vetoStart, vetoQuery error) *world {
	t.Helper()
	w := &world{fs: newFake()}
	w.changes = notify.NewChangeRegistry(notify.ChangeOptions{Timeout: 10 * time.Second})
	w.targets = notify.NewTargetRegistry(notify.TargetOptions{Timeout: 10 * time.Second})
	w.gate = NewGate(func(n notify.Notification) bool {
		w.add(fmt.Sprintf("publish %s %s", notify.EventName(n.Event), n.SymbolicLinkName))
		return true
	}, func(n notify.Notification) {
		w.add("surprise " + n.SymbolicLinkName)
	})
	p.Backoff = time.Millisecond
	w.o = New(p, w.fs, nil, nil)
	w.o.SetParticipants(Participants{Changes: w.changes, Targets: w.targets, Gate: w.gate})
	// A successful write makes the kernel send its uevent, which the event loop turns into a
	// notification through the gate while the change is still in progress.
	w.fs.onWrite = func(wr string) {
		dev, val, _ := strings.Cut(wr, "=")
		memory := strings.HasPrefix(dev, "memory")
		var n int
		if memory {
			fmt.Sscanf(dev, "memory%d", &n)
		} else {
			fmt.Sscanf(dev, "cpu%d", &n)
		}
		iface, _, _ := w.o.read(memory, n)
		event := notify.GUIDDeviceInterfaceArrival
		if val == "false" || val == "offline" {
			event = notify.GUIDDeviceInterfaceRemoval
		}
		w.gate.Publish([]notify.Notification{notify.NewNotification(event, iface, 1, time.Now(), notify.CauseUevent)})
	}
	for _, class := range []string{"processor", "memory"} {
		g, _ := notify.ParseClass(class)
		_, err := w.changes.Register(context.Background(), g, 0, "pool", func(ctx context.Context, n notify.ChangeNotification, _ any) error {
			line := fmt.Sprintf("pool %s %s %s", n.State, n.SymbolicLinkName, n.Cause)
			if n.Status != nil {
				line += " [" + n.Status.Error() + "]"
			}
			w.add(line)
			if n.State == notify.AddStart {
				return vetoStart
			}
			return nil
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, link := range []string{state.CPULink(1), state.MemoryBlockLink(0)} {
		_, err := w.targets.Register(link, "guard", func(ctx context.Context, n notify.TargetNotification, _ any) error {
			line := fmt.Sprintf("guard %s %s requested=%v pid=%d", notify.EventName(n.Event), n.SymbolicLinkName, n.Requested, n.Requester.PID)
			if n.Status != nil {
				line += " [" + n.Status.Error() + "]"
			}
			w.add(line)
			if n.Event == notify.GUIDTargetDeviceQueryRemove {
				return vetoQuery
			}
			return nil
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		w.changes.Close(context.Background())
		w.targets.Close(context.Background())
	})
	return w
}

// TestPolicyTwoPhaseConsent: a hot-added CPU gets AddStart, is onlined, gets AddComplete, and only
// then is its arrival published, though the kernel's online uevent came during the change.
func TestPolicyTwoPhaseConsent(t *testing.T) {
	w := newWorld(t, Policy{CPU: Online, Memory: OnlineMovable}, nil, nil)
	w.fs.cpus[3] = false
	w.fs.blocks[40], w.fs.blocks[41] = "offline", "offline"
	w.o.AddMemoryBlock(41, 12, time.Now())
	w.o.AddMemoryBlock(40, 11, time.Now())
	w.o.AddCPU(3, 10, time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.o.Run(ctx)
	waitWrite(t, w.fs, "cpu3=true")
	waitWrite(t, w.fs, "memory40=online_movable")
	waitWrite(t, w.fs, "memory41=online_movable")
	// The last change is over when the change lock is free.
	if err := w.o.lock(ctx); err != nil {
		t.Fatal(err)
	}
	w.o.unlock()
	want := []string{
		"pool add_start /sys/devices/system/cpu/cpu3 uevent",
		"pool add_complete /sys/devices/system/cpu/cpu3 uevent",
		"publish arrival /sys/devices/system/cpu/cpu3",
		"pool add_start /sys/devices/system/memory/memory40 uevent",
		"pool add_complete /sys/devices/system/memory/memory40 uevent",
		"publish arrival /sys/devices/system/memory/memory40",
		"pool add_start /sys/devices/system/memory/memory41 uevent",
		"pool add_complete /sys/devices/system/memory/memory41 uevent",
		"publish arrival /sys/devices/system/memory/memory41",
	}
	if diff := cmp.Diff(want, w.lines()); diff != "" {
		t.Errorf("sequence (-want +got):\n%s", diff)
	}
}

// TestCPUArrivalWithoutParticipants: with no two-phase registration of the processor class
// nothing has to come before a CPU's arrival, so it goes out as soon as the kernel's online
// uevent is handled, while the onliner's write is still under way, not once it has returned.
func TestCPUArrivalWithoutParticipants(t *testing.T) {
	fs := newFake()
	var mu sync.Mutex
	var journal []string
	add := func(s string) {
		mu.Lock()
		journal = append(journal, s)
		mu.Unlock()
	}
	gate := NewGate(func(n notify.Notification) bool {
		add("publish " + notify.EventName(n.Event) + " " + n.SymbolicLinkName)
		return true
	}, nil)
	changes := notify.NewChangeRegistry(notify.ChangeOptions{Timeout: 10 * time.Second})
	t.Cleanup(func() { changes.Close(context.Background()) })
	o := New(Policy{CPU: Online, Backoff: time.Millisecond}, fs, nil, nil)
	o.SetParticipants(Participants{Changes: changes, Gate: gate})
	fs.onWrite = func(wr string) {
		iface, _, _ := o.read(false, 3) // the kernel's online uevent, handled during the write
		gate.Publish([]notify.Notification{notify.NewNotification(notify.GUIDDeviceInterfaceArrival, iface, 1, time.Now(), notify.CauseUevent)})
		add("write returns " + wr)
	}
	fs.cpus[3] = false
	handleOnce(context.Background(), o, item{n: 3, seqnum: 10, added: time.Now()})
	want := []string{"publish arrival /sys/devices/system/cpu/cpu3", "write returns cpu3=true"}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, journal); diff != "" {
		t.Errorf("sequence (-want +got):\n%s", diff)
	}
}

// TestPolicyTwoPhaseVeto: a vetoed add is never written: the CPU stays offline, AddFailure
// carries the veto, and nothing is published.
func TestPolicyTwoPhaseVeto(t *testing.T) {
	w := newWorld(t, Policy{CPU: Online}, errors.New("no per-CPU buffers left"), nil)
	w.fs.cpus[3] = false
	it := item{n: 3, seqnum: 10, added: time.Now()}
	handleOnce(context.Background(), w.o, it)
	want := []string{
		"pool add_start /sys/devices/system/cpu/cpu3 uevent",
		"pool add_failure /sys/devices/system/cpu/cpu3 uevent [vetoed by pool at add_start: no per-CPU buffers left]",
	}
	if diff := cmp.Diff(want, w.lines()); diff != "" {
		t.Errorf("sequence (-want +got):\n%s", diff)
	}
	if len(w.fs.writes) != 0 || w.fs.cpus[3] {
		t.Errorf("a vetoed CPU was written: %v, online=%v", w.fs.writes, w.fs.cpus[3])
	}
}

// TestPolicyTwoPhaseOnlineFails: the kernel refuses every attempt: AddFailure with its error.
func TestPolicyTwoPhaseOnlineFails(t *testing.T) {
	w := newWorld(t, Policy{Memory: Online, Retries: 1}, nil, nil)
	w.fs.blocks[40] = "offline"
	w.fs.failures = 100
	handleOnce(context.Background(), w.o, item{memory: true, n: 40, added: time.Now()})
	got := w.lines()
	if len(got) != 2 || got[0] != "pool add_start /sys/devices/system/memory/memory40 uevent" ||
		!strings.HasPrefix(got[1], "pool add_failure /sys/devices/system/memory/memory40 uevent [write memory40=online: device or resource busy") {
		t.Errorf("sequence %q; want add_start then add_failure with the kernel's EBUSY", got)
	}
	if len(w.fs.writes) != 2 {
		t.Errorf("writes %v; want the first attempt and one retry", w.fs.writes)
	}
}

// TestPolicyAlreadyOnline: a CPU the kernel (or anyone) onlined already involves nobody.
func TestPolicyAlreadyOnline(t *testing.T) {
	w := newWorld(t, Policy{CPU: Online}, nil, nil)
	w.fs.cpus[3] = true
	handleOnce(context.Background(), w.o, item{n: 3, added: time.Now()})
	if got := w.lines(); len(got) != 0 {
		t.Errorf("an online CPU involved participants: %v", got)
	}
}

// TestPolicyNoneNoAddStart: with the policy none the agent onlines nothing, so nobody gets AddStart.
func TestPolicyNoneNoAddStart(t *testing.T) {
	w := newWorld(t, Policy{CPU: None, Memory: None}, nil, nil)
	w.fs.cpus[3], w.fs.blocks[40] = false, "offline"
	w.o.AddCPU(3, 1, time.Now())
	w.o.AddMemoryBlock(40, 2, time.Now())
	// Nothing was queued, so Run will never handle them.
	w.o.mu.Lock()
	queued := len(w.o.pending)
	w.o.mu.Unlock()
	if got := w.lines(); queued != 0 || len(got) != 0 || len(w.fs.writes) != 0 {
		t.Errorf("policy none: queued %d, calls %v, writes %v; want none", queued, got, w.fs.writes)
	}
}

// TestRequestOffline: query-remove, the write, remove-complete, then the removal notification,
// and no surprise remove-complete for it.
func TestRequestOffline(t *testing.T) {
	w := newWorld(t, Policy{}, nil, nil)
	w.fs.cpus[1] = true
	res := w.o.Request(context.Background(), Resource{Number: 1}, false, notify.Requester{UID: 0, PID: 321})
	if res.Outcome != Success || res.Err != nil {
		t.Fatalf("Request = %+v; want success", res)
	}
	want := []string{
		"guard query_remove /sys/devices/system/cpu/cpu1 requested=true pid=321",
		"guard remove_complete /sys/devices/system/cpu/cpu1 requested=true pid=321",
		"publish removal /sys/devices/system/cpu/cpu1",
	}
	if diff := cmp.Diff(want, w.lines()); diff != "" {
		t.Errorf("sequence (-want +got):\n%s", diff)
	}
	if w.fs.cpus[1] {
		t.Error("cpu1 still online")
	}
}

// TestRequestOfflineVetoed: the guard vetoes: the CPU stays online, remove-cancelled with the veto.
func TestRequestOfflineVetoed(t *testing.T) {
	w := newWorld(t, Policy{}, nil, errors.New("pinned workload"))
	w.fs.cpus[1] = true
	res := w.o.Request(context.Background(), Resource{Number: 1}, false, notify.Requester{PID: 5})
	var veto *notify.VetoError
	if res.Outcome != Failed || !errors.As(res.Err, &veto) || veto.Owner != "guard" {
		t.Fatalf("Request = %+v; want operation-failed with guard's veto", res)
	}
	want := []string{
		"guard query_remove /sys/devices/system/cpu/cpu1 requested=true pid=5",
		"guard remove_cancelled /sys/devices/system/cpu/cpu1 requested=true pid=5 [vetoed by guard at query_remove: pinned workload]",
	}
	if diff := cmp.Diff(want, w.lines()); diff != "" {
		t.Errorf("sequence (-want +got):\n%s", diff)
	}
	if !w.fs.cpus[1] || len(w.fs.writes) != 0 {
		t.Errorf("a vetoed removal wrote %v", w.fs.writes)
	}
}

// TestRequestOfflineKernelRefuses: a memory block the kernel cannot offline: remove-cancelled
// with the kernel's EBUSY, and the result carries it too.
func TestRequestOfflineKernelRefuses(t *testing.T) {
	w := newWorld(t, Policy{}, nil, nil)
	w.fs.blocks[0] = "online"
	w.fs.failures = 1
	res := w.o.Request(context.Background(), Resource{Memory: true, Number: 0}, false, notify.Requester{PID: 9})
	if res.Outcome != Failed || !errors.Is(res.Err, syscall.EBUSY) {
		t.Fatalf("Request = %+v; want operation-failed wrapping EBUSY", res)
	}
	want := []string{
		"guard query_remove /sys/devices/system/memory/memory0 requested=true pid=9",
		"guard remove_cancelled /sys/devices/system/memory/memory0 requested=true pid=9 [write memory0=offline: device or resource busy]",
	}
	if diff := cmp.Diff(want, w.lines()); diff != "" {
		t.Errorf("sequence (-want +got):\n%s", diff)
	}
	if len(w.fs.writes) != 1 {
		t.Errorf("writes %v; a request is not retried", w.fs.writes)
	}
}

// TestRequestOnline: a two-phase add with cause request, then the arrival.
func TestRequestOnline(t *testing.T) {
	w := newWorld(t, Policy{Memory: OnlineKernel}, nil, nil)
	w.fs.blocks[7] = "offline"
	res := w.o.Request(context.Background(), Resource{Memory: true, Number: 7}, true, notify.Requester{})
	if res.Outcome != Success {
		t.Fatalf("Request = %+v", res)
	}
	want := []string{
		"pool add_start /sys/devices/system/memory/memory7 request",
		"pool add_complete /sys/devices/system/memory/memory7 request",
		"publish arrival /sys/devices/system/memory/memory7",
	}
	if diff := cmp.Diff(want, w.lines()); diff != "" {
		t.Errorf("sequence (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"memory7=online_kernel"}, w.fs.writes); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
}

// TestRequestOnlineVetoed: a vetoed online request leaves the CPU offline.
func TestRequestOnlineVetoed(t *testing.T) {
	w := newWorld(t, Policy{}, errors.New("not now"), nil)
	w.fs.cpus[1] = false
	res := w.o.Request(context.Background(), Resource{Number: 1}, true, notify.Requester{})
	if res.Outcome != Failed || !strings.Contains(res.Err.Error(), "vetoed by pool at add_start: not now") {
		t.Fatalf("Request = %+v; want operation-failed with the veto", res)
	}
	if len(w.fs.writes) != 0 {
		t.Errorf("writes %v after a veto", w.fs.writes)
	}
}

// TestRequestOutcomes: not found, not supported, and nothing to do.
func TestRequestOutcomes(t *testing.T) {
	w := newWorld(t, Policy{}, nil, nil)
	w.fs.cpus[0], w.fs.fixed[0] = true, true
	w.fs.cpus[1] = false
	w.fs.blocks[3] = "online"
	for _, tt := range []struct {
		r      Resource
		online bool
		want   Outcome
		err    string
	}{
		{Resource{Number: 9}, false, NotFound, "cpu 9: no such CPU"},
		{Resource{Memory: true, Number: 99}, true, NotFound, "memory 99: no such memory block"},
		{Resource{Number: -1}, true, NotFound, "no such CPU"},
		{Resource{Number: 0}, false, NotSupported, "cpu 0 has no online file"},
		{Resource{Number: 1}, false, Success, ""}, // already offline
		{Resource{Memory: true, Number: 3}, true, Success, ""},
	} {
		res := w.o.Request(context.Background(), tt.r, tt.online, notify.Requester{})
		if res.Outcome != tt.want || (tt.err == "") != (res.Err == nil) || res.Err != nil && !strings.Contains(res.Err.Error(), tt.err) {
			t.Errorf("Request(%s, online=%v) = %+v; want %s %q", tt.r, tt.online, res, tt.want, tt.err)
		}
	}
	if got := w.lines(); len(got) != 0 || len(w.fs.writes) != 0 {
		t.Errorf("requests with nothing to do involved %v, wrote %v", got, w.fs.writes)
	}
}

// TestGateSurprise: a removal the agent did not cause is reported as a surprise; its own is not,
// even when its notification comes after the change ended; a hold keeps order per interface.
func TestGateSurprise(t *testing.T) {
	var got []string
	g := NewGate(func(n notify.Notification) bool {
		got = append(got, "publish "+notify.EventName(n.Event)+" "+n.SymbolicLinkName)
		return !strings.HasSuffix(n.SymbolicLinkName, "cpu9") // the registry refuses cpu9's
	}, func(n notify.Notification) { got = append(got, "surprise "+n.SymbolicLinkName) })
	cpu := func(n int, arrival bool) notify.Notification {
		ev := notify.GUIDDeviceInterfaceRemoval
		if arrival {
			ev = notify.GUIDDeviceInterfaceArrival
		}
		return notify.NewNotification(ev, notify.Interface{ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: state.CPULink(n), Number: n}, 0, time.Now(), notify.CauseUevent)
	}
	g.Publish([]notify.Notification{cpu(1, false), cpu(9, false)}) // nobody asked; cpu9's is refused
	g.hold(state.CPULink(2), false)
	g.Publish([]notify.Notification{cpu(2, false), cpu(3, false)}) // cpu2 held, cpu3 passes
	g.release(state.CPULink(2), true)                              // cpu2's removal is ours
	g.hold(state.CPULink(4), false)
	g.release(state.CPULink(4), true)                             // done; its uevent not read yet
	g.Publish([]notify.Notification{cpu(4, false), cpu(4, true)}) // ours, then a later arrival
	g.Publish([]notify.Notification{cpu(4, false)})               // someone else's removal
	g.hold(state.CPULink(5), false)
	g.release(state.CPULink(5), false)              // the write failed
	g.Publish([]notify.Notification{cpu(5, false)}) // so this one is a surprise
	want := []string{
		"publish removal /sys/devices/system/cpu/cpu1", "surprise /sys/devices/system/cpu/cpu1",
		"publish removal /sys/devices/system/cpu/cpu9",
		"publish removal /sys/devices/system/cpu/cpu3", "surprise /sys/devices/system/cpu/cpu3",
		"publish removal /sys/devices/system/cpu/cpu2",
		"publish removal /sys/devices/system/cpu/cpu4",
		"publish arrival /sys/devices/system/cpu/cpu4",
		"publish removal /sys/devices/system/cpu/cpu4", "surprise /sys/devices/system/cpu/cpu4",
		"publish removal /sys/devices/system/cpu/cpu5", "surprise /sys/devices/system/cpu/cpu5",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("gate (-want +got):\n%s", diff)
	}
}

// TestRequestsAheadOfTheirUevents: a block taken offline on request and brought online again
// before the event loop got the offline's uevent: the late removal is the request's, not a
// surprise (its target-device callbacks get remove-complete once), in whichever order the
// notifications and the second request's end come.
func TestRequestsAheadOfTheirUevents(t *testing.T) {
	for _, lateAfterOnline := range []bool{false, true} {
		t.Run(fmt.Sprintf("uevents after the online=%v", lateAfterOnline), func(t *testing.T) {
			w := newWorld(t, Policy{Memory: OnlineKernel}, nil, nil)
			w.fs.blocks[0] = "online"
			uevent := w.fs.onWrite
			var late []string // the event loop is behind: the writes' uevents wait
			w.fs.onWrite = func(wr string) { late = append(late, wr) }
			ctx := context.Background()
			if res := w.o.Request(ctx, Resource{Memory: true, Number: 0}, false, notify.Requester{PID: 7}); res.Outcome != Success {
				t.Fatalf("offline: %+v", res)
			}
			if !lateAfterOnline {
				w.fs.onWrite = func(wr string) { // the offline's uevent comes during the online
					for _, l := range late {
						uevent(l)
					}
					uevent(wr)
				}
			}
			if res := w.o.Request(ctx, Resource{Memory: true, Number: 0}, true, notify.Requester{PID: 7}); res.Outcome != Success {
				t.Fatalf("online: %+v", res)
			}
			if lateAfterOnline {
				for _, l := range late {
					uevent(l)
				}
			}
			link := state.MemoryBlockLink(0)
			want := []string{
				"guard query_remove " + link + " requested=true pid=7",
				"guard remove_complete " + link + " requested=true pid=7",
				"pool add_start " + link + " request",
				"pool add_complete " + link + " request",
				"publish removal " + link,
				"publish arrival " + link,
			}
			if diff := cmp.Diff(want, w.lines()); diff != "" {
				t.Errorf("sequence (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRequestOfflineChanged: a request that takes a memory block offline says it changed it;
// one that finds it offline already says it did not, and writes nothing.
func TestRequestOfflineChanged(t *testing.T) {
	w := newWorld(t, Policy{}, nil, nil)
	w.fs.blocks[3] = "online"
	if res := w.o.Request(context.Background(), Resource{Memory: true, Number: 3}, false, notify.Requester{}); res.Outcome != Success || !res.Changed {
		t.Fatalf("first Request = %+v; want success, changed", res)
	}
	if res := w.o.Request(context.Background(), Resource{Memory: true, Number: 3}, false, notify.Requester{}); res.Outcome != Success || res.Changed {
		t.Fatalf("second Request = %+v; want success, unchanged", res)
	}
	if diff := cmp.Diff([]string{"memory3=offline"}, w.fs.writes); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
}
