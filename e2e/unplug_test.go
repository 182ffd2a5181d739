//go:build linux

package e2e

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/qemu"
)

// unplugRun is one `hotplug-agent offline` run in the guest, as e2e/testdata/unplug-guest
// reports it.
type unplugRun struct {
	Name      string   `json:"name"`
	Args      []string `json:"args"`
	Code      int      `json:"code"`
	Stdout    string   `json:"stdout"`
	Stderr    string   `json:"stderr"`
	States    []string `json:"states"`
	ElapsedMS int64    `json:"elapsed_ms"`
}

var unplugResultRE = regexp.MustCompile(`UNPLUG result (\{.*\})`)

// TestUnplugWithProgress: `hotplug-agent offline memory-device`, run in a guest as a user would,
// on three hot-added pc-dimms. The one in ZONE_MOVABLE goes block by block, a progress line each,
// and the command says it freed 512 MiB. The one in ZONE_NORMAL, filled with pipe pages, is
// refused: the refused block's line gives the kernel's reason (an unmovable page and its page
// frame), the block taken offline first is online again, exit status 1. The third holds pages a
// pipe keeps (vmsplice), so the kernel retries them for ever: --timeout=10s stops the kernel and
// the agent puts the device back online, exit status 3; so does Ctrl-C (SIGINT). Once the pipe
// lets go, the same device goes.
func TestUnplugWithProgress(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU end-to-end test; not with -short")
	}
	prepare(t)
	root, err := qemu.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	driver := filepath.Join(t.TempDir(), "unplug-guest")
	if err := qemu.BuildStatic(ctxFor(t, 3*time.Minute), root, "./e2e/testdata/unplug-guest", driver); err != nil {
		t.Fatal(err)
	}
	g := bootGuest(t, guestOptions{
		name:    "unplug-with-progress",
		append:  []string{"memhp_default_state=offline"},
		config:  "log_notifications: true\n",
		helpers: []string{driver},
	}, artefactDir(t, t.Name(), "unplug-with-progress"))
	defer g.stop()
	ok := false
	defer func() {
		if !ok || t.Failed() {
			g.logArtefacts(t)
		}
	}()
	ctx := ctxFor(t, 8*time.Minute)
	if err := g.vm.WaitSerial(ctx, "UNPLUG ready"); err != nil {
		t.Fatalf("the guest's driver did not start: %v", err)
	}
	for _, d := range []struct {
		id   string
		size uint64
	}{{"dimm-normal", 256 * mib}, {"dimm-movable", 512 * mib}, {"dimm-held", 256 * mib}} {
		if err := g.vm.AddDIMM(ctx, d.id, d.size); err != nil {
			t.Fatal(err)
		}
	}
	for !strings.Contains(g.vm.Serial(), "UNPLUG done") {
		if m := regexp.MustCompile(`UNPLUG failed: .*`).FindString(g.vm.Serial()); m != "" {
			t.Fatalf("the guest's driver: %s", m)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the guest's driver did not finish: %v", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	runs := map[string]unplugRun{}
	for _, m := range unplugResultRE.FindAllStringSubmatch(g.vm.Serial(), -1) {
		var r unplugRun
		if err := json.Unmarshal([]byte(m[1]), &r); err != nil {
			t.Fatalf("the driver's line %q: %v", m[1], err)
		}
		runs[r.Name] = r
		t.Logf("hotplug-agent offline %s: exit %d after %d ms (the guest's clock)\nstdout:\n%s\nstderr:\n%s\nblocks after: %s",
			strings.Join(r.Args, " "), r.Code, r.ElapsedMS, r.Stdout, r.Stderr, strings.Join(r.States, " "))
	}
	ok = true
	describe := func(r unplugRun) string {
		return "`hotplug-agent offline " + strings.Join(r.Args, " ") + "`"
	}
	lines := func(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

	// ZONE_MOVABLE: highest block first, a line each, 512 MiB freed.
	mv := runs["movable"]
	wantProgress := regexp.MustCompile(`^memory-device PNP0C80:01: memory (\d+) offline \((\d) of 4, (\d+) MiB freed, \d+ ms\)$`)
	var got []string
	for _, l := range lines(mv.Stderr) {
		if m := wantProgress.FindStringSubmatch(l); m != nil {
			got = append(got, m[1]+" "+m[2]+" "+m[3])
		}
	}
	if want := []string{"37 1 128", "36 2 256", "35 3 384", "34 4 512"}; mv.Code != 0 || !slices.Equal(got, want) ||
		strings.TrimSpace(mv.Stdout) != "memory-device PNP0C80:01: success: 512 MiB freed (4 memory blocks)" {
		t.Errorf("%s: exit %d, progress (block, done, MiB freed) %q, stdout %q; want exit 0, progress %q, and 512 MiB freed",
			describe(mv), mv.Code, got, mv.Stdout, want)
	}
	if !hasStates(mv.States, "34=offline", "35=offline", "36=offline", "37=offline") {
		t.Errorf("blocks after %s: %v; want 34-37 offline", describe(mv), mv.States)
	}

	// ZONE_NORMAL: refused with the kernel's reason; what went first is back.
	nr := runs["normal"]
	refused := regexp.MustCompile(`^memory-device PNP0C80:00: memory (32|33): operation-failed: sysfs: write "offline" to /sys/devices/system/memory/memory(32|33)/state: device or resource busy: the kernel could not move every page out \(memory(32|33) is in zone Normal, which holds kernel allocations that cannot move; kernel: unmovable page at pfn 0x[0-9a-f]+\) \(EBUSY\)$`)
	var refusal string
	for _, l := range lines(nr.Stderr) {
		if refused.MatchString(l) {
			refusal = l
		}
	}
	if nr.Code != 1 || refusal == "" || !strings.Contains(nr.Stdout, "kernel: unmovable page at pfn") ||
		!strings.HasPrefix(nr.Stdout, "memory-device PNP0C80:00: operation-failed: ") {
		t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 1, the refused block with the kernel's reason (an unmovable page)",
			describe(nr), nr.Code, nr.Stdout, nr.Stderr)
	}
	if !hasStates(nr.States, "32=online", "33=online") {
		t.Errorf("blocks after %s: %v; want 32-33 online (the device whole again)", describe(nr), nr.States)
	}

	// Held pages: the deadline and Ctrl-C stop the kernel; the device is online again.
	for _, c := range []struct{ name, why string }{{"timeout", "timed out after 10s"}, {"cancel", "cancelled by the client"}} {
		r := runs[c.name]
		if r.Code != 3 || !strings.HasPrefix(r.Stdout, "memory-device PNP0C80:02: operation-failed: ") || !strings.Contains(r.Stdout, c.why) {
			t.Errorf("%s (%s): exit %d, stdout %q, stderr %q; want exit 3 and the device failed: %s",
				describe(r), c.name, r.Code, r.Stdout, r.Stderr, c.why)
		}
		if !hasStates(r.States, "38=online", "39=online") {
			t.Errorf("blocks after %s (%s): %v; want 38-39 online again", describe(r), c.name, r.States)
		}
	}
	if r := runs["cancel"]; !strings.Contains(r.Stderr, "cancelling") {
		t.Errorf("%s, interrupted: stderr %q; want the notice that it is cancelling", describe(r), r.Stderr)
	}

	// Released: the same device goes.
	rl := runs["released"]
	if rl.Code != 0 || strings.TrimSpace(rl.Stdout) != "memory-device PNP0C80:02: success: 256 MiB freed (2 memory blocks)" ||
		!hasStates(rl.States, "38=offline", "39=offline") {
		t.Errorf("%s once the pipe let go: exit %d, stdout %q, blocks %v; want exit 0, 256 MiB freed, 38-39 offline",
			describe(rl), rl.Code, rl.Stdout, rl.States)
	}
}

// hasStates reports whether states ("32=online" ...) holds each of want.
func hasStates(states []string, want ...string) bool {
	for _, w := range want {
		if !slices.Contains(states, w) {
			return false
		}
	}
	return true
}
