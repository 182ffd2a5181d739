package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

// testTime is the ReadAt of the notifications the tests publish.
var testTime = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func cpu(n int) Interface {
	return Interface{
		ClassGUID:    GUIDDeviceProcessor,
		SymbolicLink: fmt.Sprintf("/sys/devices/system/cpu/cpu%d", n),
		Number:       n,
		Node:         0,
		State:        "online",
	}
}

func mem(n int) Interface {
	return Interface{
		ClassGUID:    GUIDDeviceMemory,
		SymbolicLink: fmt.Sprintf("/sys/devices/system/memory/memory%d", n),
		Number:       n,
		Node:         0,
		PhysStart:    uint64(n) << 27,
		Size:         1 << 27,
		State:        "online",
		Zones:        "Normal",
	}
}

func arrival(i Interface, seq uint64) Notification {
	return NewNotification(GUIDDeviceInterfaceArrival, i, seq, testTime, CauseUevent)
}

func removal(i Interface, seq uint64) Notification {
	return NewNotification(GUIDDeviceInterfaceRemoval, i, seq, testTime, CauseUevent)
}

// recorder collects what a callback received.
type recorder struct {
	mu  sync.Mutex
	got []Notification
}

// add records n and returns how many notifications have been recorded.
func (rc *recorder) add(n Notification) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.got = append(rc.got, n)
	return len(rc.got)
}

// list returns what was received, without the IDs the registry numbered it with (TestIDs checks
// those), so that tests compare what they published with what arrived.
func (rc *recorder) list() []Notification {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := slices.Clone(rc.got)
	for i := range out {
		out[i].ID = 0
	}
	return out
}

// ids returns the IDs of what was received.
func (rc *recorder) ids() []uint64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []uint64
	for _, n := range rc.got {
		out = append(out, n.ID)
	}
	return out
}

// record is a Callback that only records.
func (rc *recorder) record(_ context.Context, n Notification, _ any) error {
	rc.add(n)
	return nil
}

// obsEvent is one Observer call, reduced to comparable facts.
type obsEvent struct {
	Kind    string // "started", "done", "overflow"
	Owner   string
	Seqnum  uint64
	Err     string
	Panic   bool
	Dropped int
}

type fakeObserver struct {
	mu     sync.Mutex
	events []obsEvent
	errs   []error
}

func (o *fakeObserver) CallbackStarted(owner string, n *Notification, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, obsEvent{Kind: "started", Owner: owner, Seqnum: n.Seqnum})
}

func (o *fakeObserver) CallbackDone(owner string, n *Notification, _ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ev := obsEvent{Kind: "done", Owner: owner, Seqnum: n.Seqnum}
	if err != nil {
		ev.Err = err.Error()
		var pe *PanicError
		ev.Panic = errors.As(err, &pe)
	}
	o.events = append(o.events, ev)
	o.errs = append(o.errs, err)
}

func (o *fakeObserver) QueueOverflow(owner string, dropped int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, obsEvent{Kind: "overflow", Owner: owner, Dropped: dropped})
}

func (o *fakeObserver) snapshot() ([]obsEvent, []error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.events), slices.Clone(o.errs)
}

// logRecord is one captured log record.
type logRecord struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

// captureHandler is a slog.Handler that keeps the records.
type captureHandler struct {
	mu   *sync.Mutex
	recs *[]logRecord
}

func newCapture() *captureHandler {
	return &captureHandler{mu: new(sync.Mutex), recs: new([]logRecord)}
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := make(map[string]string)
	r.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, logRecord{Level: r.Level, Msg: r.Message, Attrs: attrs})
	return nil
}

func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

// find returns the records with message msg.
func (h *captureHandler) find(msg string) []logRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logRecord
	for _, r := range *h.recs {
		if r.Msg == msg {
			out = append(out, r)
		}
	}
	return out
}

// closeRegistry closes r at the end of a test and fails the test if that fails.
func closeRegistry(t *testing.T, r *Registry) {
	t.Helper()
	if err := r.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// seqnums returns the Seqnum of every notification.
func seqnums(ns []Notification) []uint64 {
	out := make([]uint64, len(ns))
	for i, n := range ns {
		out[i] = n.Seqnum
	}
	return out
}

func TestGUIDs(t *testing.T) {
	// The texts are those of windows-pnp.md.
	tests := []struct {
		name string
		got  uuid.UUID
		want string
	}{
		{"GUID_DEVICE_INTERFACE_ARRIVAL", GUIDDeviceInterfaceArrival, "cb3a4004-46f0-11d0-b08f-00609713053f"},
		{"GUID_DEVICE_INTERFACE_REMOVAL", GUIDDeviceInterfaceRemoval, "cb3a4005-46f0-11d0-b08f-00609713053f"},
		{"GUID_DEVICE_PROCESSOR", GUIDDeviceProcessor, "97fadb10-4e33-40ae-359c-8bef029dbdd0"},
		{"GUID_DEVICE_MEMORY", GUIDDeviceMemory, "3fd0f03d-92e0-45fb-b75c-5ed8ffb01021"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.got.String(); got != tt.want {
				t.Errorf("%s = %s, want %s", tt.name, got, tt.want)
			}
		})
	}
}

