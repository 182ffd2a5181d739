//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// lsmemRange is a line of `lsmem --json -o RANGE,STATE,BLOCK,NODE,ZONES`, and of list's ranges.
type lsmemRange struct {
	Range, State, Block, Node, Zones string
}

// lsmemRanges runs lsmem on this machine.
func lsmemRanges(t *testing.T) []lsmemRange {
	t.Helper()
	exe := testenv.Tool(t, "lsmem", "Debian package util-linux")
	out, err := exec.Command(exe, "--json", "-o", "RANGE,STATE,BLOCK,NODE,ZONES").Output()
	if err != nil {
		testenv.Unavailable(t, "lsmem cannot read this machine's memory blocks: %v", err)
	}
	var doc struct {
		Memory []struct {
			Range, State, Block, Zones string
			Node                       json.RawMessage
		}
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("lsmem --json: %v\n%s", err, out)
	}
	var rs []lsmemRange
	for _, m := range doc.Memory {
		rs = append(rs, lsmemRange{m.Range, m.State, m.Block, strings.Trim(string(m.Node), `"`), m.Zones})
	}
	return rs
}

// listOutput runs `hotplug-agent list` on this machine and returns its summary lines (label ->
// value) and its ranges (the DEVICE column left out: lsmem does not know devices).
func listOutput(t *testing.T) (map[string]string, []lsmemRange, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"list"}, &stdout, &stderr); code != 0 {
		t.Fatalf("list: exit %d: %s", code, stderr.String())
	}
	summary := map[string]string{}
	var ranges []lsmemRange
	inRanges := false
	for _, l := range strings.Split(stdout.String(), "\n") {
		f := strings.Fields(l)
		switch {
		case strings.HasPrefix(l, "RANGE "):
			inRanges = true
		case inRanges && len(f) == 7:
			ranges = append(ranges, lsmemRange{f[0], f[2], f[3], f[4], f[5]})
		case inRanges:
			inRanges = false
		case strings.Contains(l, ":") && !strings.HasPrefix(l, "hot-add"):
			k, v, _ := strings.Cut(l, ":")
			summary[k] = strings.TrimSpace(v)
		}
	}
	return summary, ranges, stdout.String()
}

// lscpuFields runs lscpu on this machine and returns its lines as label -> value.
func lscpuFields(t *testing.T) map[string]string {
	t.Helper()
	exe := testenv.Tool(t, "lscpu", "Debian package util-linux")
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lscpu: %v", err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// compareWithLsmemLscpu checks list against lsmem (every range: its blocks, state, node and
// zones) and lscpu (the CPU count, the online and offline lists, each node's CPUs).
func compareWithLsmemLscpu(t *testing.T) {
	t.Helper()
	want := lsmemRanges(t)
	lscpu := lscpuFields(t)
	summary, got, out := listOutput(t)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("list's ranges against lsmem's (-lsmem +list):\n%s\nlist printed:\n%s", diff, out)
	}
	for k, v := range lscpu {
		if k == "CPU(s)" || k == "On-line CPU(s) list" || k == "Off-line CPU(s) list" || (strings.HasPrefix(k, "NUMA node") && strings.HasSuffix(k, "CPU(s)")) {
			if summary[k] != v {
				t.Errorf("%s: list prints %q, lscpu %q\nlist printed:\n%s", k, summary[k], v, out)
			}
		}
	}
	for k := range summary {
		if strings.Contains(k, "CPU(s)") {
			if _, ok := lscpu[k]; !ok {
				t.Errorf("list prints %q, which lscpu does not", k)
			}
		}
	}
	// The memory totals, as lsmem prints them.
	lsmem, err := exec.Command("lsmem", "--summary=only").Output()
	if err != nil {
		t.Fatalf("lsmem --summary=only: %v", err)
	}
	for _, l := range strings.Split(string(lsmem), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if got, _, _ := strings.Cut(summary[k], " ("); got != v {
			t.Errorf("%s: list prints %q, lsmem %q", k, summary[k], v)
		}
	}
}

// TestIntegrationListAgreesWithLsmemLscpu: on this machine, list's ranges are lsmem's and its
// CPU lists lscpu's, with every CPU online and with one offline (an offline CPU leaves its
// node's list, as lscpu shows).
func TestIntegrationListAgreesWithLsmemLscpu(t *testing.T) {
	t.Run("as it is", compareWithLsmemLscpu)
	t.Run("a CPU offline", func(t *testing.T) {
		testenv.RequireRoot(t)
		cpu := testenv.HotpluggableCPU(t)
		testenv.LockCPUs(t)
		testenv.SetCPUOnline(t, cpu, false)
		compareWithLsmemLscpu(t)
		summary, _, out := listOutput(t)
		if !strings.Contains(","+summary["Off-line CPU(s) list"]+",", ","+strconv.Itoa(cpu)+",") {
			t.Errorf("cpu%d is offline; list:\n%s", cpu, out)
		}
	})
}

// openPTY opens a pseudo-terminal and returns its terminal side (the side a program writes to).
func openPTY(t *testing.T) *os.File {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		testenv.Unavailable(t, "no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}

// TestListColour: list colours the states (and monitor its lines) on a terminal, not in a pipe or a file, and not with
// NO_COLOR or TERM=dumb; coloured, the columns still line up.
func TestListColour(t *testing.T) {
	tty := openPTY(t)
	file, err := os.Create(t.TempDir() + "/out")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for _, tt := range []struct {
		name     string
		w        *os.File
		noColor  string
		term     string
		coloured bool
	}{
		{"terminal", tty, "", "xterm-256color", true},
		{"terminal, NO_COLOR", tty, "1", "xterm-256color", false},
		{"terminal, TERM=dumb", tty, "", "dumb", false},
		{"file", file, "", "xterm-256color", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NO_COLOR", tt.noColor)
			t.Setenv("TERM", tt.term)
			if got := colours(tt.w).on; got != tt.coloured {
				t.Errorf("coloured %v; want %v", got, tt.coloured)
			}
		})
	}
	sys := testenv.SysfsFixture(t, "../..")
	ifaces := fixtureInterfaces(t, sys)
	var plain, coloured bytes.Buffer
	if err := printSummary(&plain, ifaces, painter{}); err != nil {
		t.Fatal(err)
	}
	if err := printSummary(&coloured, ifaces, painter{on: true}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plain.String(), "\x1b") {
		t.Errorf("plain output has escape sequences:\n%q", plain.String())
	}
	if !strings.Contains(coloured.String(), sgrGreen+"online"+sgrReset) {
		t.Errorf("coloured output has no green online:\n%q", coloured.String())
	}
	if got := (painter{on: true}).event("ARRIVAL", true); got != sgrGreen+"ARRIVAL"+sgrReset {
		t.Errorf("a coloured arrival line: %q", got)
	}
	if got := (painter{}).event("REMOVAL", false); got != "REMOVAL" {
		t.Errorf("a plain removal line: %q", got)
	}
	stripped := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(coloured.String(), "")
	if stripped != plain.String() {
		t.Errorf("coloured output, escapes removed, differs from the plain one:\n%s\nplain:\n%s", stripped, plain.String())
	}
}

// fixtureInterfaces lists the interfaces of a sysfs fixture, as list reads them.
func fixtureInterfaces(t *testing.T, root string) []notify.Interface {
	t.Helper()
	fs, err := sysfs.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	ifaces, err := state.Present(fs)
	if err != nil {
		t.Fatal(err)
	}
	return ifaces
}
