package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

// journal records the calls of several two-phase or target registrations in one sequence, as
// "owner phase link[ status]" lines.
type journal struct {
	mu    sync.Mutex
	lines []string
}

func (j *journal) add(line string) {
	j.mu.Lock()
	j.lines = append(j.lines, line)
	j.mu.Unlock()
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.lines...)
}

// change returns a ChangeCallback that records its calls under owner and answers AddStart with
// veto(n) (nil: consent).
func (j *journal) change(owner string, veto func(n ChangeNotification) error) ChangeCallback {
	return func(ctx context.Context, n ChangeNotification, _ any) error {
		line := fmt.Sprintf("%s %s %s %s", owner, n.State, n.SymbolicLinkName, n.Cause)
		if n.Status != nil {
			line += " [" + n.Status.Error() + "]"
		}
		j.add(line)
		if n.State == AddStart && veto != nil {
			return veto(n)
		}
		return nil
	}
}

// syncObs records a SyncObserver's calls.
type syncObs struct {
	mu    sync.Mutex
	calls []string
}

func (o *syncObs) SyncCallDone(owner, phase string, _ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, fmt.Sprintf("done %s %s err=%v", owner, phase, err != nil))
}

func (o *syncObs) Vetoed(owner, phase, class string, timedOut bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, fmt.Sprintf("veto %s %s %s timeout=%v", owner, phase, class, timedOut))
}

func (o *syncObs) TimedOut(owner, phase string, consent bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, fmt.Sprintf("timeout %s %s consent=%v", owner, phase, consent))
}

func (o *syncObs) QueueOverflow(owner string, dropped int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, fmt.Sprintf("overflow %s %d", owner, dropped))
}

