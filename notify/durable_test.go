package notify

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// checkpointer plays the agent's saver for one registry: on request it takes a Checkpoint,
// "saves" it in memory and calls Saved.
type checkpointer struct {
	r     *Registry
	req   chan struct{}
	mu    sync.Mutex
	saved *Checkpoint
	hold  chan struct{} // when not nil, each save waits for a receive from it
}

func newCheckpointer() *checkpointer { return &checkpointer{req: make(chan struct{}, 1)} }

func (c *checkpointer) request(bool) {
	select {
	case c.req <- struct{}{}:
	default:
	}
}

// run saves on request until ctx ends.
func (c *checkpointer) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.req:
		}
		if c.hold != nil {
			select {
			case <-c.hold:
			case <-ctx.Done():
				return
			}
		}
		cp := c.r.Checkpoint(1024)
		c.mu.Lock()
		c.saved = &cp
		c.mu.Unlock()
		c.r.Saved(cp)
	}
}

func (c *checkpointer) last() *Checkpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.saved
}

// TestDurableWaitsForCheckpoint: a durable registration's callback gets a notification only once
// a saved Checkpoint holds it, as pending; once the callback has returned, the next Checkpoint
// has it in the view and no longer pending.
func TestDurableWaitsForCheckpoint(t *testing.T) {
	cp := newCheckpointer()
	r := NewRegistry(Options{RequestCheckpoint: cp.request})
	defer closeRegistry(t, r)
	cp.r = r
	cp.hold = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go cp.run(ctx)
	r.Seed([]Interface{cpu(0)})

	got := make(chan Notification, 10)
	if _, err := r.RegisterDurable(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "cb",
		func(_ context.Context, n Notification, _ any) error { got <- n; return nil }, nil, nil); err != nil {
		t.Fatal(err)
	}
	r.Publish(arrival(cpu(1), 7))
	select {
	case n := <-got:
		t.Fatalf("callback got %s of %s before any checkpoint was saved", EventName(n.Event), n.SymbolicLinkName)
	case <-time.After(50 * time.Millisecond):
	}
	cp.hold <- struct{}{} // one save
	n := <-got
	saved := cp.last()
	want := Cursor{Class: GUIDDeviceProcessor, View: []Interface{cpu(0)}, Pending: []Notification{n}}
	if diff := cmp.Diff(want, saved.Cursors["cb"]); diff != "" {
		t.Errorf("the checkpoint saved before the callback ran (-want +got):\n%s", diff)
	}
	if n.ID != 1 || saved.LastID != 1 {
		t.Errorf("notification ID %d, checkpoint LastID %d; want 1, 1", n.ID, saved.LastID)
	}
	if diff := cmp.Diff([]Interface{cpu(0), cpu(1)}, saved.Active); diff != "" {
		t.Errorf("checkpoint's active set (-want +got):\n%s", diff)
	}
	// Returning asks for a checkpoint, which shows the notification finished.
	cp.hold <- struct{}{}
	waitFor(t, "a checkpoint with the notification finished", func() bool {
		c := cp.last().Cursors["cb"]
		return len(c.Pending) == 0 && len(c.View) == 2
	})
}

