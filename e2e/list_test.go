//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// expandBlocks turns a block list ("32-35", "7") into its block numbers.
func expandBlocks(t testing.TB, s string) []int {
	t.Helper()
	lo, hi, found := strings.Cut(s, "-")
	a, err := strconv.Atoi(lo)
	if err != nil {
		t.Fatalf("block list %q", s)
	}
	b := a
	if found {
		if b, err = strconv.Atoi(hi); err != nil {
			t.Fatalf("block list %q", s)
		}
	}
	var out []int
	for n := a; n <= b; n++ {
		out = append(out, n)
	}
	return out
}

// checkListInGuest runs `hotplug-agent list`, lsmem and lscpu in the guest and compares them:
// every block's state, node and zones as lsmem prints them (list also splits ranges where a
// memory device begins, so blocks, not ranges, are compared), and lscpu's CPU lists.
func checkListInGuest(t testing.TB, g *sysGuest) {
	t.Helper()
	list := g.exec(t, nil, "hotplug-agent", "list")
	if list.ExitCode != 0 {
		t.Fatalf("hotplug-agent list in the guest: %s", list)
	}
	lsmem := g.exec(t, nil, "lsmem", "--json", "-o", "RANGE,STATE,BLOCK,NODE,ZONES")
	lscpu := g.exec(t, nil, "lscpu")
	if lsmem.ExitCode != 0 || lscpu.ExitCode != 0 {
		t.Fatalf("lsmem or lscpu in the guest: %s; %s", lsmem, lscpu)
	}
	var doc struct {
		Memory []struct {
			State, Block, Zones string
			Node                json.RawMessage
		}
	}
	if err := json.Unmarshal([]byte(lsmem.Stdout), &doc); err != nil {
		t.Fatalf("lsmem --json in the guest: %v\n%s", err, lsmem.Stdout)
	}
	want := map[int]string{}
	for _, m := range doc.Memory {
		for _, b := range expandBlocks(t, m.Block) {
			want[b] = fmt.Sprintf("%s node %s %s", m.State, strings.Trim(string(m.Node), `"`), m.Zones)
		}
	}
	got := map[int]string{}
	summary := map[string]string{}
	inRanges := false
	for _, l := range strings.Split(list.Stdout, "\n") {
		f := strings.Fields(l)
		switch {
		case strings.HasPrefix(l, "RANGE "):
			inRanges = true
		case inRanges && len(f) == 7:
			for _, b := range expandBlocks(t, f[3]) {
				got[b] = fmt.Sprintf("%s node %s %s", f[2], f[4], f[5])
			}
		case inRanges:
			inRanges = false
		case strings.Contains(l, ":"):
			k, v, _ := strings.Cut(l, ":")
			summary[k] = strings.TrimSpace(v)
		}
	}
	for b, w := range want {
		if got[b] != w {
			t.Errorf("memory%d: list says %q, lsmem %q", b, got[b], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("list shows %d blocks, lsmem %d:\n%s\nlsmem:\n%s", len(got), len(want), list.Stdout, lsmem.Stdout)
	}
	var cpuLines []string
	for _, l := range strings.Split(lscpu.Stdout, "\n") {
		k, v, ok := strings.Cut(l, ":")
		v = strings.TrimSpace(v)
		if ok && (k == "CPU(s)" || k == "On-line CPU(s) list" || k == "Off-line CPU(s) list" || (strings.HasPrefix(k, "NUMA node") && strings.HasSuffix(k, "CPU(s)"))) {
			cpuLines = append(cpuLines, k+": "+v)
			if summary[k] != v {
				t.Errorf("%s: list prints %q, lscpu %q", k, summary[k], v)
			}
		}
	}
	if len(cpuLines) < 2 {
		t.Errorf("lscpu in the guest printed %d of the CPU lines compared:\n%s", len(cpuLines), lscpu.Stdout)
	}
	if t.Failed() {
		t.Logf("hotplug-agent list in the guest:\n%s", list.Stdout)
	} else {
		t.Logf("hotplug-agent list in the guest agrees with lsmem on %d blocks in %d lsmem ranges, and with lscpu: %s",
			len(want), len(doc.Memory), strings.Join(cpuLines, "; "))
	}
}