func TestParseClass(t *testing.T) {
	other := uuid.MustParse("4d36e97d-e325-11ce-bfc1-08002be10318")
	tests := []struct {
		in      string
		want    uuid.UUID
		wantErr bool
	}{
		{in: "processor", want: GUIDDeviceProcessor},
		{in: "CPU", want: GUIDDeviceProcessor},
		{in: " GUID_DEVICE_PROCESSOR ", want: GUIDDeviceProcessor},
		{in: "memory", want: GUIDDeviceMemory},
		{in: "GUID_DEVICE_MEMORY", want: GUIDDeviceMemory},
		{in: "97fadb10-4e33-40ae-359c-8bef029dbdd0", want: GUIDDeviceProcessor}, // non-RFC variant 359c
		{in: "{97FADB10-4E33-40AE-359C-8BEF029DBDD0}", want: GUIDDeviceProcessor},
		{in: "{3fd0f03d-92e0-45fb-b75c-5ed8ffb01021}", want: GUIDDeviceMemory},
		{in: "4d36e97d-e325-11ce-bfc1-08002be10318", want: other},
		{in: "", wantErr: true},
		{in: "disk", wantErr: true},
		{in: "97fadb10-4e33-40ae-359c-8bef029dbdd", wantErr: true},
		{in: "97fadb10-4e33-40ae-359c-8bef029dbdzz", wantErr: true},
		{in: "urn:uuid:97fadb10-4e33-40ae-359c-8bef029dbdd0", wantErr: true},
		{in: "97fadb104e3340ae359c8bef029dbdd0", wantErr: true},
		{in: "{97fadb10-4e33-40ae-359c-8bef029dbdd0", want: GUIDDeviceProcessor},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseClass(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseClass(%q) error = %v, want error %t", tt.in, err, tt.wantErr)
			}
			if err != nil {
				if got != uuid.Nil {
					t.Errorf("ParseClass(%q) = %s with an error, want the nil GUID", tt.in, got)
				}
				return
			}
			if got != tt.want {
				t.Errorf("ParseClass(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"ClassName(processor)", ClassName(GUIDDeviceProcessor), "processor"},
		{"ClassName(memory)", ClassName(GUIDDeviceMemory), "memory"},
		{"ClassName(all)", ClassName(AllClasses), "all"},
		{"ClassName(other)", ClassName(GUIDDeviceInterfaceArrival), "cb3a4004-46f0-11d0-b08f-00609713053f"},
		{"EventName(arrival)", EventName(GUIDDeviceInterfaceArrival), "arrival"},
		{"EventName(removal)", EventName(GUIDDeviceInterfaceRemoval), "removal"},
		{"category 1", EventCategoryHardwareProfileChange.String(), "HardwareProfileChange"},
		{"category 2", EventCategoryDeviceInterfaceChange.String(), "DeviceInterfaceChange"},
		{"category 3", EventCategoryTargetDeviceChange.String(), "TargetDeviceChange"},
		{"category 9", EventCategory(9).String(), "EventCategory(9)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestRegisterErrors(t *testing.T) {
	noop := func(context.Context, Notification, any) error { return nil }
	tests := []struct {
		name     string
		category EventCategory
		flags    Flags
		owner    string
		cb       Callback
		wantIs   error
		wantText []string
	}{
		{"hardware profile", EventCategoryHardwareProfileChange, 0, "drv", noop, ErrNotSupported,
			[]string{"HardwareProfileChange", "not supported yet"}},
		{"target device", EventCategoryTargetDeviceChange, 0, "drv", noop, ErrNotSupported,
			[]string{"TargetDeviceChange", "not supported yet"}},
		{"category zero", 0, 0, "drv", noop, nil, []string{"unknown event category 0"}},
		{"category seven", 7, 0, "drv", noop, nil, []string{"unknown event category 7"}},
		{"nil callback", EventCategoryDeviceInterfaceChange, 0, "drv", nil, nil, []string{"drv", "nil callback"}},
		{"empty owner", EventCategoryDeviceInterfaceChange, 0, "", noop, nil, []string{"empty owner"}},
		{"blank owner", EventCategoryDeviceInterfaceChange, 0, "  ", noop, nil, []string{"empty owner"}},
		{"unknown flag", EventCategoryDeviceInterfaceChange, 0x2, "drv", noop, nil, []string{"unknown flags 0x2"}},
		{"known and unknown flags", EventCategoryDeviceInterfaceChange, 0x80000001, "drv", noop, nil,
			[]string{"unknown flags 0x80000000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRegistry(Options{})
			defer closeRegistry(t, r)
			e, err := r.Register(tt.category, tt.flags, GUIDDeviceProcessor, tt.owner, tt.cb, nil)
			if err == nil {
				t.Fatalf("Register succeeded, want an error")
			}
			if e != nil {
				t.Errorf("Register returned entry %v with error %v", e, err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q does not wrap %q", err, tt.wantIs)
			}
			if tt.wantIs == nil && errors.Is(err, ErrNotSupported) {
				t.Errorf("error %q wraps ErrNotSupported", err)
			}
			for _, s := range tt.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if got := r.Entries(); len(got) != 0 {
				t.Errorf("Entries() = %v after a failed Register, want none", got)
			}
		})
	}
}

func TestRegisterIncludeExisting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		defer closeRegistry(t, r)
		r.Seed([]Interface{cpu(2), mem(0), cpu(0), cpu(1)})
		now := time.Now() // the bubble's clock stands still: this is the registration time
		existing := func(i Interface) Notification {
			return NewNotification(GUIDDeviceInterfaceArrival, i, 0, now, CauseExisting)
		}
		live := []Notification{arrival(cpu(3), 10), removal(cpu(0), 11), arrival(mem(1), 12)}

		tests := []struct {
			name  string
			class uuid.UUID
			flags Flags
			want  []Notification
		}{
			{"processor with existing", GUIDDeviceProcessor, FlagIncludeExistingInterfaces,
				[]Notification{existing(cpu(0)), existing(cpu(1)), existing(cpu(2)), live[0], live[1]}},
			{"processor without existing", GUIDDeviceProcessor, 0, []Notification{live[0], live[1]}},
			{"memory with existing", GUIDDeviceMemory, FlagIncludeExistingInterfaces,
				[]Notification{existing(mem(0)), live[2]}},
			{"all with existing", AllClasses, FlagIncludeExistingInterfaces,
				[]Notification{existing(cpu(0)), existing(cpu(1)), existing(cpu(2)), existing(mem(0)), live[0], live[1], live[2]}},
		}
		recs := make([]*recorder, len(tests))
		for i, tt := range tests {
			recs[i] = new(recorder)
			if _, err := r.Register(EventCategoryDeviceInterfaceChange, tt.flags, tt.class, tt.name, recs[i].record, nil); err != nil {
				t.Fatalf("Register(%s): %v", tt.name, err)
			}
		}
		for _, n := range live {
			if !r.Publish(n) {
				t.Fatalf("Publish(%s %s) refused", EventName(n.Event), n.SymbolicLinkName)
			}
		}
		synctest.Wait()
		for i, tt := range tests { // t.Run is not allowed inside the bubble
			if diff := cmp.Diff(tt.want, recs[i].list()); diff != "" {
				t.Errorf("%s: received (-want +got):\n%s", tt.name, diff)
			}
		}
	})
}

// toggler produces a deterministic sequence of alternating changes over a set of interfaces.
type toggler struct {
	ifaces []Interface
	active map[string]bool
	rng    *rand.Rand
	seq    uint64
}

func newToggler(ifaces []Interface, active []Interface, seed uint64) *toggler {
	tg := &toggler{ifaces: ifaces, active: make(map[string]bool), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	for _, i := range active {
		tg.active[i.SymbolicLink] = true
	}
	return tg
}

// next returns the next change: a removal of a random interface if it is active, else its arrival.
func (tg *toggler) next() Notification {
	i := tg.ifaces[tg.rng.IntN(len(tg.ifaces))]
	tg.seq++
	if tg.active[i.SymbolicLink] {
		delete(tg.active, i.SymbolicLink)
		return removal(i, tg.seq)
	}
	tg.active[i.SymbolicLink] = true
	return arrival(i, tg.seq)
}

// replay applies ns to view (a set of symbolic links), reporting every notification that does
// not alternate: an arrival of an interface in the view or a removal of one not in it.
func replay(t *testing.T, who string, view map[string]bool, ns []Notification) {
	t.Helper()
	for k, n := range ns {
		switch {
		case n.IsArrival() && view[n.SymbolicLinkName]:
			t.Errorf("%s: notification %d (seqnum %d, %s): second arrival of %s without a removal", who, k, n.Seqnum, n.Cause, n.SymbolicLinkName)
		case !n.IsArrival() && !view[n.SymbolicLinkName]:
			t.Errorf("%s: notification %d (seqnum %d, %s): removal of %s, which is not active", who, k, n.Seqnum, n.Cause, n.SymbolicLinkName)
		}
		if n.IsArrival() {
			view[n.SymbolicLinkName] = true
		} else {
			delete(view, n.SymbolicLinkName)
		}
	}
}

// setLinks returns the sorted symbolic links of a set.
func setLinks(view map[string]bool) []string {
	out := make([]string, 0, len(view))
	for l := range view {
		out = append(out, l)
	}
	slices.Sort(out)
	return out
}

// activeLinks returns the sorted symbolic links of the interfaces of class in ifaces.
func activeLinks(ifaces []Interface, class uuid.UUID) []string {
	var out []string
	for _, i := range ifaces {
		if matches(class, i.ClassGUID) {
			out = append(out, i.SymbolicLink)
		}
	}
	slices.Sort(out)
	return out
}

// TestRegisterIncludeExistingRace registers entries at random moments of a long publication and
// checks that each one sees exactly the state at its registration and then every later change.
func TestRegisterIncludeExistingRace(t *testing.T) {
	const steps = 4000
	var ifaces []Interface
	for n := range 12 {
		ifaces = append(ifaces, cpu(n))
	}
	for n := range 8 {
		ifaces = append(ifaces, mem(n))
	}
	seed := []Interface{cpu(0), cpu(1), cpu(2), mem(0)}
	tg := newToggler(ifaces, seed, 1)
	global := make([]Notification, steps)
	for k := range global {
		global[k] = tg.next()
	}
	sentinels := []Notification{arrival(cpu(999), steps+1), arrival(mem(999), steps+2)}
	global = append(global, sentinels...)

	// state returns the active links of class after the first k notifications of global.
	state := func(k int, class uuid.UUID) map[string]bool {
		view := make(map[string]bool)
		for _, i := range seed {
			if matches(class, i.ClassGUID) {
				view[i.SymbolicLink] = true
			}
		}
		for _, n := range global[:k] {
			if !matches(class, n.InterfaceClassGUID) {
				continue
			}
			if n.IsArrival() {
				view[n.SymbolicLinkName] = true
			} else {
				delete(view, n.SymbolicLinkName)
			}
		}
		return view
	}

	type registrant struct {
		name  string
		class uuid.UUID
		flags Flags
		at    int // the step before which it registers
		rec   recorder
		done  chan struct{}
	}
	classes := []uuid.UUID{GUIDDeviceProcessor, GUIDDeviceMemory, AllClasses}
	rng := rand.New(rand.NewPCG(7, 8))
	var regs []*registrant
	for k := range 16 {
		flags := FlagIncludeExistingInterfaces
		if k%4 == 3 {
			flags = 0
		}
		at := rng.IntN(steps)
		if k == 0 {
			at = 0
		}
		regs = append(regs, &registrant{
			name:  fmt.Sprintf("reg%02d-%s-%d", k, ClassName(classes[k%3]), flags),
			class: classes[k%3],
			flags: flags,
			at:    at,
			done:  make(chan struct{}),
		})
	}

	r := NewRegistry(Options{QueueLimit: 1 << 20}) // no overflow: every change must arrive
	defer closeRegistry(t, r)
	r.Seed(seed)

	gates := make(map[int]chan struct{})
	for _, g := range regs {
		if gates[g.at] == nil {
			gates[g.at] = make(chan struct{})
		}
	}
	var registered sync.WaitGroup
	for _, g := range regs {
		// The last sentinel of the registrant's class(es) ends its sequence.
		last := sentinels[1].SymbolicLinkName
		if g.class == GUIDDeviceProcessor {
			last = sentinels[0].SymbolicLinkName
		}
		cb := func(_ context.Context, n Notification, _ any) error {
			g.rec.add(n)
			if n.SymbolicLinkName == last {
				close(g.done)
			}
			return nil
		}
		registered.Go(func() {
			<-gates[g.at]
			if _, err := r.Register(EventCategoryDeviceInterfaceChange, g.flags, g.class, g.name, cb, nil); err != nil {
				t.Errorf("Register(%s): %v", g.name, err)
			}
		})
	}
	for k, n := range global[:steps] {
		if gate := gates[k]; gate != nil {
			close(gate) // the registrants race with the Publish calls that follow
		}
		if !r.Publish(n) {
			t.Fatalf("Publish(seqnum %d) refused", n.Seqnum)
		}
	}
	registered.Wait()
	for _, n := range sentinels {
		if !r.Publish(n) {
			t.Fatalf("Publish(sentinel %s) refused", n.SymbolicLinkName)
		}
	}
	for _, g := range regs {
		<-g.done
	}

	active := r.Active()
	for _, g := range regs {
		t.Run(g.name, func(t *testing.T) {
			got := g.rec.list()
			var existing, live []Notification
			for k, n := range got {
				if n.Cause != CauseExisting {
					live = got[k:]
					break
				}
				existing = append(existing, n)
			}
			for _, n := range live {
				if n.Cause == CauseExisting {
					t.Fatalf("existing arrival of %s after a live notification", n.SymbolicLinkName)
				}
			}
			if len(live) == 0 {
				t.Fatalf("no live notification received; the sentinel at least was expected")
			}
			// The registration took effect just before the first live notification of its
			// class; from there on it must have received every change of its class, in order.
			k := int(live[0].Seqnum) - 1
			var wantLive []uint64
			for _, n := range global[k:] {
				if matches(g.class, n.InterfaceClassGUID) {
					wantLive = append(wantLive, n.Seqnum)
				}
			}
			if diff := cmp.Diff(wantLive, seqnums(live)); diff != "" {
				t.Errorf("live seqnums (-want +got):\n%s", diff)
			}
			start := state(k, g.class)
			if g.flags&FlagIncludeExistingInterfaces != 0 {
				var want []Interface
				for _, i := range ifaces {
					if start[i.SymbolicLink] {
						want = append(want, i)
					}
				}
				slices.SortFunc(want, compareInterfaces)
				var gotIfaces []Interface
				for _, n := range existing {
					if !n.IsArrival() || n.Seqnum != 0 {
						t.Errorf("existing notification %s seqnum %d, want an arrival with seqnum 0", EventName(n.Event), n.Seqnum)
					}
					gotIfaces = append(gotIfaces, n.Interface)
				}
				if diff := cmp.Diff(want, gotIfaces); diff != "" {
					t.Errorf("existing arrivals, against the state at registration (-want +got):\n%s", diff)
				}
				start = make(map[string]bool) // the view of an IncludeExisting entry starts empty
			} else if len(existing) != 0 {
				t.Errorf("got %d existing arrivals without FlagIncludeExistingInterfaces", len(existing))
			}
			view := start
			replay(t, g.name, view, got)
			if diff := cmp.Diff(activeLinks(active, g.class), setLinks(view)); diff != "" {
				t.Errorf("final view against Active() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOrderingPerRegistration(t *testing.T) {
	const steps = 500
	var ifaces []Interface
	for n := range 6 {
		ifaces = append(ifaces, cpu(n), mem(n))
	}
	tg := newToggler(ifaces, nil, 3)
	published := make([]Notification, steps)
	for k := range published {
		published[k] = tg.next()
	}

	tests := []struct {
		name  string
		class uuid.UUID
	}{
		{"processor", GUIDDeviceProcessor},
		{"memory", GUIDDeviceMemory},
		{"all", AllClasses},
		{"other class", uuid.MustParse("4d36e97d-e325-11ce-bfc1-08002be10318")},
	}
	r := NewRegistry(Options{})
	defer closeRegistry(t, r)
	recs := make([]*recorder, len(tests))
	wants := make([][]Notification, len(tests))
	dones := make([]chan struct{}, len(tests))
	for i, tt := range tests {
		for _, n := range published {
			if matches(tt.class, n.InterfaceClassGUID) {
				wants[i] = append(wants[i], n)
			}
		}
		recs[i], dones[i] = new(recorder), make(chan struct{})
		want, rec, done := len(wants[i]), recs[i], dones[i]
		if want == 0 {
			close(done)
		}
		cb := func(_ context.Context, n Notification, _ any) error {
			if rec.add(n) == want {
				close(done)
			}
			return nil
		}
		if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, tt.class, tt.name, cb, nil); err != nil {
			t.Fatalf("Register: %v", err)
		}
	}
	for _, n := range published {
		if !r.Publish(n) {
			t.Fatalf("Publish(seqnum %d) refused", n.Seqnum)
		}
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			<-dones[i]
			if diff := cmp.Diff(wants[i], recs[i].list()); diff != "" {
				t.Errorf("received (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBlockedCallbackDoesNotDelayOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		defer closeRegistry(t, r)
		release := make(chan struct{})
		var blocked, free recorder
		blockedCb := func(_ context.Context, n Notification, _ any) error {
			if blocked.add(n) == 1 {
				<-release
			}
			return nil
		}
		for _, reg := range []struct {
			owner string
			cb    Callback
		}{{"blocked", blockedCb}, {"free", free.record}} {
			if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, reg.owner, reg.cb, nil); err != nil {
				t.Fatalf("Register(%s): %v", reg.owner, err)
			}
		}
		var published []Notification
		for k := range 50 {
			n := arrival(cpu(k), uint64(k+1))
			published = append(published, n)
			r.Publish(n)
		}
		synctest.Wait()
		if diff := cmp.Diff(published, free.list()); diff != "" {
			t.Errorf("free registration while the other is blocked (-want +got):\n%s", diff)
		}
		if got := len(blocked.list()); got != 1 {
			t.Errorf("blocked registration received %d notifications while blocked in its first, want 1", got)
		}
		close(release)
		synctest.Wait()
		if diff := cmp.Diff(published, blocked.list()); diff != "" {
			t.Errorf("blocked registration once released (-want +got):\n%s", diff)
		}
	})
}

func TestCallbackPanicAndError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := new(fakeObserver)
		logs := newCapture()
		r := NewRegistry(Options{Logger: slog.New(logs), Observer: obs})
		defer closeRegistry(t, r)
		var rec recorder
		cb := func(_ context.Context, n Notification, _ any) error {
			rec.add(n)
			switch n.Seqnum {
			case 1:
				panic("boom")
			case 2:
				return errors.New("exporter down")
			case 4:
				panic(io.ErrUnexpectedEOF)
			}
			return nil
		}
		if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "fragile", cb, nil); err != nil {
			t.Fatalf("Register: %v", err)
		}
		published := []Notification{arrival(cpu(1), 1), removal(cpu(1), 2), arrival(cpu(1), 3), removal(cpu(1), 4), arrival(cpu(1), 5)}
		for _, n := range published {
			r.Publish(n)
		}
		synctest.Wait()

		if diff := cmp.Diff(published, rec.list()); diff != "" {
			t.Errorf("received (-want +got):\n%s", diff)
		}
		events, errs := obs.snapshot()
		want := []obsEvent{
			{Kind: "started", Owner: "fragile", Seqnum: 1},
			{Kind: "done", Owner: "fragile", Seqnum: 1, Err: "callback panicked: boom", Panic: true},
			{Kind: "started", Owner: "fragile", Seqnum: 2},
			{Kind: "done", Owner: "fragile", Seqnum: 2, Err: "exporter down"},
			{Kind: "started", Owner: "fragile", Seqnum: 3},
			{Kind: "done", Owner: "fragile", Seqnum: 3},
			{Kind: "started", Owner: "fragile", Seqnum: 4},
			{Kind: "done", Owner: "fragile", Seqnum: 4, Err: "callback panicked: unexpected EOF", Panic: true},
			{Kind: "started", Owner: "fragile", Seqnum: 5},
			{Kind: "done", Owner: "fragile", Seqnum: 5},
		}
		if diff := cmp.Diff(want, events); diff != "" {
			t.Errorf("observer events (-want +got):\n%s", diff)
		}
		if len(errs) == 5 {
			var pe *PanicError
			if !errors.As(errs[0], &pe) || pe.Value != "boom" || !strings.Contains(string(pe.Stack), "registry_test.go") {
				t.Errorf("first error = %#v, want a *PanicError with value boom and the callback's stack", errs[0])
			}
			if !errors.Is(errs[3], io.ErrUnexpectedEOF) {
				t.Errorf("fourth error %v does not unwrap to the panic value io.ErrUnexpectedEOF", errs[3])
			}
		}
		panics := logs.find("callback panicked")
		if len(panics) != 2 {
			t.Fatalf("got %d %q log records, want 2", len(panics), "callback panicked")
		}
		if p := panics[0]; p.Level != slog.LevelError || p.Attrs["owner"] != "fragile" || !strings.Contains(p.Attrs["stack"], "registry_test.go") {
			t.Errorf("panic log = %+v, want level ERROR, owner fragile and the stack", p)
		}
		failed := logs.find("callback failed")
		if len(failed) != 1 || failed[0].Level != slog.LevelWarn || failed[0].Attrs["err"] != "exporter down" || failed[0].Attrs["owner"] != "fragile" {
			t.Errorf("error logs = %+v, want one WARN with owner fragile and err exporter down", failed)
		}
		if infos := r.Entries(); len(infos) != 1 || infos[0].Delivered != 5 {
			t.Errorf("Entries() = %+v, want one entry with 5 delivered", infos)
		}
	})
}

func TestUnregister(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		defer closeRegistry(t, r)
		release := make(chan struct{})
		var rec recorder
		var inFlightErr error
		finished := false
		cb := func(ctx context.Context, n Notification, _ any) error {
			if rec.add(n) == 1 {
				<-release
				inFlightErr = ctx.Err()
				finished = true
			}
			return nil
		}
		e, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "leaver", cb, nil)
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		r.Publish(arrival(cpu(1), 1))
		synctest.Wait() // the first callback is in flight and blocked
		r.Publish(removal(cpu(1), 2))
		r.Publish(arrival(cpu(1), 3))
		if err := r.Unregister(e); err != nil { // must return while the callback is blocked
			t.Fatalf("Unregister: %v", err)
		}
		if got := r.Entries(); len(got) != 0 {
			t.Errorf("Entries() = %+v after Unregister, want none", got)
		}
		r.Publish(removal(cpu(1), 4))
		close(release)
		synctest.Wait() // the dispatch goroutine has gone as far as it ever will
		if diff := cmp.Diff([]uint64{1}, seqnums(rec.list())); diff != "" {
			t.Errorf("callbacks run (-want +got):\n%s", diff)
		}
		if !finished || !errors.Is(inFlightErr, context.Canceled) {
			t.Errorf("in-flight callback finished = %t with ctx error %v, want it finished with context.Canceled", finished, inFlightErr)
		}
		if got := r.Active(); len(got) != 0 {
			t.Errorf("Active() = %+v after the unregistered entry's notifications, want none", got)
		}
	})
}

func TestUnregisterExWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		defer closeRegistry(t, r)
		release := make(chan struct{})
		var rec recorder
		cb := func(_ context.Context, n Notification, _ any) error {
			if rec.add(n) == 1 {
				<-release
			}
			return nil
		}
		e, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "waiter", cb, nil)
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		r.Publish(arrival(cpu(1), 1))
		r.Publish(removal(cpu(1), 2))
		synctest.Wait()
		returned := make(chan error, 1)
		go func() { returned <- r.UnregisterEx(context.Background(), e) }()
		synctest.Wait() // everything that can run has run
		select {
		case err := <-returned:
			close(release)
			t.Fatalf("UnregisterEx returned (%v) while the callback was still running", err)
		default:
		}
		close(release)
		if err := <-returned; err != nil {
			t.Errorf("UnregisterEx: %v", err)
		}
		synctest.Wait()
		if diff := cmp.Diff([]uint64{1}, seqnums(rec.list())); diff != "" {
			t.Errorf("callbacks run (-want +got):\n%s", diff)
		}
	})
}

// TestRetireLetsCallbackFinish: Retire drops what is queued at once, but the callback in flight
// keeps its context until ctx ends; then the context is cancelled and Retire says whose callback
// still runs. A callback that returns in time ends Retire with nil, and nothing runs after it.
func TestRetireLetsCallbackFinish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		defer closeRegistry(t, r)
		release := make(chan struct{})
		var cancelled atomic.Int32 // callbacks that saw their context end while they waited
		var rec recorder
		cb := func(ctx context.Context, n Notification, _ any) error {
			if rec.add(n) == 1 {
				select {
				case <-release:
				case <-ctx.Done():
					cancelled.Add(1)
				}
			}
			return nil
		}
		register := func(owner string) *Entry {
			e, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, owner, cb, nil)
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			return e
		}

		// In time: the callback is not told to stop and finishes; the queued one never runs.
		e := register("finishes")
		r.Publish(arrival(cpu(1), 1))
		r.Publish(removal(cpu(1), 2))
		synctest.Wait()
		returned := make(chan error, 1)
		go func() { returned <- r.Retire(context.Background(), e) }()
		synctest.Wait()
		select {
		case err := <-returned:
			t.Fatalf("Retire returned (%v) while the callback was still running", err)
		default:
		}
		if n := cancelled.Load(); n != 0 {
			t.Fatalf("the callback's context ended while Retire waited")
		}
		close(release)
		if err := <-returned; err != nil {
			t.Errorf("Retire: %v", err)
		}
		synctest.Wait()
		if diff := cmp.Diff([]uint64{1}, seqnums(rec.list())); diff != "" {
			t.Errorf("callbacks run (-want +got):\n%s", diff)
		}
		if err := r.Unregister(e); !errors.Is(err, ErrUnregistered) {
			t.Errorf("Unregister after Retire = %v, want ErrUnregistered", err)
		}

		// Past ctx: the context is cancelled, and the error names the owner.
		rec = recorder{}
		release = make(chan struct{})
		e = register("stuck")
		r.Publish(arrival(cpu(1), 3))
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := r.Retire(ctx, e)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "stuck") {
			t.Errorf("Retire past its deadline = %v; want DeadlineExceeded naming stuck", err)
		}
		synctest.Wait()
		if n := cancelled.Load(); n != 1 {
			t.Errorf("%d callbacks saw their context end; want the stuck one, once Retire gave up", n)
		}
	})
}

func TestUnregisterExFromOwnCallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		defer closeRegistry(t, r)
		entry := make(chan *Entry, 1)
		gate := make(chan struct{})
		var rec recorder
		var innerErr error
		returnedInside := false
		cb := func(_ context.Context, n Notification, _ any) error {
			if rec.add(n) == 1 {
				<-gate
				innerErr = r.UnregisterEx(context.Background(), <-entry)
				returnedInside = true
			}
			return nil
		}
		e, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "self", cb, nil)
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		entry <- e
		for _, n := range []Notification{arrival(cpu(1), 1), removal(cpu(1), 2), arrival(cpu(1), 3)} {
			r.Publish(n)
		}
		synctest.Wait()
		close(gate)
		synctest.Wait()
		if !returnedInside || innerErr != nil {
			t.Fatalf("UnregisterEx from the callback returned = %t, err = %v; want it returned with nil", returnedInside, innerErr)
		}
		r.Publish(removal(cpu(1), 4))
		synctest.Wait()
		if diff := cmp.Diff([]uint64{1}, seqnums(rec.list())); diff != "" {
			t.Errorf("callbacks run (-want +got):\n%s", diff)
		}
		if err := r.Unregister(e); !errors.Is(err, ErrUnregistered) {
			t.Errorf("Unregister after UnregisterEx = %v, want ErrUnregistered", err)
		}
	})
}

func TestUnregisterExDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		defer closeRegistry(t, r)
		release := make(chan struct{})
		defer close(release)
		cb := func(context.Context, Notification, any) error {
			<-release // ignores its context
			return nil
		}
		e, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "stuck-driver", cb, nil)
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		r.Publish(arrival(cpu(1), 1))
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = r.UnregisterEx(ctx, e)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("UnregisterEx = %v, want an error wrapping context.DeadlineExceeded", err)
		}
		if err == nil || !strings.Contains(err.Error(), "callback of stuck-driver is still running") {
			t.Errorf("UnregisterEx error %v does not say that the callback of stuck-driver is still running", err)
		}
		if got := r.Entries(); len(got) != 0 {
			t.Errorf("Entries() = %+v after a timed-out UnregisterEx, want none", got)
		}
		for _, name := range []string{"Unregister", "UnregisterEx"} {
			var err error
			if name == "Unregister" {
				err = r.Unregister(e)
			} else {
				err = r.UnregisterEx(context.Background(), e)
			}
			if !errors.Is(err, ErrUnregistered) {
				t.Errorf("second %s = %v, want ErrUnregistered", name, err)
			}
		}
	})
}

func TestUnregisterErrors(t *testing.T) {
	noop := func(context.Context, Notification, any) error { return nil }
	r := NewRegistry(Options{})
	defer closeRegistry(t, r)
	other := NewRegistry(Options{})
	defer closeRegistry(t, other)
	foreign, err := other.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "foreign", noop, nil)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	gone, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "gone", noop, nil)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if err := r.Unregister(gone); err != nil {
		t.Fatalf("first Unregister: %v", err)
	}
	tests := []struct {
		name  string
		entry *Entry
	}{
		{"nil", nil},
		{"another registry's", foreign},
		{"already removed", gone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := r.Unregister(tt.entry); !errors.Is(err, ErrUnregistered) {
				t.Errorf("Unregister = %v, want ErrUnregistered", err)
			}
			if err := r.UnregisterEx(context.Background(), tt.entry); !errors.Is(err, ErrUnregistered) {
				t.Errorf("UnregisterEx = %v, want ErrUnregistered", err)
			}
		})
	}
	if got := other.Entries(); len(got) != 1 {
		t.Errorf("the other registry has %d entries after a refused Unregister, want 1", len(got))
	}
}