// TestDurableResume: a registration resumed from a Cursor gets its pending notifications with
// their IDs, then the resync from the view they leave to the active set, with the registry's
// next IDs, then live ones; flags do not apply; a Cursor whose pending notifications do not
// follow from its view is resynchronised from the view alone.
func TestDurableResume(t *testing.T) {
	tests := []struct {
		name    string
		active  []Interface
		cursor  Cursor
		flags   Flags
		want    []string // event, link number, cause, id
		warning bool
	}{
		{
			name:   "pending then nothing: the pending ones lead to the active set",
			active: []Interface{cpu(0), cpu(1)},
			cursor: Cursor{Class: GUIDDeviceProcessor, View: []Interface{cpu(0), cpu(1)},
				Pending: []Notification{withID(removal(cpu(1), 5), 41), withID(arrival(cpu(1), 6), 42)}},
			want: []string{"removal 1 uevent 41", "arrival 1 uevent 42", "live"},
		},
		{
			name:   "pending then the resync of what they do not reach",
			active: []Interface{cpu(0), cpu(2)},
			cursor: Cursor{Class: GUIDDeviceProcessor, View: []Interface{cpu(0), cpu(1)},
				Pending: []Notification{withID(removal(cpu(1), 5), 41)}},
			flags: FlagIncludeExistingInterfaces,
			want:  []string{"removal 1 uevent 41", "arrival 2 resync 101", "live"},
		},
		{
			name:   "no pending: the resync of the view",
			active: []Interface{cpu(1), cpu(2)},
			cursor: Cursor{Class: GUIDDeviceProcessor, View: []Interface{cpu(0), cpu(1)}},
			want:   []string{"removal 0 resync 101", "arrival 2 resync 102", "live"},
		},
		{
			name:   "details changed while down: removal and arrival",
			active: []Interface{cpu(0), func() Interface { i := cpu(1); i.Node = 1; return i }()},
			cursor: Cursor{Class: GUIDDeviceProcessor, View: []Interface{cpu(0), cpu(1)}},
			want:   []string{"removal 1 resync 101", "arrival 1 resync 102", "live"},
		},
		{
			name:   "pending that does not follow from the view",
			active: []Interface{cpu(0)},
			cursor: Cursor{Class: GUIDDeviceProcessor, View: []Interface{cpu(0)},
				Pending: []Notification{withID(arrival(cpu(0), 5), 41)}},
			want:    []string{"live"},
			warning: true,
		},
		{
			name:   "interfaces of another class are ignored",
			active: []Interface{cpu(0), mem(3)},
			cursor: Cursor{Class: GUIDDeviceProcessor, View: []Interface{cpu(0), mem(4)}},
			want:   []string{"live"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := newCapture()
			r := NewRegistry(Options{Logger: slog.New(logs)})
			defer closeRegistry(t, r)
			r.Seed(tt.active)
			r.SetLastID(100)
			var rc recorder
			cursor := tt.cursor
			if _, err := r.RegisterDurable(EventCategoryDeviceInterfaceChange, tt.flags, GUIDDeviceProcessor, "cb", rc.record, nil, &cursor); err != nil {
				t.Fatal(err)
			}
			live := cpu(7)
			r.Publish(arrival(live, 9))
			waitFor(t, "the live notification", func() bool {
				return slices.ContainsFunc(rc.list(), func(n Notification) bool { return n.SymbolicLinkName == live.SymbolicLink })
			})
			var got []string
			for _, n := range rc.got {
				if n.SymbolicLinkName == live.SymbolicLink {
					got = append(got, "live")
					continue
				}
				got = append(got, fmt.Sprintf("%s %d %s %d", EventName(n.Event), n.Interface.Number, n.Cause, n.ID))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("delivered (-want +got):\n%s", diff)
			}
			if warned := len(logs.find("durable registration: the saved notifications do not follow from the saved view; resynchronising instead")) > 0; warned != tt.warning {
				t.Errorf("warned about the pending notifications: %v; want %v", warned, tt.warning)
			}
		})
	}
	r := NewRegistry(Options{})
	defer closeRegistry(t, r)
	if _, err := r.RegisterDurable(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceMemory, "cb", new(recorder).record, nil,
		&Cursor{Class: GUIDDeviceProcessor}); err == nil {
		t.Errorf("resuming a processor registration as a memory one: no error")
	}
}

func withID(n Notification, id uint64) Notification {
	n.ID = id
	return n
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10 s", what)
		}
	}
}

// TestStop: Stop lets the callback running finish within the grace, starts nothing else, and
// keeps the queue for the checkpoint; a callback that outlasts the grace is cancelled, and its
// notification stays pending, first.
func TestStop(t *testing.T) {
	for _, outlast := range []bool{false, true} {
		t.Run(fmt.Sprintf("outlasts the grace %v", outlast), func(t *testing.T) {
			r := NewRegistry(Options{})
			defer closeRegistry(t, r)
			entered, release := make(chan struct{}, 10), make(chan struct{})
			var rc recorder
			cb := func(ctx context.Context, n Notification, _ any) error {
				entered <- struct{}{}
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
				rc.add(n)
				return nil
			}
			if _, err := r.RegisterDurable(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "cb", cb, nil, nil); err != nil {
				t.Fatal(err)
			}
			for k := range 3 {
				r.Publish(arrival(cpu(k), uint64(k)))
			}
			<-entered
			grace := time.Second
			if outlast {
				grace = 50 * time.Millisecond
			} else {
				go func() { time.Sleep(50 * time.Millisecond); close(release) }()
			}
			ctx, cancel := context.WithTimeout(context.Background(), grace)
			defer cancel()
			if err := r.Stop(ctx); err != nil {
				t.Errorf("Stop: %v", err)
			}
			select {
			case <-entered:
				t.Errorf("a callback started after Stop")
			case <-time.After(50 * time.Millisecond):
			}
			c := r.Checkpoint(10).Cursors["cb"]
			var pending []uint64
			for _, n := range c.Pending {
				pending = append(pending, n.ID)
			}
			want, view := []uint64{2, 3}, []Interface{cpu(0)}
			if outlast {
				want, view = []uint64{1, 2, 3}, nil
			}
			if !slices.Equal(pending, want) {
				t.Errorf("pending after Stop: IDs %v; want %v", pending, want)
			}
			if diff := cmp.Diff(view, c.View, cmpEmpty); diff != "" {
				t.Errorf("view after Stop (-want +got):\n%s", diff)
			}
		})
	}
}

