package client

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/web"
)

var seedSet = []notify.Interface{cpuIface(0), cpuIface(1), blockIface(0), blockIface(1)}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		url  string
		o    Options
		want string
	}{
		{"localhost:19100", Options{}, "want http://host:port"},
		{"ftp://localhost", Options{}, "want http://host:port"},
		{"http://", Options{}, "want http://host:port"},
		{"http://localhost:19100/?class=cpu", Options{}, "no query"},
		{"http://localhost:19100", Options{Buffer: -1}, "buffer -1"},
		{"http://localhost:19100", Options{Backoff: BackoffOptions{Min: -time.Second}}, "negative"},
		{"http://localhost:19100", Options{Backoff: BackoffOptions{Min: time.Second, Max: time.Millisecond}}, "below the minimum"},
		{"http://localhost:19100", Options{IdleTimeout: -1}, "idle timeout"},
		{"http://localhost:19100", Options{HTTPClient: &http.Client{Timeout: time.Second}}, "Timeout"},
	} {
		c, err := New(tc.url, tc.o)
		if err == nil {
			c.Close()
			t.Errorf("New(%q, %+v): no error; want one saying %q", tc.url, tc.o, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("New(%q): %q; want one line saying %q", tc.url, err, tc.want)
		}
	}
	for _, u := range []string{"http://h:1", "http://h:1/", "http://h:1/agent/", "http://h:1/events", "https://h:1/x/events/"} {
		c, err := New(u, Options{})
		if err != nil {
			t.Errorf("New(%q): %v", u, err)
			continue
		}
		if !strings.HasSuffix(c.URL(), "/events") || strings.Contains(c.URL(), "events/events") {
			t.Errorf("New(%q).URL() = %q; want the agent's /events", u, c.URL())
		}
		c.Close()
	}
}

func TestParseFilter(t *testing.T) {
	for in, want := range map[string]string{"": "all", "all": "all", "processor": "processor", "CPU": "processor",
		"memory": "memory", "{3FD0F03D-92E0-45FB-B75C-5ED8FFB01021}": "memory", "0f0e0d0c-0b0a-0908-0706-050403020100": "0f0e0d0c-0b0a-0908-0706-050403020100"} {
		f, err := ParseFilter(in)
		if err != nil || f.String() != want {
			t.Errorf("ParseFilter(%q) = %v, %v; want %s", in, f, err, want)
		}
	}
	if _, err := ParseFilter("disk"); err == nil || !strings.Contains(err.Error(), "want processor, memory or a GUID") {
		t.Errorf("ParseFilter(disk): %v", err)
	}
}

// TestIncludeExistingThenLive: the existing interfaces of the class first (cause existing, the
// agent's order), then what is published, with nothing lost or doubled between them; a
// registration without the flag gets only the live ones.
func TestIncludeExistingThenLive(t *testing.T) {
	m := newMemAgent(t, seedSet, 40, web.Options{})
	c := newTestClient(t, m.srv.URL, Options{})
	withExisting, plain, all := newRecorder(), newRecorder(), newRecorder()
	r1, err := c.Register(Filter{Class: notify.GUIDDeviceProcessor}, notify.FlagIncludeExistingInterfaces, withExisting.callback)
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := c.Register(Filter{Class: notify.GUIDDeviceProcessor}, 0, plain.callback)
	r3, _ := c.Register(Filter{}, notify.FlagIncludeExistingInterfaces, all.callback)
	for _, r := range []*Registration{r1, r2, r3} {
		waitReady(t, r)
	}
	m.publish(t, false, cpuIface(1))   // 41
	m.publish(t, false, blockIface(0)) // 42: another class
	m.publish(t, true, cpuIface(1))    // 43
	waitFor(t, "the live notifications", func() bool { return all.lastID() == 43 && withExisting.lastID() == 43 && plain.lastID() == 43 },
		func() string { return fmt.Sprint(shorts(all.all())) })
	want := []string{"arrival cpu0 #0 existing", "arrival cpu1 #0 existing", "removal cpu1 #41 uevent", "arrival cpu1 #43 uevent"}
	if got := shorts(withExisting.all()); !slices.Equal(got, want) {
		t.Errorf("processor registration with existing got %v; want %v", got, want)
	}
	if got := shorts(plain.all()); !slices.Equal(got, want[2:]) {
		t.Errorf("processor registration without existing got %v; want %v", got, want[2:])
	}
	wantAll := []string{"arrival cpu0 #0 existing", "arrival cpu1 #0 existing", "arrival memory0 #0 existing", "arrival memory1 #0 existing",
		"removal cpu1 #41 uevent", "removal memory0 #42 uevent", "arrival cpu1 #43 uevent"}
	if got := shorts(all.all()); !slices.Equal(got, wantAll) {
		t.Errorf("all-classes registration got %v; want %v", got, wantAll)
	}
	// The Linux details come through.
	for _, n := range all.all() {
		if n.SymbolicLinkName == blockIface(0).SymbolicLink && n.Interface != blockIface(0) {
			t.Errorf("memory0 decoded as %+v; want %+v", n.Interface, blockIface(0))
		}
	}
	if s := c.Stats(); s.Connects != 1 || s.Resyncs != 0 || s.Inconsistencies != 0 {
		t.Errorf("stats %+v; want one connection and nothing else", s)
	}
	sameView(t, "client replica", toMap(c.Active()), m.reg.Active())
}

func toMap(is []notify.Interface) map[string]notify.Interface {
	out := map[string]notify.Interface{}
	for _, i := range is {
		out[i.SymbolicLink] = i
	}
	return out
}