func TestPublishRefuses(t *testing.T) {
	otherClass := cpu(0)
	otherClass.ClassGUID = GUIDDeviceMemory
	linkMismatch := arrival(cpu(5), 1)
	linkMismatch.SymbolicLinkName = "/sys/devices/system/cpu/cpu6"
	classMismatch := arrival(cpu(5), 1)
	classMismatch.InterfaceClassGUID = GUIDDeviceMemory
	noLink := cpu(5)
	noLink.SymbolicLink = ""
	noClass := cpu(5)
	noClass.ClassGUID = uuid.Nil
	unknownEvent := arrival(cpu(5), 1)
	unknownEvent.Event = GUIDDeviceProcessor

	tests := []struct {
		name   string
		n      Notification
		reason string
	}{
		{"double arrival", arrival(cpu(0), 1), "arrival of an active interface"},
		{"removal of unknown", removal(cpu(5), 1), "removal of an interface that is not active"},
		{"removal with another class", removal(otherClass, 1), "removal with another class than the active interface"},
		{"unknown event", unknownEvent, "unknown event"},
		{"no symbolic link", arrival(noLink, 1), "no symbolic link"},
		{"no class", arrival(noClass, 1), "no interface class"},
		{"symbolic links disagree", linkMismatch, "symbolic link differs from the interface's"},
		{"classes disagree", classMismatch, "interface class differs from the interface's"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				logs := newCapture()
				r := NewRegistry(Options{Logger: slog.New(logs)})
				defer closeRegistry(t, r)
				r.Seed([]Interface{cpu(0)})
				var rec recorder
				if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, AllClasses, "all", rec.record, nil); err != nil {
					t.Fatalf("Register: %v", err)
				}
				if r.Publish(tt.n) {
					t.Errorf("Publish accepted it, want it refused")
				}
				marker := arrival(cpu(9), 2)
				if !r.Publish(marker) {
					t.Fatalf("Publish(marker) refused")
				}
				synctest.Wait()
				if diff := cmp.Diff([]Notification{marker}, rec.list()); diff != "" {
					t.Errorf("delivered (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff([]Interface{cpu(0), cpu(9)}, r.Active()); diff != "" {
					t.Errorf("Active() (-want +got):\n%s", diff)
				}
				refused := logs.find("notification refused")
				if len(refused) != 1 || refused[0].Level != slog.LevelWarn || refused[0].Attrs["reason"] != tt.reason {
					t.Errorf("refusal logs = %+v, want one WARN with reason %q", refused, tt.reason)
				}
			})
		})
	}
}

func TestPublishFillsIn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		defer closeRegistry(t, r)
		var rec recorder
		if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceMemory, "memory", rec.record, nil); err != nil {
			t.Fatalf("Register: %v", err)
		}
		if !r.Publish(Notification{Event: GUIDDeviceInterfaceArrival, Interface: mem(3), Seqnum: 7}) {
			t.Fatalf("Publish refused a notification with only Event and Interface")
		}
		synctest.Wait()
		want := []Notification{NewNotification(GUIDDeviceInterfaceArrival, mem(3), 7, time.Now(), "")}
		if diff := cmp.Diff(want, rec.list()); diff != "" {
			t.Errorf("delivered (-want +got):\n%s", diff)
		}
	})
}

