//go:build linux

package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// deliveryRecord is one line a slow exec callback of TestIntegrationCallbackDelivery writes:
// "start ID event link" as it starts, "done ID" as it ends.
type deliveryRecord struct {
	start bool
	id    uint64
	event string
	link  string
	stop  string // the stop that came last before the record: "", "term" or "kill"
}

// TestIntegrationCallbackDelivery is issue 13's at-least-once delivery, on the real binary and a
// real CPU: an exec callback that takes a second per notification while the CPU goes offline and
// online in bursts, and the agent is stopped at random moments, first with SIGTERM, then with
// SIGKILL, and started again on the same state file, while the CPU keeps changing. The first
// round is the one issue 13 reports: offline, online, a stop 0.7 s later, while the callback is
// still at the removal.
//
// The callback's records, once the repeats of an ID it had are dropped, alternate per interface
// from the CPU online at the start and end, the CPU being online, with its arrival; every record
// has an ID, new IDs only grow, and an ID given again is the same notification. With SIGTERM,
// callbacks in flight finish (every start has its done) and nothing is given twice.
// HOTPLUG_DELIVERY_SEED replays a run; HOTPLUG_DELIVERY_ROUNDS sets the rounds of each kind (4).
func TestIntegrationCallbackDelivery(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("HOTPLUG_DELIVERY_SEED"), 10, 64); err == nil {
		seed = v
	}
	rounds := 4
	if v, err := strconv.Atoi(os.Getenv("HOTPLUG_DELIVERY_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	t.Logf("seed %d (HOTPLUG_DELIVERY_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(seed, 13))

	dir := t.TempDir()
	state := filepath.Join(dir, "state.json")
	out := filepath.Join(dir, "records")
	cfg := filepath.Join(dir, "config.yaml")
	// Short lines appended with O_APPEND: whole, in order.
	script := fmt.Sprintf(`echo "start $HOTPLUG_ID $HOTPLUG_EVENT $HOTPLUG_SYMBOLIC_LINK" >> %[1]s
sleep 1
echo "done $HOTPLUG_ID" >> %[1]s`, out)
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `log_notifications: false
callbacks:
  - name: slow
    class: processor
    exec: {command: ["/bin/sh", "-c", %q], timeout: 1m}
`, script), 0o600); err != nil {
		t.Fatal(err)
	}
	online := true
	set := func(on bool) {
		testenv.SetCPUOnline(t, cpu, on)
		online = on
	}
	set(true)
	// stops marks, by the number of records written when it came, each stop.
	stops := map[int]string{}
	mark := func(kind string) {
		b, _ := os.ReadFile(out)
		stops[strings.Count(string(b), "\n")] = kind
	}
	burst := func() {
		for range 1 + rng.IntN(3) {
			set(!online)
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		}
	}

	a := startAgent(t, "--config.file="+cfg, "--path.state="+state)
	// Issue 13's report: offline, online, stop 0.7 s later.
	set(false)
	set(true)
	time.Sleep(700 * time.Millisecond)
	mark("term")
	a.stop(t)
	a = startAgent(t, "--config.file="+cfg, "--path.state="+state)
	for k := range 2 * rounds {
		kind := "term"
		if k >= rounds {
			kind = "kill"
		}
		burst()
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		mark(kind)
		if kind == "term" {
			a.stop(t)
		} else {
			a.cmd.Process.Signal(syscall.SIGKILL)
			a.cmd.Wait()
		}
		if rng.IntN(2) == 0 {
			burst() // changes while the agent is down
		}
		a = startAgent(t, "--config.file="+cfg, "--path.state="+state)
	}
	set(true) // the truth at the end: online
	// Wait until the callback has had the arrival and nothing more comes.
	var recs []deliveryRecord
	// The callback takes a second a notification, and may be some behind.
	for deadline := time.Now().Add(time.Minute + time.Duration(rounds)*5*time.Second); ; time.Sleep(500 * time.Millisecond) {
		recs = readDeliveryRecords(t, out, stops)
		kept, _, _ := keptStarts(recs)
		last := len(recs)
		time.Sleep(1500 * time.Millisecond)
		settled := len(readDeliveryRecords(t, out, stops)) == last && len(recs) > 0 && !recs[len(recs)-1].start
		if settled && len(kept) > 0 && kept[len(kept)-1].event == "arrival" {
			break
		}
		if time.Now().After(deadline) {
			break // checked below
		}
	}
	a.stop(t)
	recs = readDeliveryRecords(t, out, stops)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(out)
			t.Logf("records:\n%s", b)
		}
	})

	kept, repeats, problems := keptStarts(recs)
	for _, p := range problems {
		t.Error(p)
	}
	view := true // online at the start
	for _, r := range kept {
		switch {
		case r.link != link:
			t.Errorf("a record of %s, which did not change", r.link)
		case r.event == "arrival" && view, r.event == "removal" && !view:
			t.Errorf("ID %d: %s of %s, which the callback had last seen %s", r.id, r.event, r.link, map[bool]string{true: "arrive", false: "go"}[view])
		}
		view = r.event == "arrival"
	}
	if !view {
		t.Errorf("the callback's last notification of %s is a removal; the CPU is online", link)
	}
	// With SIGTERM, callbacks in flight finish, and nothing is given twice: up to the first
	// SIGKILL no ID starts twice, and each that started before the last SIGTERM is done.
	lastTerm, firstKill := 0, len(recs)
	for k, kind := range stops {
		switch {
		case kind == "term":
			lastTerm = max(lastTerm, k)
		case kind == "kill":
			firstKill = min(firstKill, k)
		}
	}
	started, done := map[uint64]int{}, map[uint64]bool{}
	for k, r := range recs[:min(firstKill, len(recs))] {
		switch {
		case !r.start:
			done[r.id] = true
		case started[r.id] > 0:
			t.Errorf("record %d: ID %d given again before any SIGKILL", k, r.id)
		default:
			started[r.id] = k + 1
		}
	}
	for id, at := range started {
		if at-1 < lastTerm && !done[id] {
			t.Errorf("ID %d started before a SIGTERM and never ended: the stop cut it short", id)
		}
	}
	t.Logf("%d records: %d notifications, %d given again (after kills); %d stops", len(recs), len(kept), repeats, len(stops))
	if len(kept) < 2*rounds {
		t.Errorf("only %d notifications for %d rounds of changes", len(kept), 2*rounds)
	}
}

