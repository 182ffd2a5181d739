package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// target returns a TargetCallback that records its calls under owner and answers query-remove
// with veto (nil: consent).
func (j *journal) target(owner string, veto error) TargetCallback {
	return func(ctx context.Context, n TargetNotification, _ any) error {
		line := fmt.Sprintf("%s %s %s requested=%v uid=%d", owner, EventName(n.Event), n.SymbolicLinkName, n.Requested, n.Requester.UID)
		if n.Status != nil {
			line += " [" + n.Status.Error() + "]"
		}
		j.add(line)
		if n.Event == GUIDTargetDeviceQueryRemove {
			return veto
		}
		return nil
	}
}

func mustRegisterTarget(t *testing.T, r *TargetRegistry, link, owner string, cb TargetCallback) *TargetEntry {
	t.Helper()
	e, err := r.Register(link, owner, cb, nil)
	if err != nil {
		t.Fatalf("Register %s: %v", owner, err)
	}
	return e
}

func closeTargets(t *testing.T, r *TargetRegistry) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func sortTail(lines []string, from int) []string {
	// Calls that end a removal run on several goroutines at once: compare them as a set.
	tail := lines[min(from, len(lines)):]
	for i := range tail {
		for k := i + 1; k < len(tail); k++ {
			if tail[k] < tail[i] {
				tail[i], tail[k] = tail[k], tail[i]
			}
		}
	}
	return lines
}

const cpu1Link = "/sys/devices/system/cpu/cpu1"

// TestTargetRemoveComplete: query-remove to the target's registrations in order, then
// remove-complete; a registration for another interface hears nothing.
func TestTargetRemoveComplete(t *testing.T) {
	j := &journal{}
	r := NewTargetRegistry(TargetOptions{})
	defer closeTargets(t, r)
	mustRegisterTarget(t, r, cpu1Link, "a", j.target("a", nil))
	mustRegisterTarget(t, r, "/sys/devices/system/cpu/cpu2", "other", j.target("other", nil))
	mustRegisterTarget(t, r, cpu1Link, "b", j.target("b", nil))
	rm, err := r.QueryRemove(cpu(1), Requester{UID: 0, PID: 4242})
	if err != nil {
		t.Fatal(err)
	}
	if rm.Participants() != 2 {
		t.Errorf("Participants() = %d; want 2", rm.Participants())
	}
	rm.Complete()
	rm.Cancel(errors.New("ignored")) // the removal is over
	want := []string{
		"a query_remove " + cpu1Link + " requested=true uid=0",
		"b query_remove " + cpu1Link + " requested=true uid=0",
		"a remove_complete " + cpu1Link + " requested=true uid=0",
		"b remove_complete " + cpu1Link + " requested=true uid=0",
	}
	if diff := cmp.Diff(want, sortTail(j.list(), 2)); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

// TestTargetVeto: a veto stops the queries; the registrations that were queried, the vetoing one
// too, get remove-cancelled with the veto; the caller gets a *VetoError.
func TestTargetVeto(t *testing.T) {
	j := &journal{}
	obs := &syncObs{}
	r := NewTargetRegistry(TargetOptions{Observer: obs})
	defer closeTargets(t, r)
	inUse := errors.New("a pinned thread runs on cpu1")
	mustRegisterTarget(t, r, cpu1Link, "a", j.target("a", nil))
	mustRegisterTarget(t, r, cpu1Link, "guard", j.target("guard", inUse))
	mustRegisterTarget(t, r, cpu1Link, "c", j.target("c", nil))
	rm, err := r.QueryRemove(cpu(1), Requester{PID: 7})
	var veto *VetoError
	if rm != nil || !errors.As(err, &veto) || veto.Owner != "guard" || veto.Phase != "query_remove" || !errors.Is(err, inUse) {
		t.Fatalf("QueryRemove = %v, %v; want a veto by guard", rm, err)
	}
	status := " [vetoed by guard at query_remove: a pinned thread runs on cpu1]"
	want := []string{
		"a query_remove " + cpu1Link + " requested=true uid=0",
		"guard query_remove " + cpu1Link + " requested=true uid=0",
		"a remove_cancelled " + cpu1Link + " requested=true uid=0" + status,
		"guard remove_cancelled " + cpu1Link + " requested=true uid=0" + status,
	}
	if diff := cmp.Diff(want, sortTail(j.list(), 2)); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"veto guard query_remove processor timeout=false"}, obs.only("veto")); diff != "" {
		t.Errorf("vetoes observed (-want +got):\n%s", diff)
	}
}

