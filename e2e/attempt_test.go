//go:build linux

package e2e

import (
	"fmt"
	"os"
	"regexp"
	"runtime"
	"sync"
	"testing"
)

// guestStall matches the guest kernel's reports that one of its CPUs stopped making progress:
// RCU stall warnings and soft lockups. Under TCG on a loaded two-core host, a hot-added vCPU's
// timer has been seen not to fire for tens of seconds ("rcu_preempt kthread timer wakeup didn't
// happen ... Possible timer handling issue on cpu=2"); the guest kernel then could not finish a
// DIMM's offline, and the scenario failed for the emulator's sake, not the agent's.
var guestStall = regexp.MustCompile(`rcu: INFO: \S+ (?:self-)?detected stalls?|kthread timer wakeup didn't happen|kthread starved for|watchdog: BUG: soft lockup`)

// stallReport returns the first line of the guest's console that reports a stalled guest CPU,
// or "" if there is none.
func stallReport(serial string) string {
	loc := guestStall.FindStringIndex(serial)
	if loc == nil {
		return ""
	}
	start, end := loc[0], loc[1]
	for start > 0 && serial[start-1] != '\n' {
		start--
	}
	for end < len(serial) && serial[end] != '\n' {
		end++
	}
	return serial[start:end]
}

// run runs scenario as the subtest name of t on a guest of kind o. When the first attempt fails
// and its guest's kernel reported a stalled CPU (guestStall), the scenario runs once more on a
// freshly booted guest, and that attempt's outcome is the subtest's; any other failure is the
// scenario's at once.
func (p *pool) run(t *testing.T, name string, o guestOptions, scenario func(testing.TB, *guest)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		var g *guest
		if tryOnce(t, func(tb testing.TB) {
			g = p.use(tb, o)
			scenario(tb, g)
		}, func() *guest { return g }, t.Name()) {
			scenario(t, p.use(t, o)) // the attempt's cleanup retired its guest
		}
	})
}

// tryOnce runs f as a first attempt on t (see attempt), which fails only by its own messages,
// logged where they happen with their lines. If f failed and the guest that guest returns (nil
// for none) has a stalled CPU in its console, tryOnce says that what runs again on a new guest
// and reports true, leaving t as it was; after any other failure it fails t at once. A skip of f
// skips t.
func tryOnce(t *testing.T, f func(testing.TB), guest func() *guest, what string) bool {
	t.Helper()
	a := &attempt{TB: t}
	a.do(func() { f(a) })
	switch {
	case a.Skipped():
		t.SkipNow()
	case !a.Failed():
		return false
	}
	g := guest()
	stall := ""
	if g != nil && g.vm != nil {
		stall = stallReport(g.vm.Serial())
	}
	if stall == "" {
		t.FailNow() // its messages are above
	}
	msg := fmt.Sprintf("guest %s's kernel reported a stalled CPU (%q): the failure above is the emulator's; running %s again on a new guest", g.name, stall, what)
	t.Log(msg)
	fmt.Fprintf(os.Stderr, "e2e: %s\n", msg)
	return true
}

// attempt is a testing.TB for a try that may be retried: its failures are logged on the test
// (through the test's Log, with the caller's line) and recorded here instead of failing it, and
// its cleanups run when the attempt ends. FailNow, Fatal and SkipNow end the attempt's own
// goroutine (see do). Safe for concurrent use, as testing.T is.
type attempt struct {
	testing.TB

	mu       sync.Mutex
	failed   bool
	skipped  bool
	cleanups []func()
}

// do runs f in a goroutine of its own, then the cleanups registered during it, last first, each
// in a goroutine of its own too; it blocks until they are done.
func (a *attempt) do(f func()) {
	inGoroutine(f)
	a.mu.Lock()
	cleanups := a.cleanups
	a.cleanups = nil
	a.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		inGoroutine(cleanups[i])
	}
}