// cmpEmpty makes nil and empty slices equal.
var cmpEmpty = cmp.FilterValues(func(a, b []Interface) bool { return len(a) == 0 && len(b) == 0 }, cmp.Comparer(func(a, b []Interface) bool { return true }))

// TestDurableAcrossStopsAndCrashes plays the agent's lives: each publishes random changes of a
// few CPUs to a durable registration whose callback records each notification as it starts,
// then ends in a stop (Stop, a last checkpoint, Close) or a crash (everything after an instant is
// lost: the callback records nothing more, the last saved checkpoint is what the next life
// finds). Each next life starts as the agent does: the announced set from the checkpoint, the
// changes made meanwhile published with IDs beyond any given before, the registration resumed
// from its cursor. In the end every record has an ID, IDs never go down but to repeat one
// recorded before, and the records without the repeats alternate per interface from the
// starting state and end in the truth; with stops alone, nothing is recorded twice.
// HOTPLUG_DURABLE_SEEDS sets how many random plays each case has (12).
func TestDurableAcrossStopsAndCrashes(t *testing.T) {
	seeds := uint64(12)
	if v, err := strconv.ParseUint(os.Getenv("HOTPLUG_DURABLE_SEEDS"), 10, 32); err == nil && v > 0 {
		seeds = v
	}
	for _, tt := range []struct {
		name    string
		crashes bool
		limit   int // queue limit: a small one overflows into resyncs
	}{
		{"stops", false, 0},
		{"stops and crashes", true, 0},
		{"stops and crashes with overflows", true, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for seed := range seeds {
				playLives(t, seed, tt.crashes, tt.limit)
				if t.Failed() {
					t.Fatalf("seed %d", seed)
				}
			}
		})
	}
}

// world is what outlives the agent's lives: the truth, the callback's records, the saved
// checkpoint. Its lock makes a crash an instant: nothing is saved or recorded after it.
type world struct {
	marks   map[int]string // debugging: at which record each life began
	mu      sync.Mutex
	alive   bool
	truth   map[string]Interface
	records []Notification
	disk    *Checkpoint
}