func (o *syncObs) only(prefix string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, c := range o.calls {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func offlineCPU(n int) Interface {
	i := cpu(n)
	i.State = "offline"
	return i
}

func mustRegisterChange(t *testing.T, r *ChangeRegistry, class uuid.UUID, flags ChangeFlags, owner string, cb ChangeCallback) *ChangeEntry {
	t.Helper()
	e, err := r.Register(context.Background(), class, flags, owner, cb, nil)
	if err != nil {
		t.Fatalf("Register %s: %v", owner, err)
	}
	return e
}

func closeChanges(t *testing.T, r *ChangeRegistry) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestChangeConsent: AddStart to each processor registration in registration order, then
// AddComplete to each; a memory registration hears nothing of a CPU.
func TestChangeConsent(t *testing.T) {
	j := &journal{}
	obs := &syncObs{}
	r := NewChangeRegistry(ChangeOptions{Observer: obs})
	defer closeChanges(t, r)
	mustRegisterChange(t, r, GUIDDeviceProcessor, 0, "a", j.change("a", nil))
	mustRegisterChange(t, r, GUIDDeviceMemory, 0, "mem", j.change("mem", nil))
	mustRegisterChange(t, r, GUIDDeviceProcessor, 0, "b", j.change("b", nil))

	if i, ok := r.Adding(); ok {
		t.Errorf("Adding() = %s before any add", i.SymbolicLink)
	}
	add, err := r.Begin(context.Background(), offlineCPU(3), 41, testTime, CauseUevent)
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if add.Participants() != 2 {
		t.Errorf("Participants() = %d; want 2", add.Participants())
	}
	if i, ok := r.Adding(); !ok || i.SymbolicLink != "/sys/devices/system/cpu/cpu3" {
		t.Errorf("Adding() = %q, %v between Begin and Complete; want cpu3", i.SymbolicLink, ok)
	}
	add.Complete()
	add.Complete() // a second end does nothing
	if i, ok := r.Adding(); ok {
		t.Errorf("Adding() = %s after Complete", i.SymbolicLink)
	}
	want := []string{
		"a add_start /sys/devices/system/cpu/cpu3 uevent",
		"b add_start /sys/devices/system/cpu/cpu3 uevent",
		"a add_complete /sys/devices/system/cpu/cpu3 uevent",
		"b add_complete /sys/devices/system/cpu/cpu3 uevent",
	}
	// The AddComplete calls run on two goroutines: their relative order is not promised.
	got := j.list()
	if len(got) == 4 && got[2] > got[3] {
		got[2], got[3] = got[3], got[2]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if v := obs.only("veto"); len(v) != 0 {
		t.Errorf("vetoes reported for a consented add: %v", v)
	}
}

// TestChangeVeto: the second registration vetoes; the third is never asked; the first two get
// AddFailure with the veto as status; Begin's error names the vetoing owner and wraps its error.
func TestChangeVeto(t *testing.T) {
	j := &journal{}
	obs := &syncObs{}
	r := NewChangeRegistry(ChangeOptions{Observer: obs})
	defer closeChanges(t, r)
	errNoRoom := errors.New("no room for another worker pool")
	mustRegisterChange(t, r, GUIDDeviceMemory, 0, "a", j.change("a", nil))
	mustRegisterChange(t, r, GUIDDeviceMemory, 0, "b", j.change("b", func(ChangeNotification) error { return errNoRoom }))
	mustRegisterChange(t, r, GUIDDeviceMemory, 0, "c", j.change("c", nil))

	blk := mem(32)
	blk.State = "offline"
	add, err := r.Begin(context.Background(), blk, 7, testTime, CauseUevent)
	if add != nil || err == nil {
		t.Fatalf("Begin = %v, %v; want a veto", add, err)
	}
	var veto *VetoError
	if !errors.As(err, &veto) || veto.Owner != "b" || veto.Phase != "add_start" || !errors.Is(err, errNoRoom) {
		t.Errorf("Begin error %v; want a *VetoError by b at add_start wrapping %v", err, errNoRoom)
	}
	link := "/sys/devices/system/memory/memory32"
	status := " [vetoed by b at add_start: no room for another worker pool]"
	want := []string{
		"a add_start " + link + " uevent",
		"b add_start " + link + " uevent",
		"a add_failure " + link + " uevent" + status,
		"b add_failure " + link + " uevent" + status,
	}
	got := j.list()
	if len(got) == 4 && got[2] > got[3] {
		got[2], got[3] = got[3], got[2]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"veto b add_start memory timeout=false"}, obs.only("veto")); diff != "" {
		t.Errorf("vetoes observed (-want +got):\n%s", diff)
	}
	// The add is over: the next one begins at once.
	add, err = r.Begin(context.Background(), offlineCPU(1), 0, testTime, CauseRequest)
	if err != nil {
		t.Fatalf("Begin after a veto: %v", err)
	}
	add.Complete()
}

// TestChangeFail: the online write failed; AddFailure carries the kernel's error.
func TestChangeFail(t *testing.T) {
	j := &journal{}
	r := NewChangeRegistry(ChangeOptions{})
	defer closeChanges(t, r)
	mustRegisterChange(t, r, GUIDDeviceProcessor, 0, "a", j.change("a", nil))
	add, err := r.Begin(context.Background(), offlineCPU(2), 0, time.Time{}, CauseRequest)
	if err != nil {
		t.Fatal(err)
	}
	add.Fail(errors.New("write 1 to cpu2/online: input/output error"))
	want := []string{
		"a add_start /sys/devices/system/cpu/cpu2 request",
		"a add_failure /sys/devices/system/cpu/cpu2 request [write 1 to cpu2/online: input/output error]",
	}
	if diff := cmp.Diff(want, j.list()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

// TestChangePanicVetoes: a panicking AddStart is a veto, and the registration lives on.
func TestChangePanicVetoes(t *testing.T) {
	j := &journal{}
	r := NewChangeRegistry(ChangeOptions{})
	defer closeChanges(t, r)
	calls := 0
	mustRegisterChange(t, r, GUIDDeviceProcessor, 0, "p", func(ctx context.Context, n ChangeNotification, _ any) error {
		j.add("p " + n.State.String())
		if n.State == AddStart {
			calls++
			if calls == 1 {
				panic("boom")
			}
		}
		return nil
	})
	_, err := r.Begin(context.Background(), offlineCPU(1), 0, testTime, CauseUevent)
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "boom" {
		t.Fatalf("Begin error %v; want a veto wrapping the *PanicError", err)
	}
	add, err := r.Begin(context.Background(), offlineCPU(1), 0, testTime, CauseUevent)
	if err != nil {
		t.Fatalf("second Begin: %v", err)
	}
	add.Complete()
	if diff := cmp.Diff([]string{"p add_start", "p add_failure", "p add_start", "p add_complete"}, j.list()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

// TestChangeGoexit: a two-phase callback that calls runtime.Goexit in AddStart leaves its
// registration as Registry does one: gone (no say in the change, nothing more queued for it, not
// listed, Unregister says so), logged at once, and the change goes on without waiting out the
// timeout; the other registration gets the whole change.
func TestChangeGoexit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		j := &journal{}
		logs := newCapture()
		const timeout = 5 * time.Second
		r := NewChangeRegistry(ChangeOptions{Logger: slog.New(logs), Timeout: timeout})
		defer closeChanges(t, r)
		q := mustRegisterChange(t, r, GUIDDeviceProcessor, 0, "quitter", func(ctx context.Context, n ChangeNotification, _ any) error {
			j.add("quitter " + n.State.String())
			runtime.Goexit()
			return nil
		})
		mustRegisterChange(t, r, GUIDDeviceProcessor, 0, "p", func(ctx context.Context, n ChangeNotification, _ any) error {
			j.add("p " + n.State.String())
			return nil
		})
		start := time.Now() // the bubble's clock: it moves only when every goroutine waits
		add, err := r.Begin(context.Background(), offlineCPU(1), 0, testTime, CauseUevent)
		if err != nil {
			t.Fatalf("Begin: %v; want the change to go on without the registration that exited", err)
		}
		add.Complete()
		if d := time.Since(start); d >= timeout {
			t.Errorf("the change took %v of the bubble's clock: it waited out the %v timeout for a callback that exited", d, timeout)
		}
		synctest.Wait()
		if diff := cmp.Diff([]string{"quitter add_start", "p add_start", "p add_complete"}, j.list()); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		for _, e := range r.Entries() {
			if e.Owner == "quitter" {
				t.Errorf("Entries() lists quitter after its goroutine exited")
			}
		}
		if recs := logs.find("callback goroutine exited"); len(recs) != 1 || recs[0].Level != slog.LevelError || recs[0].Attrs["owner"] != "quitter" {
			t.Errorf("logs = %+v, want one ERROR for quitter", recs)
		}
		if err := r.Unregister(context.Background(), q); !errors.Is(err, ErrUnregistered) {
			t.Errorf("Unregister = %v, want ErrUnregistered", err)
		}
	})
}

// TestChangeTimeout: a callback that does not answer AddStart in time counts as a veto or as
// consent, by configuration, and still gets its AddFailure or AddComplete, after its AddStart.
func TestChangeTimeout(t *testing.T) {
	for _, consent := range []bool{false, true} {
		t.Run(fmt.Sprintf("consent=%v", consent), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				j := &journal{}
				obs := &syncObs{}
				r := NewChangeRegistry(ChangeOptions{Observer: obs, Timeout: 5 * time.Second, ConsentOnTimeout: consent})
				release := make(chan struct{})
				mustRegisterChange(t, r, GUIDDeviceProcessor, 0, "slow", func(ctx context.Context, n ChangeNotification, _ any) error {
					if n.State == AddStart {
						<-release // ignores its context: the registry must not wait for it
					}
					j.add("slow " + n.State.String())
					return nil
				})
				add, err := r.Begin(context.Background(), offlineCPU(1), 0, testTime, CauseUevent)
				var veto *VetoError
				if consent {
					if err != nil {
						t.Fatalf("Begin: %v; want consent on timeout", err)
					}
					add.Complete() // waits up to the deadline for AddComplete, then goes on
				} else if !errors.As(err, &veto) || veto.Owner != "slow" || veto.Err != nil || veto.Timeout != 5*time.Second {
					t.Fatalf("Begin error %v; want a timeout veto by slow", err)
				}
				close(release)
				synctest.Wait()
				last := "slow add_failure"
				if consent {
					last = "slow add_complete"
				}
				if diff := cmp.Diff([]string{"slow add_start", last}, j.list()); diff != "" {
					t.Errorf("calls (-want +got):\n%s", diff)
				}
				want := []string{fmt.Sprintf("timeout slow add_start consent=%v", consent)}
				if diff := cmp.Diff(want, obs.only("timeout slow add_start")); diff != "" {
					t.Errorf("timeouts observed (-want +got):\n%s", diff)
				}
				if got := obs.only("veto"); consent != (len(got) == 0) {
					t.Errorf("vetoes observed %v with consent=%v", got, consent)
				}
				closeChanges(t, r)
			})
		})
	}
}