// readDeliveryRecords parses the callback's records, marking each with the last stop before it.
func readDeliveryRecords(t *testing.T, path string, stops map[int]string) []deliveryRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var recs []deliveryRecord
	stop := ""
	for k, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if s, ok := stops[k]; ok && (stop != "kill") {
			stop = s
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		var r deliveryRecord
		var err error
		switch {
		case f[0] == "start" && len(f) == 4:
			r = deliveryRecord{start: true, event: f[2], link: f[3]}
			r.id, err = strconv.ParseUint(f[1], 10, 64)
		case f[0] == "done" && len(f) == 2:
			r.id, err = strconv.ParseUint(f[1], 10, 64)
		default:
			err = fmt.Errorf("bad record")
		}
		if err != nil || r.id == 0 {
			t.Fatalf("record %d %q: %v (want an ID)", k, line, err)
		}
		r.stop = stop
		recs = append(recs, r)
	}
	return recs
}

// keptStarts returns the start records without the repeats of an ID, how many repeats there
// were, and what is wrong: a repeat that is not the same notification, a new ID below one before.
func keptStarts(recs []deliveryRecord) (kept []deliveryRecord, repeats int, problems []string) {
	seen := map[uint64]deliveryRecord{}
	var last uint64
	for _, r := range recs {
		if !r.start {
			continue
		}
		if prev, ok := seen[r.id]; ok {
			if prev.event != r.event || prev.link != r.link {
				problems = append(problems, fmt.Sprintf("ID %d names two notifications: %s %s and %s %s", r.id, prev.event, prev.link, r.event, r.link))
			}
			repeats++
			continue
		}
		if r.id < last {
			problems = append(problems, fmt.Sprintf("new ID %d after ID %d", r.id, last))
		}
		last = r.id
		seen[r.id] = r
		kept = append(kept, r)
	}
	return kept, repeats, problems
}