// TestRegisterBeforeTheAgentIsThere: Register does not wait for the agent; the registration
// starts when the agent is reached, and WaitReady says so.
func TestRegisterBeforeTheAgentIsThere(t *testing.T) {
	m := newMemAgent(t, seedSet, 0, web.Options{})
	px := newProxy(t, m.addr(), 1)
	px.Down()
	c := newTestClient(t, px.URL(), Options{})
	rec := newRecorder()
	r, err := c.Register(Filter{Class: notify.GUIDDeviceProcessor}, notify.FlagIncludeExistingInterfaces, rec.callback)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err = r.WaitReady(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady with the agent unreachable: %v; want a deadline error", err)
	}
	if err := c.WaitState(context.Background(), Backoff); err != nil {
		t.Fatal(err)
	}
	px.Up()
	waitReady(t, r)
	m.publish(t, false, cpuIface(0))
	waitFor(t, "the removal", func() bool { return rec.lastID() == 1 }, nil)
	want := []string{"arrival cpu0 #0 existing", "arrival cpu1 #0 existing", "removal cpu0 #1 uevent"}
	if got := shorts(rec.all()); !slices.Equal(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
}

// TestUnregisterSemantics: Unregister returns at once with a callback in flight and no callback
// starts after it; UnregisterEx waits for the one in flight; from inside its own callback it
// does not wait; double and foreign unregistrations fail; Register after Close fails.
func TestUnregisterSemantics(t *testing.T) {
	m := newMemAgent(t, seedSet, 0, web.Options{})
	c := newTestClient(t, m.srv.URL, Options{})

	if _, err := c.Register(Filter{}, 0x2, func(context.Context, notify.Notification) error { return nil }); err == nil || !strings.Contains(err.Error(), "unknown flags 0x2") {
		t.Errorf("Register with flag 0x2: %v", err)
	}
	if _, err := c.Register(Filter{}, 0, nil); err == nil || !strings.Contains(err.Error(), "nil callback") {
		t.Errorf("Register with a nil callback: %v", err)
	}

	// A callback blocked in flight.
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int64
	var ctxDone atomic.Bool
	blocked, err := c.Register(Filter{Class: notify.GUIDDeviceProcessor}, notify.FlagIncludeExistingInterfaces, func(ctx context.Context, n notify.Notification) error {
		if calls.Add(1) == 1 {
			close(entered)
			<-release
			ctxDone.Store(ctx.Err() != nil)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	<-entered // the first existing arrival; the second is queued
	if err := c.Unregister(blocked); err != nil {
		t.Fatalf("Unregister with a callback in flight: %v", err)
	}
	if err := c.Unregister(blocked); !errors.Is(err, ErrUnregistered) {
		t.Errorf("second Unregister: %v; want ErrUnregistered", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	err = c.UnregisterEx(ctx, blocked)
	cancel()
	if !errors.Is(err, ErrUnregistered) {
		t.Errorf("UnregisterEx after Unregister: %v; want ErrUnregistered", err)
	}
	close(release)
	waitFor(t, "the blocked callback to return", func() bool { return ctxDone.Load() }, nil)
	m.publish(t, false, cpuIface(1))
	// A second registration proves the stream moved past that removal; the unregistered one
	// never gets another call.
	probe := newRecorder()
	pr, _ := c.Register(Filter{}, 0, probe.callback)
	waitReady(t, pr)
	m.publish(t, true, cpuIface(1))
	waitFor(t, "the probe's arrival", func() bool { return probe.lastID() == 2 }, nil)
	if n := calls.Load(); n != 1 {
		t.Errorf("the unregistered callback ran %d times; want 1 (none after Unregister)", n)
	}

	// UnregisterEx with a deadline: the callback in flight outlives it.
	entered2, release2 := make(chan struct{}), make(chan struct{})
	var once2 sync.Once
	slow, _ := c.Register(Filter{Class: notify.GUIDDeviceProcessor}, notify.FlagIncludeExistingInterfaces, func(context.Context, notify.Notification) error {
		once2.Do(func() { close(entered2) })
		<-release2
		return nil
	})
	<-entered2
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Millisecond)
	err = c.UnregisterEx(ctx, slow)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "still running") {
		t.Errorf("UnregisterEx with a blocked callback and a short deadline: %v", err)
	}
	close(release2)

	// UnregisterEx waits for the callback in flight.
	entered3, release3 := make(chan struct{}), make(chan struct{})
	var once3 sync.Once
	var finished atomic.Bool
	slow2, _ := c.Register(Filter{Class: notify.GUIDDeviceProcessor}, notify.FlagIncludeExistingInterfaces, func(context.Context, notify.Notification) error {
		once3.Do(func() { close(entered3) })
		<-release3
		finished.Store(true)
		return nil
	})
	<-entered3
	unregistered := make(chan struct{})
	go func() {
		defer close(unregistered)
		if err := c.UnregisterEx(context.Background(), slow2); err != nil {
			t.Errorf("UnregisterEx: %v", err)
		}
		if !finished.Load() {
			t.Errorf("UnregisterEx returned before the callback in flight finished")
		}
	}()
	close(release3)
	<-unregistered

	// From inside its own callback: no deadlock, and nothing after it.
	var selfCalls atomic.Int64
	selfDone := make(chan error, 1)
	var self *Registration
	var selfMu sync.Mutex
	selfMu.Lock()
	self, _ = c.Register(Filter{Class: notify.GUIDDeviceProcessor}, notify.FlagIncludeExistingInterfaces, func(context.Context, notify.Notification) error {
		if selfCalls.Add(1) == 1 {
			selfMu.Lock()
			r := self
			selfMu.Unlock()
			selfDone <- c.UnregisterEx(context.Background(), r)
		}
		return nil
	})
	selfMu.Unlock()
	select {
	case err := <-selfDone:
		if err != nil {
			t.Errorf("UnregisterEx from its own callback: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("UnregisterEx from inside its own callback deadlocked")
	}
	if n := selfCalls.Load(); n != 1 {
		t.Errorf("callbacks after UnregisterEx from inside: %d calls; want 1", n)
	}

	// Foreign and nil registrations.
	other := newTestClient(t, m.srv.URL, Options{})
	or, _ := other.Register(Filter{}, 0, probe.callback)
	if err := c.Unregister(or); !errors.Is(err, ErrUnregistered) {
		t.Errorf("Unregister of another client's registration: %v", err)
	}
	if err := c.Unregister(nil); !errors.Is(err, ErrUnregistered) {
		t.Errorf("Unregister(nil): %v", err)
	}

	// Close: every registration ends; Register fails after it; WaitState(Closed) holds.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(Filter{}, 0, probe.callback); !errors.Is(err, ErrClosed) {
		t.Errorf("Register after Close: %v; want ErrClosed", err)
	}
	if err := c.Unregister(pr); !errors.Is(err, ErrUnregistered) {
		t.Errorf("Unregister after Close: %v; want ErrUnregistered", err)
	}
	if s := c.State(); s != Closed {
		t.Errorf("state after Close: %s", s)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestCloseFromCallback: Close called from a callback does not wait for that callback.
func TestCloseFromCallback(t *testing.T) {
	m := newMemAgent(t, seedSet, 0, web.Options{})
	c := newTestClient(t, m.srv.URL, Options{})
	done := make(chan error, 1)
	var once sync.Once
	if _, err := c.Register(Filter{}, notify.FlagIncludeExistingInterfaces, func(ctx context.Context, n notify.Notification) error {
		once.Do(func() { done <- c.Close() })
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close from a callback: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("Close from a callback deadlocked")
	}
}

// TestCallbackErrorsAndPanicsDoNotStopDelivery: a callback error is logged, a panic recovered;
// the registration continues in order.
func TestCallbackErrorsAndPanicsDoNotStopDelivery(t *testing.T) {
	m := newMemAgent(t, seedSet, 0, web.Options{})
	c := newTestClient(t, m.srv.URL, Options{})
	rec := newRecorder()
	var k atomic.Int64
	r, _ := c.Register(Filter{Class: notify.GUIDDeviceProcessor}, 0, func(ctx context.Context, n notify.Notification) error {
		rec.add(n)
		switch k.Add(1) {
		case 1:
			return errors.New("refused")
		case 2:
			panic("boom")
		}
		return nil
	})
	waitReady(t, r)
	m.flip(t, cpuIface(1), 4)
	waitFor(t, "four notifications", func() bool { return rec.lastID() == 4 }, func() string { return fmt.Sprint(shorts(rec.all())) })
	if got := shorts(rec.all()); len(got) != 4 || got[3] != "arrival cpu1 #4 uevent" {
		t.Errorf("got %v", got)
	}
}

// TestResumeAfterCuts cuts the connection again and again while the agent publishes: the
// client resumes by ID each time; its sequence is the agent's exactly (no resync needed: the
// history reaches back).
func TestResumeAfterCuts(t *testing.T) {
	m := newMemAgent(t, seedSet, 0, web.Options{})
	truth := newRecorder()
	if _, err := m.reg.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.AllClasses, "truth", truth.registryCallback, nil); err != nil {
		t.Fatal(err)
	}
	px := newProxy(t, m.addr(), 2)
	c := newTestClient(t, px.URL(), Options{})
	rec := newRecorder()
	r, _ := c.Register(Filter{}, notify.FlagIncludeExistingInterfaces, rec.callback)
	waitReady(t, r)
	kills := 60
	if testing.Short() {
		kills = 15
	}
	// Each round: publish, cut in one of the ways, and wait until the client has caught up
	// (after a kill that means it reconnected and resumed).
	for i := 0; px.kills.Load() < int64(kills); i++ {
		m.flip(t, cpuIface(1), 2)
		px.Cut(cutMode(i % int(cutModes)))
		m.flip(t, blockIface(1), 2)
		last := m.reg.LastID()
		waitFor(t, "the client to catch up", func() bool { return rec.lastID() == last }, nil)
		if i > 20*kills {
			t.Fatalf("only %d kills after %d rounds", px.kills.Load(), i)
		}
	}
	m.flip(t, cpuIface(0), 1) // cpu0 ends removed
	last := m.reg.LastID()
	waitFor(t, "the client to catch up", func() bool { return rec.lastID() == last && truth.lastID() == last },
		func() string { return fmt.Sprintf("client at %d, agent at %d", rec.lastID(), last) })
	if got, want := shorts(numbered(rec.all())), shorts(truth.all()); !slices.Equal(got, want) {
		t.Fatalf("after %d kills the client's sequence differs from the agent's:\n got %v\nwant %v", kills, got, want)
	}
	view := checkAlternation(t, nil, rec.all())
	sameView(t, "after the cuts", view, m.reg.Active())
	if s := c.Stats(); s.Resyncs != 0 || s.Inconsistencies != 0 || s.Connects < 2 {
		t.Errorf("stats %+v; want several connections, no resync, no inconsistency", s)
	}
}

// TestResyncWhenHistoryIsLost: the client is away while more happens than the agent's history
// holds; it gets a resync and delivers removals, then arrivals, that make its view the agent's.
func TestResyncWhenHistoryIsLost(t *testing.T) {
	m := newMemAgent(t, seedSet, 0, web.Options{History: 4})
	px := newProxy(t, m.addr(), 3)
	c := newTestClient(t, px.URL(), Options{})
	cpus, all := newRecorder(), newRecorder()
	r1, _ := c.Register(Filter{Class: notify.GUIDDeviceProcessor}, notify.FlagIncludeExistingInterfaces, cpus.callback)
	r2, _ := c.Register(Filter{}, notify.FlagIncludeExistingInterfaces, all.callback)
	waitReady(t, r1)
	waitReady(t, r2)
	m.publish(t, false, cpuIface(1)) // 1: seen
	waitFor(t, "the first removal", func() bool { return all.lastID() == 1 }, nil)
	px.Down()
	m.publish(t, true, cpuIface(1))    // 2
	m.flip(t, cpuIface(0), 9)          // 3..11: cpu0 ends removed
	m.publish(t, false, blockIface(1)) // 12
	m.publish(t, true, blockIface(7))  // 13: a new block
	px.Up()
	waitFor(t, "the resync", func() bool { return c.Stats().Resyncs == 1 && len(all.all()) == 4+1+4 },
		func() string { return fmt.Sprintf("%+v %v", c.Stats(), shorts(all.all())) })
	wantAll := []string{"removal cpu0 #0 resync", "removal memory1 #0 resync", "arrival cpu1 #0 resync", "arrival memory7 #0 resync"}
	if got := shorts(all.all()[5:]); !slices.Equal(got, wantAll) {
		t.Errorf("all-classes registration after the resync: %v; want %v (removals first, then arrivals)", got, wantAll)
	}
	if got := shorts(cpus.all()[3:]); !slices.Equal(got, []string{"removal cpu0 #0 resync", "arrival cpu1 #0 resync"}) {
		t.Errorf("processor registration after the resync: %v", got)
	}
	sameView(t, "all classes", checkAlternation(t, nil, all.all()), m.reg.Active())
	// Live again, resuming from the resync's position.
	m.publish(t, true, cpuIface(0)) // 14
	waitFor(t, "the live arrival", func() bool { return all.lastID() == 14 }, nil)
	if s := c.Stats(); s.Inconsistencies != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestResyncAfterAgentReset: the agent comes back with no memory (IDs restart, the set
// differs): the client's ID is unknown to it, so it resynchronises rather than resuming.
func TestResyncAfterAgentReset(t *testing.T) {
	m1 := newMemAgent(t, seedSet, 100, web.Options{})
	px := newProxy(t, m1.addr(), 4)
	c := newTestClient(t, px.URL(), Options{})
	rec := newRecorder()
	r, _ := c.Register(Filter{}, 0, rec.callback)
	waitReady(t, r)
	m1.publish(t, false, cpuIface(1)) // 101
	waitFor(t, "101", func() bool { return rec.lastID() == 101 }, nil)

	m2 := newMemAgent(t, []notify.Interface{cpuIface(0), cpuIface(1), blockIface(0), blockIface(2)}, 0, web.Options{})
	px.SetTarget(m2.addr())
	px.Cut(cutNow)
	waitFor(t, "the resync", func() bool { return c.Stats().Resyncs == 1 }, nil)
	m2.publish(t, false, cpuIface(0)) // 1 of the new agent
	waitFor(t, "the new agent's first notification", func() bool { return rec.lastID() == 1 }, func() string { return fmt.Sprint(shorts(rec.all())) })
	want := []string{"removal cpu1 #101 uevent", "removal memory1 #0 resync", "arrival cpu1 #0 resync", "arrival memory2 #0 resync", "removal cpu0 #1 uevent"}
	if got := shorts(rec.all()); !slices.Equal(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
	sameView(t, "after the reset", toMap(c.Active()), m2.reg.Active())
}

// TestSlowCallbackIsResynchronisedLocally: a callback that falls further behind than Buffer
// is resynchronised by the client, as the agent's registry would; the stream and the other
// registrations are not held up, and the agent never cuts the client off.
func TestSlowCallbackIsResynchronisedLocally(t *testing.T) {
	m := newMemAgent(t, seedSet, 0, web.Options{})
	c := newTestClient(t, m.srv.URL, Options{Buffer: 50})
	release := make(chan struct{})
	slow, fast := newRecorder(), newRecorder()
	rs, _ := c.Register(Filter{}, notify.FlagIncludeExistingInterfaces, func(ctx context.Context, n notify.Notification) error {
		<-release
		slow.add(n)
		return nil
	})
	rf, _ := c.Register(Filter{}, notify.FlagIncludeExistingInterfaces, fast.callback)
	waitReady(t, rs)
	waitReady(t, rf)
	// In batches the fast registration keeps up with, well beyond the slow one's buffer.
	for range 5 {
		m.flip(t, cpuIface(1), 20)
		m.flip(t, blockIface(0), 21)      // memory0 flips and ends removed
		m.publish(t, true, blockIface(0)) // and back
		last := m.reg.LastID()
		waitFor(t, "the fast registration", func() bool { return fast.lastID() == last }, nil)
	}
	m.flip(t, blockIface(0), 1)
	last := m.reg.LastID()
	waitFor(t, "the fast registration", func() bool { return fast.lastID() == last }, nil)
	close(release)
	want := m.reg.Active()
	waitFor(t, "the slow registration to reach the agent's view", func() bool { return sameLinks(toMapSeq(slow.all()), want) },
		func() string { return fmt.Sprint(shorts(slow.all())) })
	view := checkAlternation(t, nil, slow.all())
	sameView(t, "slow registration", view, m.reg.Active())
	if rs.Dropped() == 0 {
		t.Errorf("the slow registration dropped nothing: the test did not overflow it")
	}
	if len(numbered(fast.all())) != int(last) {
		t.Errorf("the fast registration got %d numbered notifications; want %d", len(numbered(fast.all())), last)
	}
	if s := c.Stats(); s.Cuts != 0 || m.cut.Load() != 0 {
		t.Errorf("the agent cut the client off (stats %+v, cuts %d): a slow callback must not stall the stream", s, m.cut.Load())
	}
}

// sameLinks reports whether view holds exactly the interfaces of want.
func sameLinks(view map[string]bool, want []notify.Interface) bool {
	if len(view) != len(want) {
		return false
	}
	for _, i := range want {
		if !view[i.SymbolicLink] {
			return false
		}
	}
	return true
}

// toMapSeq is the view a sequence leaves, without checks.
func toMapSeq(seq []notify.Notification) map[string]bool {
	v := map[string]bool{}
	for _, n := range seq {
		if n.IsArrival() {
			v[n.SymbolicLinkName] = true
		} else {
			delete(v, n.SymbolicLinkName)
		}
	}
	return v
}

// fakeAgent is an SSE server a test scripts connection by connection, to show the client what a
// real agent would not send.
type fakeAgent struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []string // the Last-Event-ID of each request
	// scripts[i] is written on connection i (the last one repeats); "" ends it at once.
	scripts []string
	hold    bool          // keep the connection open after the script
	gate    chan struct{} // the first response waits until it is closed
}

func newFakeAgent(t *testing.T, hold bool, scripts ...string) *fakeAgent {
	f := &fakeAgent{scripts: scripts, hold: hold, gate: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-f.gate:
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
		i := len(f.got)
		f.got = append(f.got, r.Header.Get("Last-Event-ID"))
		f.mu.Unlock()
		s := f.scripts[min(i, len(f.scripts)-1)]
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ": fake\nretry: 1000\n\n"+s)
		w.(http.Flusher).Flush()
		if f.hold {
			<-r.Context().Done()
		}
	}))
	t.Cleanup(func() { f.srv.CloseClientConnections(); f.srv.Close() })
	return f
}

// open lets the responses go.
func (f *fakeAgent) open() *fakeAgent {
	close(f.gate)
	return f
}

func (f *fakeAgent) lastEventIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got)
}

func notificationJSON(t *testing.T, event bool, iface notify.Interface, id uint64) string {
	t.Helper()
	ev := notify.GUIDDeviceInterfaceRemoval
	if event {
		ev = notify.GUIDDeviceInterfaceArrival
	}
	n := notify.NewNotification(ev, iface, 0, time.Unix(0, 0), notify.CauseUevent)
	n.ID = id
	b, err := n.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("id: %d\ndata: %s\n\n", id, b)
}

func resyncJSON(t *testing.T, last uint64, set ...notify.Interface) string {
	t.Helper()
	var parts []string
	for _, i := range set {
		b, _ := i.MarshalJSON()
		parts = append(parts, string(b))
	}
	return fmt.Sprintf("event: resync\nid: %d\ndata: {\"last_id\":%d,\"interfaces\":[%s]}\n\n", last, last, strings.Join(parts, ","))
}

// TestIDsMaySkip: the agent numbers the notifications it makes for one of its callbacks alone
// (a durable callback's existing arrivals or resync) from the same sequence, and the stream does
// not carry them: a notification whose ID is further on than the next one is delivered, with no
// resync and nothing counted as inconsistent.
func TestIDsMaySkip(t *testing.T) {
	f := newFakeAgent(t, false,
		resyncJSON(t, 5, cpuIface(0), cpuIface(1))+notificationJSON(t, false, cpuIface(1), 6)+
			notificationJSON(t, true, cpuIface(1), 9)+notificationJSON(t, false, cpuIface(1), 10), "")
	c := newTestClient(t, f.srv.URL, Options{})
	rec := newRecorder()
	c.Register(Filter{}, 0, rec.callback)
	f.open()
	want := []string{"removal cpu1 #6 uevent", "arrival cpu1 #9 uevent", "removal cpu1 #10 uevent"}
	waitFor(t, "three notifications", func() bool { return len(rec.all()) >= 3 }, func() string { return fmt.Sprint(shorts(rec.all())) })
	if got := shorts(rec.all()); !slices.Equal(got, want) {
		t.Errorf("delivered %v; want %v", got, want)
	}
	if s := c.Stats(); s.Inconsistencies != 0 || s.Resyncs != 0 {
		t.Errorf("stats %+v; want no inconsistency and no resync", s)
	}
}

// TestInconsistentStreamAsksForResync: an ID repeated, an arrival of an active interface, or an
// undecodable notification is never delivered: the client reconnects asking for a resync (the
// unknown ID), and reconciles from it. A stream that simply ends is resumed from the last ID.
func TestInconsistentStreamAsksForResync(t *testing.T) {
	probe := fmt.Sprint(uint64(unknownID))
	for _, tc := range []struct {
		name string
		bad  string
	}{
		{"repeated id", notificationJSON(t, true, cpuIface(1), 6)},
		{"older id", notificationJSON(t, true, cpuIface(1), 5)},
		{"repeated arrival", notificationJSON(t, true, cpuIface(0), 7)},
		{"removal of an inactive interface", notificationJSON(t, false, cpuIface(3), 7)},
		{"bad json", "id: 7\ndata: {\"version\":1,\"event\":\"arrival\"\n\n"},
		{"id disagrees", strings.Replace(notificationJSON(t, true, cpuIface(1), 7), "id: 7", "id: 9", 1)},
		{"no id", strings.Replace(notificationJSON(t, true, cpuIface(1), 7), "id: 7\n", "", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAgent(t, false,
				resyncJSON(t, 5, cpuIface(0), cpuIface(1))+notificationJSON(t, false, cpuIface(1), 6)+tc.bad,
				resyncJSON(t, 20, cpuIface(0), cpuIface(2)))
			c := newTestClient(t, f.srv.URL, Options{})
			rec := newRecorder()
			c.Register(Filter{}, 0, rec.callback)
			f.open()
			waitFor(t, "the resync", func() bool { return c.Stats().Resyncs >= 1 && len(rec.all()) >= 2 }, nil)
			ids := f.lastEventIDs()
			if len(ids) < 2 || ids[0] != probe || ids[1] != probe {
				t.Fatalf("Last-Event-IDs %v; want the unknown ID %s first and again after the inconsistency", ids, probe)
			}
			want := []string{"removal cpu1 #6 uevent", "arrival cpu2 #0 resync"}
			if got := shorts(rec.all()); !slices.Equal(got[:min(len(got), 2)], want) {
				t.Errorf("delivered %v; want %v and nothing of the bad event", got, want)
			}
			if s := c.Stats(); s.Inconsistencies == 0 {
				t.Errorf("stats %+v: the inconsistency was not counted", s)
			}
		})
	}
	t.Run("clean end resumes", func(t *testing.T) {
		f := newFakeAgent(t, false, resyncJSON(t, 5, cpuIface(0))+notificationJSON(t, true, cpuIface(1), 6), "").open()
		c := newTestClient(t, f.srv.URL, Options{})
		waitFor(t, "a reconnection", func() bool { return len(f.lastEventIDs()) >= 2 }, nil)
		if ids := f.lastEventIDs(); ids[0] != probe || ids[1] != "6" {
			t.Errorf("Last-Event-IDs %v; want the unknown ID, then 6", ids)
		}
		if s := c.Stats(); s.Inconsistencies != 0 {
			t.Errorf("stats %+v", s)
		}
	})
	t.Run("error event", func(t *testing.T) {
		f := newFakeAgent(t, false, resyncJSON(t, 5, cpuIface(0))+"event: error\ndata: {\"error\":\"subscriber too slow\"}\n\n", "").open()
		var mu sync.Mutex
		var errs []string
		c := newTestClient(t, f.srv.URL, Options{OnStateChange: func(s StateChange) {
			if s.Err != nil {
				mu.Lock()
				errs = append(errs, s.Err.Error())
				mu.Unlock()
			}
		}})
		waitFor(t, "the reconnection", func() bool { return len(f.lastEventIDs()) >= 2 }, nil)
		if ids := f.lastEventIDs(); ids[1] != "5" {
			t.Errorf("Last-Event-IDs %v; want 5 after the cut", ids)
		}
		mu.Lock()
		defer mu.Unlock()
		if s := c.Stats(); s.Cuts != 1 || len(errs) == 0 || !strings.Contains(errs[0], "subscriber too slow") {
			t.Errorf("stats %+v, state errors %q; want the agent's reason", s, errs)
		}
	})
}

// TestOversizedEventAsksForResync: an event too large to read (its data lines together, or one
// line, over 64 MiB) ends the connection with an error naming the limit, is never delivered, and
// the next connection asks for a resync: resumed at the same ID, it would get the same event.
func TestOversizedEventAsksForResync(t *testing.T) {
	probe := fmt.Sprint(uint64(unknownID))
	// The client's limit lowered to 1 MiB (its own is 64 MiB): the same code, 64 times less
	// to stream, which the race detector makes slow.
	const limit = 1 << 20
	kib := strings.Repeat("x", 1<<10)
	first := resyncJSON(t, 5, cpuIface(0), cpuIface(1)) + notificationJSON(t, false, cpuIface(1), 6) + "id: 7\n"
	next := resyncJSON(t, 20, cpuIface(0), cpuIface(2))
	for _, tc := range []struct {
		name, want string
		data       func(w io.Writer) // the event's data field, after its id
	}{
		{"data lines", "an event's data exceeds 64 MiB", func(w io.Writer) {
			for range 1025 {
				io.WriteString(w, "data: "+kib+"\n")
			}
		}},
		{"one line", "a line exceeds 64 MiB", func(w io.Writer) {
			io.WriteString(w, "data: ")
			for range 1025 {
				io.WriteString(w, kib)
			}
			io.WriteString(w, "\n")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gate := make(chan struct{})
			var mu sync.Mutex
			var ids, errs []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				<-gate
				mu.Lock()
				ids = append(ids, r.Header.Get("Last-Event-ID"))
				i := len(ids)
				mu.Unlock()
				w.Header().Set("Content-Type", "text/event-stream")
				if i > 1 {
					io.WriteString(w, next)
					return
				}
				io.WriteString(w, first)
				tc.data(w)
				io.WriteString(w, "\n")
			}))
			t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
			c := newTestClient(t, srv.URL, Options{lineLimit: limit, OnStateChange: func(s StateChange) {
				if s.Err != nil {
					mu.Lock()
					errs = append(errs, s.Err.Error())
					mu.Unlock()
				}
			}})
			rec := newRecorder()
			c.Register(Filter{}, 0, rec.callback)
			close(gate)
			waitFor(t, "the resync", func() bool { return c.Stats().Resyncs >= 1 && len(rec.all()) >= 2 }, nil)
			mu.Lock()
			defer mu.Unlock()
			if len(ids) < 2 || ids[0] != probe || ids[1] != probe {
				t.Errorf("Last-Event-IDs %v; want the unknown ID %s first and again after the oversized event", ids, probe)
			}
			if len(errs) == 0 || !strings.Contains(errs[0], tc.want) {
				t.Errorf("state errors %q; want the first to say %q", errs, tc.want)
			}
			want := []string{"removal cpu1 #6 uevent", "arrival cpu2 #0 resync"}
			if got := shorts(rec.all()); !slices.Equal(got, want) {
				t.Errorf("delivered %v; want %v and nothing of the oversized event", got, want)
			}
			if s := c.Stats(); s.Inconsistencies != 1 {
				t.Errorf("stats %+v; want the oversized event counted as an inconsistency", s)
			}
		})
	}
}

// TestConnectionStates: Connecting, Connected, Backoff with the reason when the agent goes away
// or answers something else than a stream, Connected again, Closed.
func TestConnectionStates(t *testing.T) {
	m := newMemAgent(t, seedSet, 0, web.Options{})
	px := newProxy(t, m.addr(), 5)
	var mu sync.Mutex
	var seen []string
	c := newTestClient(t, px.URL(), Options{OnStateChange: func(s StateChange) {
		mu.Lock()
		defer mu.Unlock()
		e := ""
		if s.Err != nil {
			e = ": " + s.Err.Error()
		}
		seen = append(seen, s.State.String()+e)
	}})
	ctx := context.Background()
	if err := c.WaitState(ctx, Connected); err != nil {
		t.Fatal(err)
	}
	px.Down()
	if err := c.WaitState(ctx, Backoff); err != nil {
		t.Fatal(err)
	}
	px.Up()
	if err := c.WaitState(ctx, Connected); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := c.WaitState(ctx, Connected); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitState on a closed client: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 4 || seen[0] != "connected" || !strings.HasPrefix(seen[1], "backoff: ") || seen[len(seen)-1] != "closed" {
		t.Errorf("state changes %q; want connected, backoff with a reason, ..., connected, closed", seen)
	}
	if !slices.Contains(seen[2:], "connected") {
		t.Errorf("state changes %q: never connected again", seen)
	}

	// Not an agent: a 404, and a 200 that is not an event stream.
	for _, tc := range []struct {
		h    http.HandlerFunc
		want string
	}{
		{func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, "404 Not Found: 404 page not found"},
		{func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>") }, "not an event stream"},
	} {
		srv := httptest.NewServer(tc.h)
		got := make(chan string, 10)
		c, _ := New(srv.URL, Options{OnStateChange: func(s StateChange) {
			if s.Err != nil {
				select {
				case got <- s.Err.Error():
				default:
				}
			}
		}})
		select {
		case e := <-got:
			if !strings.Contains(e, tc.want) {
				t.Errorf("backoff reason %q; want %q", e, tc.want)
			}
		case <-time.After(patience):
			t.Errorf("no backoff for %q", tc.want)
		}
		c.Close()
		srv.Close()
	}
}

// TestURLPasswordIsNotShown: a password in the agent's URL is sent, as basic auth, but shown
// nowhere: not in the logs, nor in the errors of the state changes (a refused connection, a
// status, a response that is no stream) or of New, nor by URL, which all show "xxxxx" instead.
func TestURLPasswordIsNotShown(t *testing.T) {
	stream := resyncJSON(t, 5, cpuIface(0))
	var mu sync.Mutex
	var auths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		i := len(auths)
		mu.Unlock()
		switch i {
		case 1:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case 2:
			io.WriteString(w, "not a stream")
		default:
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, stream) // and the stream ends
		}
	}))
	t.Cleanup(srv.Close)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String() // nothing listens there
	l.Close()

	for _, tc := range []struct {
		base string
		errs int // errors of state changes to wait for
	}{{srv.URL, 3}, {closed, 2}} {
		logs := &testenv.Buffer{}
		var errs []string
		c := newTestClient(t, strings.Replace(tc.base, "http://", "http://alice:s3cret@", 1), Options{
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			OnStateChange: func(s StateChange) {
				if s.Err != nil {
					mu.Lock()
					errs = append(errs, s.Err.Error())
					mu.Unlock()
				}
			}})
		shown := strings.Replace(tc.base, "http://", "http://alice:xxxxx@", 1) + "/events"
		if c.URL() != shown {
			t.Errorf("URL() = %q; want %q", c.URL(), shown)
		}
		waitFor(t, "the failed attempts", func() bool { mu.Lock(); defer mu.Unlock(); return len(errs) >= tc.errs }, nil)
		c.Close()
		mu.Lock()
		if !strings.Contains(errs[0], shown) || !strings.Contains(logs.String(), "agent="+shown) {
			t.Errorf("state errors %q and log\n%s\nwant them to name %s", errs, logs, shown)
		}
		for _, e := range append(errs, logs.String()) {
			if strings.Contains(e, "s3cret") {
				t.Errorf("the password is shown: %s", e)
			}
		}
		errs = nil
		mu.Unlock()
	}
	mu.Lock()
	if want := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret")); len(auths) == 0 || auths[0] != want {
		t.Errorf("Authorization %q; want %q", auths, want)
	}
	mu.Unlock()

	for _, u := range []string{"ftp://alice:s3cret@h:1", "http://alice:s3cret@h:1/?class=cpu", "http://alice:s3cret@h:x"} {
		if c, err := New(u, Options{}); err == nil {
			c.Close()
			t.Errorf("New(%q): no error", u)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("New(%q): %v: the password is shown", u, err)
		}
	}
}