// TestChangeAddExisting: the replay gives AddStart for each online CPU, then AddComplete for each.
func TestChangeAddExisting(t *testing.T) {
	j := &journal{}
	existing := []Interface{cpu(0), cpu(1), cpu(2)}
	r := NewChangeRegistry(ChangeOptions{Existing: func(class uuid.UUID) ([]Interface, error) {
		if class != GUIDDeviceProcessor {
			return nil, fmt.Errorf("asked for %s", ClassName(class))
		}
		return existing, nil
	}})
	defer closeChanges(t, r)
	mustRegisterChange(t, r, GUIDDeviceProcessor, FlagAddExisting, "a", j.change("a", nil))
	var want []string
	for _, s := range []string{"add_start", "add_complete"} {
		for n := range 3 {
			want = append(want, fmt.Sprintf("a %s /sys/devices/system/cpu/cpu%d existing", s, n))
		}
	}
	if diff := cmp.Diff(want, j.list()); diff != "" {
		t.Errorf("replay (-want +got):\n%s", diff)
	}
	if got := r.Entries(); len(got) != 1 || got[0].Owner != "a" || got[0].Flags != FlagAddExisting {
		t.Errorf("Entries() = %+v; want a with FlagAddExisting", got)
	}
}

// TestChangeAddExistingVeto: a veto stops the replay, the CPUs that got AddStart get AddFailure,
// and Register fails leaving nothing registered.
func TestChangeAddExistingVeto(t *testing.T) {
	j := &journal{}
	r := NewChangeRegistry(ChangeOptions{Existing: func(uuid.UUID) ([]Interface, error) {
		return []Interface{cpu(0), cpu(1), cpu(2)}, nil
	}})
	defer closeChanges(t, r)
	errNo := errors.New("cpu1 is reserved")
	e, err := r.Register(context.Background(), GUIDDeviceProcessor, FlagAddExisting, "a", j.change("a", func(n ChangeNotification) error {
		if n.Interface.Number == 1 {
			return errNo
		}
		return nil
	}), nil)
	if e != nil || !errors.Is(err, errNo) || !strings.Contains(err.Error(), "replay stopped at /sys/devices/system/cpu/cpu1") {
		t.Fatalf("Register = %v, %v; want an error for the veto at cpu1", e, err)
	}
	status := " [vetoed by a at add_start: cpu1 is reserved]"
	want := []string{
		"a add_start /sys/devices/system/cpu/cpu0 existing",
		"a add_start /sys/devices/system/cpu/cpu1 existing",
		"a add_failure /sys/devices/system/cpu/cpu0 existing" + status,
		"a add_failure /sys/devices/system/cpu/cpu1 existing" + status,
	}
	if diff := cmp.Diff(want, j.list()); diff != "" {
		t.Errorf("replay (-want +got):\n%s", diff)
	}
	if got := r.Entries(); len(got) != 0 {
		t.Errorf("Entries() = %+v after a failed registration", got)
	}
	add, err := r.Begin(context.Background(), offlineCPU(3), 0, testTime, CauseUevent)
	if err != nil {
		t.Fatal(err)
	}
	add.Complete()
	if got := len(j.list()); got != 4 {
		t.Errorf("the failed registration received calls after Register returned: %v", j.list())
	}
}