// TestTargetKernelRefuses: the offline write failed: remove-cancelled with the kernel's error.
func TestTargetKernelRefuses(t *testing.T) {
	j := &journal{}
	r := NewTargetRegistry(TargetOptions{})
	defer closeTargets(t, r)
	link := "/sys/devices/system/memory/memory0"
	mustRegisterTarget(t, r, link, "a", j.target("a", nil))
	rm, err := r.QueryRemove(mem(0), Requester{})
	if err != nil {
		t.Fatal(err)
	}
	kerr := fmt.Errorf("write offline: %w", syscall.EBUSY)
	rm.Cancel(kerr)
	want := []string{
		"a query_remove " + link + " requested=true uid=0",
		"a remove_cancelled " + link + " requested=true uid=0 [write offline: device or resource busy]",
	}
	if diff := cmp.Diff(want, j.list()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

// TestTargetSurpriseRemoval: a removal the agent did not ask for gives remove-complete only.
func TestTargetSurpriseRemoval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		j := &journal{}
		r := NewTargetRegistry(TargetOptions{})
		var got TargetNotification
		mustRegisterTarget(t, r, cpu1Link, "a", func(ctx context.Context, n TargetNotification, _ any) error {
			got = n
			return j.target("a", nil)(ctx, n, nil)
		})
		r.Removed(removal(cpu(1), 99))
		r.Removed(removal(cpu(2), 100))
		synctest.Wait()
		if diff := cmp.Diff([]string{"a remove_complete " + cpu1Link + " requested=false uid=0"}, j.list()); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		if got.Seqnum != 99 || got.Event != GUIDTargetDeviceRemoveComplete || got.Version != 1 {
			t.Errorf("surprise remove-complete = %+v; want seqnum 99, version 1", got)
		}
		closeTargets(t, r)
	})
}

// TestTargetTimeout: a query-remove that is not answered in time vetoes or consents by
// configuration.
func TestTargetTimeout(t *testing.T) {
	for _, consent := range []bool{false, true} {
		t.Run(fmt.Sprintf("consent=%v", consent), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := NewTargetRegistry(TargetOptions{Timeout: time.Second, ConsentOnTimeout: consent})
				j := &journal{}
				mustRegisterTarget(t, r, cpu1Link, "slow", func(ctx context.Context, n TargetNotification, _ any) error {
					if n.Event == GUIDTargetDeviceQueryRemove {
						<-ctx.Done() // honours its deadline, too late
						j.add("slow query_remove late")
						return ctx.Err() // an error after the deadline does not count
					}
					j.add("slow " + EventName(n.Event))
					return nil
				})
				rm, err := r.QueryRemove(cpu(1), Requester{})
				if consent {
					if err != nil {
						t.Fatalf("QueryRemove: %v; want consent", err)
					}
					rm.Complete()
				} else {
					var veto *VetoError
					if !errors.As(err, &veto) || veto.Err != nil || !strings.Contains(err.Error(), "no answer to query_remove within 1s") {
						t.Fatalf("QueryRemove error %v; want a timeout veto", err)
					}
				}
				synctest.Wait()
				last := "slow remove_cancelled"
				if consent {
					last = "slow remove_complete"
				}
				if diff := cmp.Diff([]string{"slow query_remove late", last}, j.list()); diff != "" {
					t.Errorf("calls (-want +got):\n%s", diff)
				}
				closeTargets(t, r)
			})
		})
	}
}

