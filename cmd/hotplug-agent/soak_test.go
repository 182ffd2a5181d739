//go:build linux

package main

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// TestIntegrationSoakRealUevents is guarantee 7 on the real kernel: 100,000 real uevents (synthetic
// "change" uevents on cpu0, which announce nothing) through the running binary. Its resident
// memory may grow by less than 5% between the 10% and 100% marks, and its goroutines and open
// file descriptors must be what they were before.
func TestIntegrationSoakRealUevents(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.LockCPUs(t)
	n := 100000
	if testing.Short() {
		n = 10000
	}
	// The binary as shipped: the race detector's shadow memory would be measured otherwise.
	plain := filepath.Join(t.TempDir(), "hotplug-agent")
	if out, err := exec.Command("go", "build", "-o", plain, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	saved := binary
	binary = plain
	// Collect often: what is measured is memory that stays, not garbage awaiting a collection
	// that GOGC=100 lets grow to the size of the live heap.
	t.Setenv("GOGC", "10")
	a := startAgent(t, "--log.level=info")
	binary = saved
	const sample = `hotplug_agent_uevents_total{action="change",subsystem="cpu"}`
	count := func() float64 {
		m := a.get(t, "/metrics")
		if !strings.Contains(m, sample+" ") {
			return 0
		}
		return metric(t, m, sample)
	}
	baseline := count()
	// Counted over a connection of their own, with no pooled one open, once the count settles:
	// the test's own HTTP connections come and go with a goroutine and a descriptor each.
	settled := func(name string) float64 {
		var v float64
		for range 20 {
			http.DefaultClient.CloseIdleConnections()
			time.Sleep(50 * time.Millisecond)
			req, _ := http.NewRequest("GET", a.base+"/metrics", nil)
			req.Close = true
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if w := metric(t, string(b), name); w == v {
				return v
			} else {
				v = w
			}
		}
		return v
	}
	goroutines := settled("go_goroutines")
	fds := settled("process_open_fds")

	var rss10 int64
	for i := range n {
		if err := testenv.Synthesize("/sys/devices/system/cpu/cpu0", "change"); err != nil {
			t.Fatal(err)
		}
		if i+1 == n/10 || i+1 == n {
			// Wait until the agent has read them all.
			want := baseline + float64(i+1)
			for deadline := time.Now().Add(60 * time.Second); count() < want; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the agent read %v of %v uevents within 60 s", count()-baseline, i+1)
				}
			}
			if i+1 == n/10 {
				rss10 = settledRSS(t, a.cmd.Process.Pid)
			}
		}
	}
	rss100 := settledRSS(t, a.cmd.Process.Pid)
	growth := float64(rss100-rss10) / float64(rss10) * 100
	fdsAfter, goroutinesAfter := settled("process_open_fds"), settled("go_goroutines")
	m := a.get(t, "/metrics")
	t.Logf("%d real uevents: RSS %d KiB at 10%%, %d KiB at 100%% (%+.1f%%); goroutines %v -> %v; fds %v -> %v; overflows %v",
		n, rss10>>10, rss100>>10, growth, goroutines, goroutinesAfter, fds, fdsAfter,
		metric(t, m, "hotplug_agent_netlink_overflows_total"))
	if growth >= 5 {
		t.Errorf("resident memory grew by %.1f%% between the 10%% and 100%% marks; want under 5%%", growth)
	}
	// One more than before is the test's own connection, still being torn down; a leak grows
	// with the events.
	if goroutinesAfter > goroutines+1 {
		t.Errorf("goroutines: %v before, %v after", goroutines, goroutinesAfter)
	}
	if fdsAfter > fds+1 {
		t.Errorf("open file descriptors: %v before, %v after", fds, fdsAfter)
	}
	if v := metric(t, m, "hotplug_agent_netlink_overflows_total"); v != 0 {
		t.Errorf("%v overflows with the default receive buffer; want none", v)
	}
	a.stop(t)
}

func procRSS(t *testing.T, pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// settledRSS is pid's resident memory at rest: the median of 20 readings over a second. A
// single reading catches the process between a collection and the scavenger's return of the
// freed pages, or just after it, and on a 20 MiB process either is several per cent: the
// median of both marks compares like with like.
func settledRSS(t *testing.T, pid int) int64 {
	readings := make([]int64, 20)
	for k := range readings {
		if k > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		readings[k] = procRSS(t, pid)
	}
	slices.Sort(readings)
	return readings[len(readings)/2]
}