func playLives(t *testing.T, seed uint64, crashes bool, limit int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	ifaces := []Interface{cpu(1), cpu(2), cpu(3)}
	start := map[string]Interface{cpu(1).SymbolicLink: cpu(1)}
	w := &world{truth: maps.Clone(start)}
	seq := uint64(0)
	const lives = 10
	for life := range lives {
		w.mu.Lock()
		w.alive = true
		disk := w.disk
		if w.marks == nil {
			w.marks = map[int]string{}
		}
		w.marks[len(w.records)] += fmt.Sprintf(" life %d begins (disk: %s)", life, describe(disk))
		w.mu.Unlock()
		r := NewRegistry(Options{QueueLimit: limit})
		saver := &checkpointer{r: r, req: make(chan struct{}, 1)}
		// The saver writes to the world's disk while the agent is alive.
		r.checkpoint = saver.request
		ctx, stopSaver := context.WithCancel(context.Background())
		saverDone := make(chan struct{})
		go func() {
			defer close(saverDone)
			for {
				select {
				case <-ctx.Done():
					return
				case <-saver.req:
				}
				w.mu.Lock()
				if !w.alive {
					w.mu.Unlock()
					return
				}
				cp := r.Checkpoint(1 + rng2(seed, life)%8) // sometimes fewer pending than queued
				w.disk = &cp
				w.mu.Unlock()
				r.Saved(cp)
			}
		}()
		var cursor *Cursor
		announced := start
		if disk != nil {
			announced = map[string]Interface{}
			for _, i := range disk.Active {
				announced[i.SymbolicLink] = i
			}
			r.Seed(disk.Active)
			r.SetLastID(disk.LastID + 1000) // as after a kill: the next start does not know
			if c, ok := disk.Cursors["cb"]; ok {
				cursor = &c
			}
		} else {
			r.Seed(slices.Collect(maps.Values(start)))
		}
		cb := func(ctx context.Context, n Notification, _ any) error {
			w.mu.Lock()
			if w.alive {
				w.records = append(w.records, n)
			}
			w.mu.Unlock()
			select {
			case <-time.After(time.Duration(rng2(seed, int(n.ID))%300) * time.Microsecond):
			case <-ctx.Done():
				return ctx.Err()
			}
			return nil
		}
		if _, err := r.RegisterDurable(EventCategoryDeviceInterfaceChange, 0, GUIDDeviceProcessor, "cb", cb, nil, cursor); err != nil {
			t.Fatal(err)
		}
		// What changed while the agent was down, as the agent announces it at start.
		w.mu.Lock()
		for _, n := range diff(announced, w.truth, time.Now()) {
			n.Cause = CauseStartup
			r.Publish(n)
		}
		w.mu.Unlock()
		for range rng.IntN(30) {
			i := ifaces[rng.IntN(len(ifaces))]
			seq++
			w.mu.Lock()
			n := arrival(i, seq)
			if _, on := w.truth[i.SymbolicLink]; on {
				n = removal(i, seq)
				delete(w.truth, i.SymbolicLink)
			} else {
				w.truth[i.SymbolicLink] = i
			}
			r.Publish(n)
			w.mu.Unlock()
			time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
		}
		last := life == lives-1
		if last {
			waitFor(t, "the callback to finish everything", func() bool {
				c := r.Checkpoint(1).Cursors["cb"]
				return len(c.Pending) == 0 && r.Entries()[0].Queued == 0
			})
		}
		if crashes && !last && rng.IntN(2) == 0 {
			time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
			w.mu.Lock()
			w.alive = false
			w.marks[len(w.records)] += " crash"
			w.mu.Unlock()
		} else {
			grace, cancel := context.WithTimeout(context.Background(), time.Second)
			if err := r.Stop(grace); err != nil {
				t.Error(err)
			}
			cancel()
			w.mu.Lock()
			cp := r.Checkpoint(1024)
			w.disk = &cp
			w.alive = false
			w.mu.Unlock()
		}
		stopSaver()
		<-saverDone
		if err := r.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}
	// The records, as a callback that skips an ID it has handled would take them.
	seen := map[uint64]Notification{}
	view := map[string]bool{}
	for l := range start {
		view[l] = true
	}
	var kept []Notification
	duplicates := 0
	var last uint64
	for k, n := range w.records {
		if n.ID == 0 {
			t.Errorf("record %d: %s of %s (%s) has no ID", k, EventName(n.Event), n.SymbolicLinkName, n.Cause)
		}
		if prev, ok := seen[n.ID]; ok {
			if prev != n {
				t.Errorf("record %d: ID %d names two notifications:\n%+v\n%+v", k, n.ID, prev, n)
			}
			duplicates++
			continue
		}
		if n.ID < last {
			t.Errorf("record %d: ID %d, new, after ID %d", k, n.ID, last)
		}
		last = n.ID
		seen[n.ID] = n
		kept = append(kept, n)
	}
	if !crashes && duplicates > 0 {
		t.Errorf("%d notifications recorded twice with stops alone", duplicates)
	}
	replay(t, "durable callback", view, kept)

	if diff := cmp.Diff(setLinks(linkSet(w.truth)), setLinks(view)); diff != "" {
		t.Errorf("the callback's last view against the truth (-want +got):\n%s", diff)
	}
	if t.Failed() {
		for k, n := range w.records {
			if m := w.marks[k]; m != "" {
				t.Logf("%s", m)
			}
			t.Logf("record %s %s id=%d cause=%s", EventName(n.Event), n.SymbolicLinkName[len(n.SymbolicLinkName)-4:], n.ID, n.Cause)
		}
		t.Logf("truth %v", setLinks(linkSet(w.truth)))
	}
}

// rng2 is a cheap deterministic number from two values.
func rng2(seed uint64, k int) int {
	x := seed*0x9e3779b97f4a7c15 + uint64(k)*0xbf58476d1ce4e5b9
	x ^= x >> 31
	return int(x % (1 << 30))
}

func linkSet(m map[string]Interface) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func describe(cp *Checkpoint) string {
	if cp == nil {
		return "none"
	}
	var active []string
	for _, i := range cp.Active {
		active = append(active, fmt.Sprint(i.Number))
	}
	c := cp.Cursors["cb"]
	var view, pending []string
	for _, i := range c.View {
		view = append(view, fmt.Sprint(i.Number))
	}
	for _, n := range c.Pending {
		pending = append(pending, fmt.Sprintf("%s%d#%d", EventName(n.Event)[:1], n.Interface.Number, n.ID))
	}
	return fmt.Sprintf("active %v last %d view %v pending %v", active, cp.LastID, view, pending)
}