func TestTargetRegisterAndUnregister(t *testing.T) {
	r := NewTargetRegistry(TargetOptions{})
	noop := func(context.Context, TargetNotification, any) error { return nil }
	for _, tt := range []struct{ link, owner, want string }{
		{"/sys/devices/system/cpu/cpu01", "x", "want /sys/devices/system/cpu/cpuN"},
		{"/sys/devices/system/cpu/cpu1/", "x", "want"},
		{"/sys/bus/cpu/devices/cpu1", "x", "want"},
		{"/sys/devices/system/memory/memory", "x", "want"},
		{"/sys/devices/system/cpu/cpu1", "", "empty owner"},
	} {
		if e, err := r.Register(tt.link, tt.owner, noop, nil); e != nil || err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Register(%q, %q) = %v, %v; want an error containing %q", tt.link, tt.owner, e, err, tt.want)
		}
	}
	if _, err := r.Register(cpu1Link, "x", nil, nil); err == nil || !strings.Contains(err.Error(), "nil callback") {
		t.Errorf("Register with a nil callback: %v", err)
	}
	e := mustRegisterTarget(t, r, "/sys/devices/system/memory/memory12", "m", noop)
	if diff := cmp.Diff([]TargetEntryInfo{{Owner: "m", Target: "/sys/devices/system/memory/memory12"}}, r.Entries()); diff != "" {
		t.Errorf("Entries (-want +got):\n%s", diff)
	}
	if err := r.Unregister(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if err := r.Unregister(context.Background(), e); !errors.Is(err, ErrUnregistered) {
		t.Errorf("second Unregister: %v; want ErrUnregistered", err)
	}
	rm, err := r.QueryRemove(mem(12), Requester{})
	if err != nil || rm.Participants() != 0 {
		t.Errorf("QueryRemove after Unregister: %v participants, %v", rm.Participants(), err)
	}
	closeTargets(t, r)
	if _, err := r.Register(cpu1Link, "late", noop, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Register after Close: %v; want ErrClosed", err)
	}
}

func TestParseSymbolicLink(t *testing.T) {
	for link, want := range map[string]string{
		"/sys/devices/system/cpu/cpu0":         "processor 0",
		"/sys/devices/system/cpu/cpu17":        "processor 17",
		"/sys/devices/system/memory/memory255": "memory 255",
	} {
		class, n, err := ParseSymbolicLink(link)
		if got := fmt.Sprintf("%s %d", ClassName(class), n); err != nil || got != want {
			t.Errorf("ParseSymbolicLink(%q) = %s, %v; want %s", link, got, err, want)
		}
	}
	for _, bad := range []string{"", "/sys/devices/system/cpu/cpu", "/sys/devices/system/cpu/cpu-1", "/sys/devices/system/cpu/cpu1x",
		"/sys/devices/system/cpu/cpu1234567890", "/devices/system/cpu/cpu1", "/sys/devices/system/memory/memory007"} {
		if _, _, err := ParseSymbolicLink(bad); err == nil {
			t.Errorf("ParseSymbolicLink(%q) succeeded", bad)
		}
	}
}

func TestTargetGUIDs(t *testing.T) {
	// wdmguid.h
	for g, want := range map[string]string{
		GUIDTargetDeviceQueryRemove.String():     "cb3a4006-46f0-11d0-b08f-00609713053f",
		GUIDTargetDeviceRemoveCancelled.String(): "cb3a4007-46f0-11d0-b08f-00609713053f",
		GUIDTargetDeviceRemoveComplete.String():  "cb3a4008-46f0-11d0-b08f-00609713053f",
	} {
		if g != want {
			t.Errorf("GUID %s; want %s", g, want)
		}
	}
	for g, want := range map[string]string{
		EventName(GUIDTargetDeviceQueryRemove):     "query_remove",
		EventName(GUIDTargetDeviceRemoveCancelled): "remove_cancelled",
		EventName(GUIDTargetDeviceRemoveComplete):  "remove_complete",
	} {
		if g != want {
			t.Errorf("EventName = %s; want %s", g, want)
		}
	}
}