// TestIdleConnectionIsDropped: a connection on which nothing arrives, not even keep-alives, is
// abandoned after IdleTimeout and made again.
func TestIdleConnectionIsDropped(t *testing.T) {
	f := newFakeAgent(t, true, resyncJSON(t, 5, cpuIface(0))).open()
	got := make(chan string, 10)
	newTestClient(t, f.srv.URL, Options{IdleTimeout: 100 * time.Millisecond, OnStateChange: func(s StateChange) {
		if s.Err != nil {
			select {
			case got <- s.Err.Error():
			default:
			}
		}
	}})
	select {
	case e := <-got:
		if !strings.Contains(e, "nothing received for 100ms") {
			t.Errorf("backoff reason %q; want the idle timeout", e)
		}
	case <-time.After(patience):
		t.Fatal("the idle connection was never dropped")
	}
	waitFor(t, "a resumed connection", func() bool { ids := f.lastEventIDs(); return len(ids) >= 2 && ids[1] == "5" }, nil)

	// A server that accepts the connection and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	silent := make(chan string, 10)
	newTestClient(t, "http://"+ln.Addr().String(), Options{IdleTimeout: 100 * time.Millisecond, OnStateChange: func(s StateChange) {
		if s.Err != nil {
			select {
			case silent <- s.Err.Error():
			default:
			}
		}
	}})
	select {
	case e := <-silent:
		if !strings.Contains(e, "no response for 100ms") {
			t.Errorf("backoff reason %q; want no response", e)
		}
	case <-time.After(patience):
		t.Fatal("a silent server held the client forever")
	}
}