// TestChangeReplayWaitsForAdd: a registration with add-existing during an add waits for it to
// end and then replays the CPU that add brought online: no CPU missed, none seen twice.
func TestChangeReplayWaitsForAdd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		j := &journal{}
		var mu sync.Mutex
		online := []Interface{cpu(0)}
		r := NewChangeRegistry(ChangeOptions{Existing: func(uuid.UUID) ([]Interface, error) {
			mu.Lock()
			defer mu.Unlock()
			return append([]Interface(nil), online...), nil
		}})
		mustRegisterChange(t, r, GUIDDeviceProcessor, 0, "live", j.change("live", nil))
		add, err := r.Begin(context.Background(), offlineCPU(5), 0, testTime, CauseUevent)
		if err != nil {
			t.Fatal(err)
		}
		registered := make(chan error, 1)
		go func() {
			_, err := r.Register(context.Background(), GUIDDeviceProcessor, FlagAddExisting, "late", j.change("late", nil), nil)
			registered <- err
		}()
		synctest.Wait() // Register is blocked on the add in progress
		mu.Lock()
		online = append(online, cpu(5)) // the add onlined cpu5
		mu.Unlock()
		add.Complete()
		if err := <-registered; err != nil {
			t.Fatal(err)
		}
		want := []string{
			"live add_start /sys/devices/system/cpu/cpu5 uevent",
			"live add_complete /sys/devices/system/cpu/cpu5 uevent",
			"late add_start /sys/devices/system/cpu/cpu0 existing",
			"late add_start /sys/devices/system/cpu/cpu5 existing",
			"late add_complete /sys/devices/system/cpu/cpu0 existing",
			"late add_complete /sys/devices/system/cpu/cpu5 existing",
		}
		if diff := cmp.Diff(want, j.list()); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		closeChanges(t, r)
	})
}