// inGoroutine runs f in a new goroutine and waits for it, even if f calls runtime.Goexit.
func inGoroutine(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

func (a *attempt) Fail() {
	a.mu.Lock()
	a.failed = true
	a.mu.Unlock()
}

func (a *attempt) Failed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.failed
}

func (a *attempt) FailNow() {
	a.Fail()
	runtime.Goexit()
}

func (a *attempt) Error(args ...any) {
	a.TB.Helper()
	a.TB.Log(args...)
	a.Fail()
}

func (a *attempt) Errorf(format string, args ...any) {
	a.TB.Helper()
	a.TB.Logf(format, args...)
	a.Fail()
}

func (a *attempt) Fatal(args ...any) {
	a.TB.Helper()
	a.TB.Log(args...)
	a.FailNow()
}

func (a *attempt) Fatalf(format string, args ...any) {
	a.TB.Helper()
	a.TB.Logf(format, args...)
	a.FailNow()
}

func (a *attempt) SkipNow() {
	a.mu.Lock()
	a.skipped = true
	a.mu.Unlock()
	runtime.Goexit()
}

func (a *attempt) Skip(args ...any) {
	a.TB.Helper()
	a.TB.Log(args...)
	a.SkipNow()
}

func (a *attempt) Skipf(format string, args ...any) {
	a.TB.Helper()
	a.TB.Logf(format, args...)
	a.SkipNow()
}

func (a *attempt) Skipped() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.skipped
}

func (a *attempt) Cleanup(f func()) {
	a.mu.Lock()
	a.cleanups = append(a.cleanups, f)
	a.mu.Unlock()
}

// TestAttempt checks what pool.run relies on: an attempt's failures, fatal or not, are recorded
// and do not fail the test; its cleanups run, last first, when it ends; and a stall report is
// found in a console.
func TestAttempt(t *testing.T) {
	var order []string
	a := &attempt{TB: t}
	a.do(func() {
		a.Cleanup(func() { order = append(order, "first") })
		a.Cleanup(func() {
			order = append(order, "second")
			a.Fatalf("a cleanup's Fatal ends only the cleanup")
		})
		a.Errorf("an error is recorded")
		a.Fatal("Fatal ends the attempt")
		order = append(order, "after Fatal")
	})
	if !a.Failed() || a.Skipped() {
		t.Errorf("after Errorf and Fatal: Failed() = %v, Skipped() = %v; want true, false", a.Failed(), a.Skipped())
	}
	if got := fmt.Sprint(order); got != "[second first]" {
		t.Errorf("ran %s; want the cleanups last first, and nothing after Fatal", got)
	}
	s := &attempt{TB: t}
	s.do(func() { s.Skip("skipped") })
	if s.Failed() || !s.Skipped() {
		t.Errorf("after Skip: Failed() = %v, Skipped() = %v; want false, true", s.Failed(), s.Skipped())
	}

	console := "[   43.9] Memory offline\n[   44.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n[   44.1] rcu: \t2-...!: (0 ticks this GP)\n"
	if got, want := stallReport(console), "[   44.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"; got != want {
		t.Errorf("stallReport = %q; want %q", got, want)
	}
	for _, line := range []string{
		"[   65.2] rcu: rcu_preempt kthread timer wakeup didn't happen for 20999 jiffies! g12009 f0x2",
		"[   12.0] rcu: INFO: rcu_sched self-detected stall on CPU",
		"[  764.6] watchdog: BUG: soft lockup - CPU#0 stuck for 79s! [systemd:1]",
	} {
		if got := stallReport("boot\n" + line); got != line {
			t.Errorf("stallReport of %q = %q; want the line", line, got)
		}
	}
	if got := stallReport("[    0.24] rcu: Preemptible hierarchical RCU implementation.\n[    0.74] rcu: Hierarchical SRCU implementation.\n"); got != "" {
		t.Errorf("stallReport of a normal boot = %q; want none", got)
	}
}