// TestStalledConsumerIsCutOff: a consumer that stops reading is cut off by the agent with a
// reason, once its buffer is full; the agent's registrations and a client of this package see
// everything, in order; the stalled consumer resumes by ID afterwards.
func TestStalledConsumerIsCutOff(t *testing.T) {
	m := newMemAgent(t, seedSet, 0, web.Options{StreamBuffer: 256, History: 50000})
	truth := newRecorder()
	m.reg.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.AllClasses, "truth", truth.registryCallback, nil)
	c := newTestClient(t, m.srv.URL, Options{})
	rec := newRecorder()
	r, _ := c.Register(Filter{}, 0, rec.callback)
	waitReady(t, r)
	stalled := stallingConsumer(t, m.addr())
	// In batches well below the buffer, each awaited, so that only the stalled consumer lags.
	batch := func() {
		m.flip(t, cpuIface(1), 64)
		last := m.reg.LastID()
		waitFor(t, "the client and the agent's registration", func() bool { return rec.lastID() == last && truth.lastID() == last }, nil)
	}
	for m.cut.Load() == 0 { // the hub counts a cut at once, while the cut one's handler is blocked
		if m.reg.LastID() > 40000 {
			t.Fatalf("the stalled consumer was not cut off after %d notifications", m.reg.LastID())
		}
		batch()
	}
	t.Logf("cut after %d notifications; client stats %+v", m.reg.LastID(), c.Stats())
	batch() // and life goes on
	last := m.reg.LastID()
	if got, want := shorts(rec.all()), shorts(truth.all()); !slices.Equal(got, want) {
		t.Fatalf("the client's %d notifications differ from the agent's %d", len(got), len(want))
	}
	if int(last) != len(truth.all()) {
		t.Errorf("the agent's registration got %d notifications; want %d", len(truth.all()), last)
	}
	// The stalled consumer reads at last: what it was sent, then the reason, then the end.
	body, lastSeen := stalled()
	if !strings.Contains(body, "event: error\ndata: {\"error\":\"subscriber too slow") {
		t.Errorf("the stalled consumer's stream does not end with the reason; tail %q", body[max(0, len(body)-200):])
	}
	if m.cut.Load() != 1 {
		t.Errorf("%d consumers cut off; want exactly the stalled one", m.cut.Load())
	}
	// It resumes by ID: what follows lastSeen, from the history, to the live end.
	req, _ := http.NewRequest("GET", m.srv.URL+"/events", nil)
	req.Header.Set("Last-Event-ID", lastSeen)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sr := newSSEReader(resp.Body)
	ev, err := sr.next()
	if err != nil || ev.typ != "" {
		t.Fatalf("resumed stream: %+v %v; want a notification", ev, err)
	}
	var from uint64
	fmt.Sscan(lastSeen, &from)
	if ev.id != fmt.Sprint(from+1) {
		t.Errorf("resumed at id %s; want %d", ev.id, from+1)
	}
}

// stallingConsumer subscribes and reads nothing until the returned
// function is called, which reads the whole stream and returns it with its last event ID.
func stallingConsumer(t *testing.T, addr string) func() (string, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// HTTP/1.0: the body is the stream itself, without chunk headers, and ends with the connection.
	fmt.Fprintf(conn, "GET /events HTTP/1.0\r\nHost: %s\r\n\r\n", addr)
	return func() (string, string) {
		conn.SetReadDeadline(time.Now().Add(patience))
		b, err := io.ReadAll(conn)
		if err != nil {
			t.Fatalf("reading the stalled stream: %v after %d bytes, ending %q", err, len(b), b[max(0, len(b)-300):])
		}
		s := string(b)
		last := ""
		for _, line := range strings.Split(s, "\n") {
			if id, ok := strings.CutPrefix(line, "id: "); ok {
				last = id
			}
		}
		return s, last
	}
}