// TestTargetStuckQueueBounded: a target callback that does not return while its interface keeps
// being removed holds at most QueueLimit calls, whatever the number of removals: the oldest are
// dropped (counted, and logged once), and once it returns it gets the newest ones, in order.
func TestTargetStuckQueueBounded(t *testing.T) {
	const limit, removals = 8, 100_000
	var logs testenv.Buffer
	obs := &syncObs{}
	r := NewTargetRegistry(TargetOptions{QueueLimit: limit, Observer: obs,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var got []uint64
	e := mustRegisterTarget(t, r, cpu1Link, "stuck", func(ctx context.Context, n TargetNotification, _ any) error {
		mu.Lock()
		got = append(got, n.Seqnum)
		first := len(got) == 1
		mu.Unlock()
		if first {
			close(entered)
			<-release
		}
		return nil
	})
	defer closeTargets(t, r)
	r.Removed(removal(cpu(1), 1))
	<-entered // the first call runs, and does not return: the rest queue

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for seq := uint64(2); seq <= removals; seq++ {
		r.Removed(removal(cpu(1), seq))
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	e.se.mu.Lock()
	queued := len(e.se.queue)
	e.se.mu.Unlock()
	if queued != limit {
		t.Errorf("%d calls queued after %d removals; want the limit, %d", queued, removals, limit)
	}
	// Unbounded, the queue holds 100,000 calls: over 20 MB.
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 4<<20 {
		t.Errorf("the heap grew by %d bytes over %d removals with a stuck callback; want it bounded", grew, removals)
	}
	if n := len(obs.only("overflow stuck 1")); n != removals-1-limit {
		t.Errorf("%d overflows reported; want %d", n, removals-1-limit)
	}
	if n := strings.Count(logs.String(), "callback queue full"); n != 1 {
		t.Errorf("%d queue-full lines logged; want 1 (the first drop):\n%s", n, logs.String())
	}

	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 1+limit || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	want := []uint64{1}
	for seq := uint64(removals - limit + 1); seq <= removals; seq++ {
		want = append(want, seq)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("seqnums delivered (-want +got):\n%s", diff)
	}
}

// TestTargetOverflowedQueryRemove: a query-remove dropped from a full queue while the removal
// waits for it counts as a missed deadline: a veto, or consent under ConsentOnTimeout.
func TestTargetOverflowedQueryRemove(t *testing.T) {
	for _, consent := range []bool{false, true} {
		t.Run(fmt.Sprintf("consent=%v", consent), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := NewTargetRegistry(TargetOptions{QueueLimit: 1, Timeout: time.Hour, ConsentOnTimeout: consent})
				release := make(chan struct{})
				mustRegisterTarget(t, r, cpu1Link, "stuck", func(ctx context.Context, n TargetNotification, _ any) error {
					if !n.Requested {
						<-release
					}
					return nil
				})
				r.Removed(removal(cpu(1), 1)) // runs, and does not return
				synctest.Wait()
				type res struct {
					rm  *Removal
					err error
				}
				done := make(chan res, 1)
				go func() {
					rm, err := r.QueryRemove(cpu(1), Requester{UID: 0, PID: 1})
					done <- res{rm, err}
				}()
				synctest.Wait()               // query-remove is queued
				r.Removed(removal(cpu(1), 2)) // and dropped by this one
				got := <-done
				switch {
				case consent && got.err != nil:
					t.Errorf("QueryRemove = %v; want consent", got.err)
				case !consent && !errors.As(got.err, new(*VetoError)):
					t.Errorf("QueryRemove = %v; want a veto", got.err)
				}
				if got.rm != nil {
					got.rm.Complete()
				}
				close(release)
				closeTargets(t, r)
			})
		})
	}
}
