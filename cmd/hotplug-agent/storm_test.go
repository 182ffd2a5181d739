//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// stormRepeats is how many storms TestIntegrationOverflowStorm runs: the 50 with
// HOTPLUG_STORM_REPEATS=50 (the long form), 3 in CI and by default (about 10 s each here).
func stormRepeats(t *testing.T) int {
	if v := os.Getenv("HOTPLUG_STORM_REPEATS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("HOTPLUG_STORM_REPEATS=%q: want a positive number", v)
		}
		return n
	}
	if testing.Short() {
		return 1
	}
	return 3
}

// TestIntegrationOverflowStorm is guarantee 1: with a 4 KiB receive buffer, storms of over 20,000
// real kernel uevents (synthetic ones written by several writers at once to CPU and memory uevent
// files, mixed with real CPU offline/online cycles) overflow the socket again and again; the
// agent must detect it, rescan, deliver to every registration a sequence that alternates per
// interface and ends in the true state, and end with /interfaces equal to sysfs.
func TestIntegrationOverflowStorm(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	mems, _ := filepath.Glob("/sys/devices/system/memory/memory[0-9]*")
	if len(mems) == 0 {
		testenv.Unavailable(t, "no memory blocks in sysfs to write uevents to")
	}
	a := startAgent(t, "--netlink.receive-buffer-bytes=4096", "--log.level=info")
	// Two registrations: every class (with the existing interfaces, so its view starts true)
	// and processors only. Large buffers: they must keep up, not be cut off.
	all := a.subscribe(t, "include_existing=true")
	cpus := a.subscribe(t, "class=processor&include_existing=true")
	views := []*view{newView("all"), newView("processor")}
	for _, v := range views {
		ch := all
		if v.name == "processor" {
			ch = cpus
		}
		v.follow(t, ch)
	}

	const perStorm = 20000
	writers := 4
	targets := append([]string{link, "/sys/devices/system/cpu/cpu0"}, mems[:min(6, len(mems))]...)
	for r := range stormRepeats(t) {
		var wg sync.WaitGroup
		errs := make(chan error, writers+1)
		for w := range writers {
			wg.Go(func() {
				for i := range perStorm / writers {
					dev := targets[(w+i)%len(targets)]
					action := []string{"online", "change", "add", "offline"}[i%4]
					if err := testenv.Synthesize(dev, action); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Go(func() { // real transitions in the middle of the storm
			for range 3 {
				for _, on := range []bool{false, true} {
					v := "0"
					if on {
						v = "1"
					}
					if err := os.WriteFile(link+"/online", []byte(v), 0); err != nil {
						errs <- err
						return
					}
				}
			}
		})
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("storm %d: %v", r, err)
		}
		// A marker after the storm: a real cycle of the CPU whose arrival has a SEQNUM above
		// every storm uevent. Once a registration has it, it has everything before. The agent
		// may still be draining, with a buffer this small, and lose the marker itself: then it
		// resyncs, and the next marker gets through.
		marked := false
		for try := 0; try < 20 && !marked; try++ {
			after := kernelSeqnum(t)
			testenv.SetCPUOnline(t, cpu, false)
			testenv.SetCPUOnline(t, cpu, true)
			marked = true
			for _, v := range views {
				marked = marked && v.waitMarker(link, after, 5*time.Second)
			}
		}
		if !marked {
			t.Fatalf("storm %d: no marker arrival of %s reached both registrations in 20 tries", r, link)
		}
		truth := onlineLinks(t)
		for _, v := range views {
			if err := v.check(truth); err != nil {
				t.Fatalf("storm %d: registration %s: %v", r, v.name, err)
			}
		}
		if got := interfaceLinks(t, a); !slices.Equal(got, truth) {
			t.Fatalf("storm %d: /interfaces differs from sysfs:\n got %v\nwant %v", r, got, truth)
		}
	}
	m := a.get(t, "/metrics")
	overflows := metric(t, m, "hotplug_agent_netlink_overflows_total")
	resyncs := metric(t, m, `hotplug_agent_resyncs_total{reason="overflow"}`)
	if overflows < 1 || resyncs < overflows {
		t.Errorf("overflows %v, overflow resyncs %v; want at least one overflow, each followed by a resync", overflows, resyncs)
	}
	t.Logf("%d storms of %d uevents: %v overflows survived, %v resyncs, 0 mismatches", stormRepeats(t), perStorm, overflows, resyncs)
}

// view is what one registration was told: per interface, the sequence must alternate, and the
// final set must be the truth.
type view struct {
	name        string
	mu          sync.Mutex
	active      map[string]bool
	bad         []string
	lastArrival map[string]uint64 // link -> SEQNUM of its last arrival
	moved       chan struct{}
}

func newView(name string) *view {
	return &view{name: name, active: map[string]bool{}, lastArrival: map[string]uint64{}, moved: make(chan struct{}, 1)}
}

func (v *view) follow(t *testing.T, ch <-chan event) {
	go func() {
		for e := range ch {
			v.mu.Lock()
			arrival := e.Event == "arrival"
			if v.active[e.SymbolicLink] == arrival {
				v.bad = append(v.bad, fmt.Sprintf("%s of %s while it was %v (cause %s, seq %d)", e.Event, e.SymbolicLink, v.active[e.SymbolicLink], e.Cause, e.Seqnum))
			}
			v.active[e.SymbolicLink] = arrival
			if arrival {
				v.lastArrival[e.SymbolicLink] = e.Seqnum
			}
			v.mu.Unlock()
			select {
			case v.moved <- struct{}{}:
			default:
			}
		}
	}()
}

// waitMarker reports whether an arrival of link with a SEQNUM above after came within d.
func (v *view) waitMarker(link string, after uint64, d time.Duration) bool {
	deadline := time.After(d)
	for {
		v.mu.Lock()
		done := v.lastArrival[link] > after && v.active[link]
		v.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-v.moved:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			return false
		}
	}
}

func (v *view) check(truth []string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.bad) > 0 {
		return fmt.Errorf("sequence does not alternate: %v", v.bad)
	}
	var got []string
	for l, on := range v.active {
		if on {
			got = append(got, l)
		}
	}
	slices.Sort(got)
	want := truth
	if v.name == "processor" {
		want = slices.DeleteFunc(slices.Clone(truth), func(l string) bool { return filepath.Dir(l) != "/sys/devices/system/cpu" })
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("final view differs from sysfs:\n got %v\nwant %v", got, want)
	}
	return nil
}

func interfaceLinks(t *testing.T, a *agentProc) []string {
	var ifaces []struct {
		SymbolicLink string `json:"symbolic_link"`
	}
	if err := json.Unmarshal([]byte(a.get(t, "/interfaces")), &ifaces); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, i := range ifaces {
		out = append(out, i.SymbolicLink)
	}
	slices.Sort(out)
	return out
}

func kernelSeqnum(t *testing.T) uint64 {
	b, err := os.ReadFile("/sys/kernel/uevent_seqnum")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(string(b[:len(b)-1]), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