// TestChangeUnregister: UnregisterEx semantics. After Unregister returns no callback of the
// entry runs; from inside its own callback it returns at once; an entry unregistered during an
// add gets nothing more of it; a second Unregister fails.
func TestChangeUnregister(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewChangeRegistry(ChangeOptions{Timeout: time.Minute})
		j := &journal{}
		var self *ChangeEntry
		var selfErr error
		self = mustRegisterChange(t, r, GUIDDeviceProcessor, 0, "self", func(ctx context.Context, n ChangeNotification, _ any) error {
			j.add("self " + n.State.String())
			selfErr = r.Unregister(context.Background(), self) // from its own callback: returns at once
			return nil
		})
		entered, finish := make(chan struct{}), make(chan struct{})
		var finished bool
		busy := mustRegisterChange(t, r, GUIDDeviceProcessor, 0, "busy", func(ctx context.Context, n ChangeNotification, _ any) error {
			j.add("busy " + n.State.String())
			if n.State == AddStart {
				close(entered)
				<-finish
				finished = true
			}
			return nil
		})
		began := make(chan *Add, 1)
		go func() {
			add, err := r.Begin(context.Background(), offlineCPU(1), 0, testTime, CauseUevent)
			if err != nil {
				t.Error(err)
			}
			began <- add
		}()
		<-entered
		unregistered := make(chan error, 1)
		go func() { unregistered <- r.Unregister(context.Background(), busy) }()
		synctest.Wait()
		select {
		case err := <-unregistered:
			t.Fatalf("Unregister returned (%v) while the callback runs", err)
		default:
		}
		close(finish)
		if err := <-unregistered; err != nil {
			t.Fatal(err)
		}
		if !finished {
			t.Error("Unregister returned before the callback finished")
		}
		add := <-began
		add.Complete()
		if selfErr != nil {
			t.Errorf("Unregister from its own callback: %v", selfErr)
		}
		// self unregistered itself during its AddStart, busy during its: neither gets AddComplete.
		if diff := cmp.Diff([]string{"self add_start", "busy add_start"}, j.list()); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		if err := r.Unregister(context.Background(), busy); !errors.Is(err, ErrUnregistered) {
			t.Errorf("second Unregister: %v; want ErrUnregistered", err)
		}
		if err := r.Unregister(context.Background(), nil); !errors.Is(err, ErrUnregistered) {
			t.Errorf("Unregister(nil): %v; want ErrUnregistered", err)
		}
		closeChanges(t, r)
	})
}

func TestChangeRegisterErrors(t *testing.T) {
	r := NewChangeRegistry(ChangeOptions{})
	defer closeChanges(t, r)
	noop := func(context.Context, ChangeNotification, any) error { return nil }
	for _, tt := range []struct {
		name  string
		class uuid.UUID
		flags ChangeFlags
		owner string
		cb    ChangeCallback
		want  string
	}{
		{"empty owner", GUIDDeviceProcessor, 0, " ", noop, "empty owner"},
		{"nil callback", GUIDDeviceProcessor, 0, "x", nil, "nil callback"},
		{"all classes", AllClasses, 0, "x", noop, "class all: want processor or memory"},
		{"other class", uuid.MustParse("4d36e967-e325-11ce-bfc1-08002be10318"), 0, "x", noop, "want processor or memory"},
		{"unknown flag", GUIDDeviceProcessor, 0x4, "x", noop, "unknown flags 0x4"},
		{"add-existing without a source", GUIDDeviceMemory, FlagAddExisting, "x", noop, "not supported"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, err := r.Register(context.Background(), tt.class, tt.flags, tt.owner, tt.cb, nil)
			if e != nil || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Register = %v, %v; want an error containing %q", e, err, tt.want)
			}
		})
	}
	if got := r.Entries(); len(got) != 0 {
		t.Errorf("Entries() = %v after failed registrations", got)
	}
}

func TestChangeStateNames(t *testing.T) {
	for s, want := range map[ChangeState]string{AddStart: "add_start", AddComplete: "add_complete", AddFailure: "add_failure", 9: "ChangeState(9)"} {
		if s.String() != want {
			t.Errorf("ChangeState(%d).String() = %q; want %q", int(s), s.String(), want)
		}
	}
	// The Windows values of KE_PROCESSOR_CHANGE_NOTIFY_STATE and KE_PROCESSOR_CHANGE_ADD_EXISTING.
	if AddStart != 0 || AddComplete != 1 || AddFailure != 2 || FlagAddExisting != 1 {
		t.Errorf("values differ from Windows: %d %d %d %d", AddStart, AddComplete, AddFailure, FlagAddExisting)
	}
}