func TestQueueLimitResync(t *testing.T) {
	const changes = 1000
	obs := new(fakeObserver)
	r := NewRegistry(Options{QueueLimit: 8, Observer: obs})
	defer closeRegistry(t, r)
	var ifaces []Interface
	for n := range 10 {
		ifaces = append(ifaces, cpu(n))
	}
	seed := ifaces[:5]
	r.Seed(seed)

	var slow recorder
	slowEntered, slowGate, slowDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	sentinel := arrival(cpu(99), changes+1)
	slowCb := func(_ context.Context, n Notification, _ any) error {
		if slow.add(n) == 1 {
			close(slowEntered)
			<-slowGate
		}
		if n.SymbolicLinkName == sentinel.SymbolicLinkName {
			close(slowDone)
		}
		return nil
	}
	var fast recorder
	ack := make(chan struct{})
	fastCb := func(_ context.Context, n Notification, _ any) error {
		fast.add(n)
		ack <- struct{}{}
		return nil
	}
	if _, err := r.Register(EventCategoryDeviceInterfaceChange, FlagIncludeExistingInterfaces, GUIDDeviceProcessor, "slow", slowCb, nil); err != nil {
		t.Fatalf("Register(slow): %v", err)
	}
	if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "fast", fastCb, nil); err != nil {
		t.Fatalf("Register(fast): %v", err)
	}
	<-slowEntered

	tg := newToggler(ifaces, seed, 5)
	var published []Notification
	for range changes {
		n := tg.next()
		published = append(published, n)
		if !r.Publish(n) {
			t.Fatalf("Publish(seqnum %d) refused", n.Seqnum)
		}
		<-ack // the fast registration keeps up: its queue never holds more than one
	}
	published = append(published, sentinel)
	r.Publish(sentinel)
	<-ack
	close(slowGate)
	<-slowDone

	if diff := cmp.Diff(published, fast.list()); diff != "" {
		t.Errorf("fast registration (-want +got):\n%s", diff)
	}
	got := slow.list()
	view := make(map[string]bool) // IncludeExisting: the view starts empty
	replay(t, "slow", view, got)
	if diff := cmp.Diff(activeLinks(r.Active(), GUIDDeviceProcessor), setLinks(view)); diff != "" {
		t.Errorf("slow registration's final view against Active() (-want +got):\n%s", diff)
	}
	resyncs := 0
	for _, n := range got {
		if n.Cause == CauseResync {
			resyncs++
		}
	}
	if resyncs == 0 {
		t.Errorf("slow registration received no resync notification")
	}
	var dropped, fastDropped uint64
	for _, info := range r.Entries() {
		switch info.Owner {
		case "slow":
			dropped = info.Dropped
		case "fast":
			fastDropped = info.Dropped
		}
	}
	if dropped == 0 {
		t.Errorf("slow registration: Dropped = 0, want > 0")
	}
	if fastDropped != 0 {
		t.Errorf("fast registration: Dropped = %d, want 0", fastDropped)
	}
	events, _ := obs.snapshot()
	var reported uint64
	for _, ev := range events {
		if ev.Kind == "overflow" {
			if ev.Owner != "slow" {
				t.Errorf("QueueOverflow reported for %s, want only slow", ev.Owner)
			}
			reported += uint64(ev.Dropped)
		}
	}
	if reported != dropped {
		t.Errorf("QueueOverflow reported %d dropped in all, Entries() says %d", reported, dropped)
	}
}

func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		release := make(chan struct{})
		var ran atomic.Int32
		cb := func(context.Context, Notification, any) error {
			ran.Add(1)
			<-release
			return nil
		}
		kept, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "kept", cb, nil)
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		left, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "left", cb, nil)
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		r.Publish(arrival(cpu(1), 1))
		r.Publish(removal(cpu(1), 2))
		synctest.Wait()
		if err := r.Unregister(left); err != nil { // its callback is still in flight
			t.Fatalf("Unregister: %v", err)
		}
		returned := make(chan error, 1)
		go func() { returned <- r.Close(context.Background()) }()
		synctest.Wait()
		select {
		case err := <-returned:
			close(release)
			t.Fatalf("Close returned (%v) while callbacks were running", err)
		default:
		}
		close(release)
		if err := <-returned; err != nil {
			t.Errorf("Close: %v", err)
		}
		if got := ran.Load(); got != 2 {
			t.Errorf("%d callbacks ran, want 2 (one per registration, the rest dropped)", got)
		}
		if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "late", cb, nil); !errors.Is(err, ErrClosed) {
			t.Errorf("Register after Close = %v, want ErrClosed", err)
		}
		if err := r.Unregister(kept); !errors.Is(err, ErrUnregistered) {
			t.Errorf("Unregister after Close = %v, want ErrUnregistered", err)
		}
		if err := r.Close(context.Background()); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

func TestCloseDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		release := make(chan struct{})
		cb := func(context.Context, Notification, any) error {
			<-release
			return nil
		}
		if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "stuck-driver", cb, nil); err != nil {
			t.Fatalf("Register: %v", err)
		}
		r.Publish(arrival(cpu(1), 1))
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := r.Close(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "stuck-driver") {
			t.Errorf("Close = %v, want an error naming stuck-driver and wrapping context.DeadlineExceeded", err)
		}
		close(release)
		if err := r.Close(context.Background()); err != nil {
			t.Errorf("Close once released: %v", err)
		}
	})
}

func TestCloseFromCallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		var closeErr error
		closed := false
		cb := func(context.Context, Notification, any) error {
			closeErr = r.Close(context.Background())
			closed = true
			return nil
		}
		if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "closer", cb, nil); err != nil {
			t.Fatalf("Register: %v", err)
		}
		r.Publish(arrival(cpu(1), 1))
		synctest.Wait()
		if !closed || closeErr != nil {
			t.Errorf("Close from a callback returned = %t, err = %v; want it returned with nil", closed, closeErr)
		}
	})
}

func TestCallbackGoexit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := newCapture()
		r := NewRegistry(Options{Logger: slog.New(logs)})
		defer closeRegistry(t, r)
		cb := func(context.Context, Notification, any) error {
			runtime.Goexit()
			return nil
		}
		e, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "quitter", cb, nil)
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		r.Publish(arrival(cpu(1), 1))
		synctest.Wait()
		if got := r.Entries(); len(got) != 0 {
			t.Errorf("Entries() = %+v after the callback goroutine exited, want none", got)
		}
		if recs := logs.find("callback goroutine exited"); len(recs) != 1 || recs[0].Level != slog.LevelError || recs[0].Attrs["owner"] != "quitter" {
			t.Errorf("logs = %+v, want one ERROR for quitter", recs)
		}
		if err := r.Unregister(e); !errors.Is(err, ErrUnregistered) {
			t.Errorf("Unregister = %v, want ErrUnregistered", err)
		}
		if !r.Publish(removal(cpu(1), 2)) {
			t.Errorf("Publish refused after the entry went away")
		}
	})
}

func TestEntriesActiveSeed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		defer closeRegistry(t, r)
		r.Seed([]Interface{cpu(7), mem(0)}) // replaced below
		r.Seed([]Interface{mem(3), cpu(1), cpu(0), {SymbolicLink: "/no/class"}})
		want := []Interface{cpu(0), cpu(1), mem(3)}
		active := r.Active()
		if diff := cmp.Diff(want, active); diff != "" {
			t.Fatalf("Active() (-want +got):\n%s", diff)
		}
		active[0].State = "changed"
		if diff := cmp.Diff(want, r.Active()); diff != "" {
			t.Errorf("Active() after the caller changed its copy (-want +got):\n%s", diff)
		}

		release := make(chan struct{})
		var calls atomic.Int32
		cb := func(context.Context, Notification, any) error {
			if calls.Add(1) == 1 {
				<-release
			}
			return nil
		}
		if _, err := r.Register(EventCategoryDeviceInterfaceChange, FlagIncludeExistingInterfaces, GUIDDeviceProcessor, "cpus", cb, nil); err != nil {
			t.Fatalf("Register: %v", err)
		}
		if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, AllClasses, "all", func(context.Context, Notification, any) error { return nil }, nil); err != nil {
			t.Fatalf("Register: %v", err)
		}
		r.Publish(arrival(cpu(2), 1))
		synctest.Wait()
		wantInfos := []EntryInfo{
			{Owner: "cpus", Class: GUIDDeviceProcessor, Flags: FlagIncludeExistingInterfaces, Queued: 2, Delivered: 1},
			{Owner: "all", Class: AllClasses, Flags: 0, Queued: 0, Delivered: 1},
		}
		if diff := cmp.Diff(wantInfos, r.Entries()); diff != "" {
			t.Errorf("Entries() while blocked (-want +got):\n%s", diff)
		}
		close(release)
		synctest.Wait()
		wantInfos[0].Queued, wantInfos[0].Delivered = 0, 3
		if diff := cmp.Diff(wantInfos, r.Entries()); diff != "" {
			t.Errorf("Entries() once released (-want +got):\n%s", diff)
		}
	})
}

// BenchmarkPublishDispatch measures Publish plus delivery to every registration, in batches
// small enough never to overflow a queue; ns/callback is the time per delivered notification.
func BenchmarkPublishDispatch(b *testing.B) {
	for _, regs := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("registrations=%d", regs), func(b *testing.B) {
			r := NewRegistry(Options{})
			var want, got atomic.Int64
			batchDone := make(chan struct{}, 1)
			cb := func(context.Context, Notification, any) error {
				if got.Add(1) == want.Load() {
					batchDone <- struct{}{}
				}
				return nil
			}
			for k := range regs {
				if _, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, fmt.Sprintf("bench%d", k), cb, nil); err != nil {
					b.Fatalf("Register: %v", err)
				}
			}
			ns := []Notification{arrival(cpu(1), 0), removal(cpu(1), 0)}
			const batch = 256 // at most ringKeep queued: the steady state, no burst reallocation
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; {
				size := min(batch, b.N-i)
				want.Add(int64(size * regs))
				for j := range size {
					r.Publish(ns[(i+j)%2])
				}
				<-batchDone
				i += size
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*regs), "ns/callback")
			if err := r.Close(context.Background()); err != nil {
				b.Fatalf("Close: %v", err)
			}
		})
	}
}

// TestIDs checks the numbering of published notifications: consecutive, continued from
// SetLastID, not consumed by a refused Publish, and 0 for an entry's existing interfaces.
func TestIDs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRegistry(Options{})
		defer closeRegistry(t, r)
		r.Seed([]Interface{cpu(0)})
		r.SetLastID(41)
		var rec recorder
		if _, err := r.Register(EventCategoryDeviceInterfaceChange, FlagIncludeExistingInterfaces, AllClasses, "ids", rec.record, nil); err != nil {
			t.Fatal(err)
		}
		r.Publish(arrival(cpu(1), 1))
		r.Publish(arrival(cpu(1), 2)) // refused: already active
		r.Publish(removal(cpu(1), 3))
		synctest.Wait()
		if diff := cmp.Diff([]uint64{0, 42, 43}, rec.ids()); diff != "" {
			t.Errorf("IDs (-want +got):\n%s", diff)
		}
		if got := r.LastID(); got != 43 {
			t.Errorf("LastID = %d; want 43", got)
		}
	})
}

// A registration waiting for notifications is woken for those published under HoldWakes only by
// the last ReleaseWakes, and then gets all of them, in order.
func TestHoldWakes(t *testing.T) {
	r := NewRegistry(Options{})
	defer closeRegistry(t, r)
	var rc recorder
	got := make(chan int, 16)
	e, err := r.Register(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "held",
		func(ctx context.Context, n Notification, u any) error { got <- rc.add(n); return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Publish(arrival(cpu(1), 1))
	<-got
	// The registration waits for its next notification: only then does a Publish have a wake to
	// hold. Until it does, it would take what is queued without one.
	waitFor(t, "wait for the next notification", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.box.Waiting()
	})

	r.HoldWakes()
	r.HoldWakes()
	r.Publish(removal(cpu(1), 2))
	r.Publish(arrival(cpu(1), 3))
	r.ReleaseWakes() // an inner release wakes no one
	select {
	case n := <-got:
		t.Fatalf("notification %d delivered while wakes were held", n)
	case <-time.After(50 * time.Millisecond):
	}
	r.ReleaseWakes()
	for want := 2; want <= 3; want++ {
		select {
		case n := <-got:
			if n != want {
				t.Fatalf("delivered %d notifications; want %d", n, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("notification %d not delivered after the hold ended", want)
		}
	}
	if s := seqnums(rc.list()); !slices.Equal(s, []uint64{1, 2, 3}) {
		t.Errorf("delivered seqnums %v; want [1 2 3]", s)
	}
	r.ReleaseWakes() // one release too many changes nothing
	r.Publish(removal(cpu(1), 4))
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("a notification published after the hold was not delivered")
	}
}

// TestSortedInterfacesOrder: the active set is sorted as compareInterfaces sorts it, whatever
// the classes (a class other than the two, whose name is its GUID), numbers shared between
// classes and interfaces of one class and number told apart by their symbolic links.
func TestSortedInterfacesOrder(t *testing.T) {
	other := uuid.MustParse("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")
	classes := []uuid.UUID{GUIDDeviceProcessor, GUIDDeviceMemory, other}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		m := map[string]Interface{}
		for k := range rng.IntN(300) {
			i := Interface{ClassGUID: classes[rng.IntN(len(classes))], Number: rng.IntN(40),
				SymbolicLink: fmt.Sprintf("/sys/x/%d/%d", rng.IntN(5), k)}
			m[i.SymbolicLink] = i
		}
		var want []Interface
		for _, i := range m {
			want = append(want, i)
		}
		slices.SortFunc(want, compareInterfaces)
		if got := sortedInterfaces(m); !slices.Equal(got, want) {
			t.Fatalf("round %d: sortedInterfaces differs from a sort with compareInterfaces:\n%s", round, cmp.Diff(want, got))
		}
	}
}
