//go:build linux

package callback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

func TestExecEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	t.Setenv("SECRET_OF_THE_AGENT", "must-not-leak")
	cb := Exec{Command: []string{"/bin/sh", "-c", "env > " + out}}.Callback()
	tests := []struct {
		n    notify.Notification
		want []string
	}{
		{cpuNote(), []string{
			"HOTPLUG_EVENT=arrival", "HOTPLUG_EVENT_GUID=cb3a4004-46f0-11d0-b08f-00609713053f",
			"HOTPLUG_INTERFACE_CLASS=processor", "HOTPLUG_INTERFACE_CLASS_GUID=97fadb10-4e33-40ae-359c-8bef029dbdd0",
			"HOTPLUG_SYMBOLIC_LINK=/sys/devices/system/cpu/cpu3", "HOTPLUG_SEQNUM=817", "HOTPLUG_CAUSE=uevent",
			"HOTPLUG_CPU=3", "HOTPLUG_NODE=1", "PATH=" + DefaultPath,
		}},
		{memNote(), []string{
			"HOTPLUG_EVENT=removal", "HOTPLUG_EVENT_GUID=cb3a4005-46f0-11d0-b08f-00609713053f",
			"HOTPLUG_INTERFACE_CLASS=memory", "HOTPLUG_INTERFACE_CLASS_GUID=3fd0f03d-92e0-45fb-b75c-5ed8ffb01021",
			"HOTPLUG_SYMBOLIC_LINK=/sys/devices/system/memory/memory32", "HOTPLUG_SEQNUM=900", "HOTPLUG_CAUSE=resync",
			"HOTPLUG_MEMORY_BLOCK=32", "HOTPLUG_MEMORY_PHYS_START=0x100000000", "HOTPLUG_MEMORY_SIZE=134217728",
			"PATH=" + DefaultPath,
		}},
		{moduleNote(), []string{
			"HOTPLUG_EVENT=arrival", "HOTPLUG_EVENT_GUID=cb3a4004-46f0-11d0-b08f-00609713053f",
			"HOTPLUG_INTERFACE_CLASS=memory", "HOTPLUG_INTERFACE_CLASS_GUID=3fd0f03d-92e0-45fb-b75c-5ed8ffb01021",
			"HOTPLUG_SYMBOLIC_LINK=/sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:00/PNP0C80:00", "HOTPLUG_SEQNUM=950", "HOTPLUG_CAUSE=uevent",
			"HOTPLUG_MEMORY_DEVICE=PNP0C80:00", "HOTPLUG_MEMORY_BLOCKS=32-35", "HOTPLUG_MEMORY_PHYS_START=0x100000000",
			"HOTPLUG_MEMORY_SIZE=536870912", "HOTPLUG_NODE=0", "PATH=" + DefaultPath,
		}},
	}
	tests[0].n.ID = 818
	for k := range tests {
		id := "0"
		if k == 0 {
			id = "818"
		}
		tests[k].want = append(tests[k].want, "HOTPLUG_ID="+id)
	}
	for _, tt := range tests {
		if err := cb(context.Background(), tt.n, nil); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			// The shell adds PWD, SHLVL and _ of its own; the rest must be exactly ours.
			if !strings.HasPrefix(l, "PWD=") && !strings.HasPrefix(l, "SHLVL=") && !strings.HasPrefix(l, "_=") {
				got = append(got, l)
			}
		}
		slices.Sort(got)
		slices.Sort(tt.want)
		if !slices.Equal(got, tt.want) {
			t.Errorf("environment of %s:\n got %q\nwant %q", tt.n.SymbolicLinkName, got, tt.want)
		}
	}
}

// moduleNote is the arrival of a 512 MiB DIMM to a registration with FlagMemoryDevices.
func moduleNote() notify.Notification {
	return notify.NewNotification(notify.GUIDDeviceInterfaceArrival, notify.Interface{
		ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: "/sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:00/PNP0C80:00",
		Number: 32, Node: 0, PhysStart: 0x100000000, Size: 512 << 20, State: "online", Device: "PNP0C80:00", Blocks: "32-35",
	}, 950, time.Now(), notify.CauseUevent)
}

func TestExecFailures(t *testing.T) {
	tests := []struct {
		name    string
		command []string
		want    string
	}{
		{"non-zero exit", []string{"/bin/sh", "-c", "exit 3"}, "exit status 3"},
		{"cannot start", []string{"/nonexistent/hook"}, "exec /nonexistent/hook: /nonexistent/hook: no such file"},
		{"not in PATH", []string{"no-such-hook-anywhere"}, `"no-such-hook-anywhere" is in no directory of the exec PATH`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Exec{Command: tt.command}.Callback()(context.Background(), cpuNote(), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v; want one containing %q", err, tt.want)
			}
		})
	}
}

// TestExecLooksUpDefaultPath: a command named without a slash is looked up in DefaultPath, the
// PATH it runs with, and not in the agent's own PATH; it keeps its name as argv[0].
func TestExecLooksUpDefaultPath(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "agent-only-hook"), []byte("#!/bin/sh\ntouch "+dir+"/ran\n"), 0o755)
	t.Setenv("PATH", dir) // the agent's PATH: neither sh nor cat in it, the hook only there
	out := filepath.Join(dir, "argv0")
	err := Exec{Command: []string{"sh", "-c", "cat /proc/$$/cmdline > " + out}}.Callback()(context.Background(), cpuNote(), nil)
	if err != nil {
		t.Fatalf("sh, in DefaultPath only: %v", err)
	}
	if b, _ := os.ReadFile(out); !strings.HasPrefix(string(b), "sh\x00-c\x00") {
		t.Errorf("argv = %q; want sh as argv[0], as written", b)
	}
	err = Exec{Command: []string{"agent-only-hook"}}.Callback()(context.Background(), cpuNote(), nil)
	if err == nil || !strings.Contains(err.Error(), "is in no directory of the exec PATH") {
		t.Errorf("a command in the agent's PATH only: %v; want it not found", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Error("a command found through the agent's PATH ran")
	}
}

// TestExecTimeoutKillsProcessGroup starts a command that leaves a grandchild behind and overruns
// its timeout: both must be killed, and the callback must return promptly with a timeout error.
func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	cb := Exec{
		Command: []string{"/bin/sh", "-c", "sleep 300 & echo $! > " + pidFile + "; wait"},
		Timeout: 2 * time.Second, // time for the shell to start the grandchild and write its pid
	}.Callback()
	err := cb(context.Background(), cpuNote(), nil)
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("error = %v; want a timeout error", err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	// The grandchild was killed with its group; once reaped by init it is gone. Poll a while.
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if state, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); strings.Contains(string(state), ") Z ") {
			break // killed, waiting for its parent to reap it
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d still alive after the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExecOutputIsCappedAndLogged(t *testing.T) {
	var logs bytes.Buffer
	cb := Exec{
		Command:     []string{"/bin/sh", "-c", "head -c 10000 /dev/zero | tr '\\0' x; echo oops >&2; exit 1"},
		OutputLimit: 100,
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
	}.Callback()
	if err := cb(context.Background(), cpuNote(), nil); err == nil {
		t.Fatal("want the exit status as an error")
	}
	out := logs.String()
	if !strings.Contains(out, strings.Repeat("x", 100)+" [9900 more bytes dropped]") {
		t.Errorf("stdout not capped at 100 bytes with a note of the rest: %s", out)
	}
	if strings.Contains(out, strings.Repeat("x", 101)) {
		t.Errorf("more than 100 bytes of stdout logged")
	}
	if !strings.Contains(out, "stderr=oops") {
		t.Errorf("stderr not logged: %s", out)
	}
}

// TestExecFailureReasonIsLastLine: the reason a failing command gives (a veto's, HOTPLUG_STATUS
// of the others) is the last line it wrote to stderr, after more than OutputLimit of it too;
// not a line from the middle, cut where the limit fell.
func TestExecFailureReasonIsLastLine(t *testing.T) {
	for _, tt := range []struct {
		name, script, want string
	}{
		{"short", `echo checking >&2; echo "refused: pool is pinned" >&2; exit 1`, ": refused: pool is pinned"},
		{"beyond the limit", `i=0; while [ $i -lt 200 ]; do echo "checking pool slot $i ok" >&2; i=$((i+1)); done; echo "refused: pool is pinned" >&2; exit 1`,
			": refused: pool is pinned"},
		{"beyond the limit, no final newline, blank lines before", `i=0; while [ $i -lt 300 ]; do echo "checking pool slot $i ok" >&2; i=$((i+1)); done; printf 'refused\n\n\nno room' >&2; exit 1`,
			": no room"},
		{"beyond the limit, a last line longer than the tail", `head -c 5000 /dev/zero | tr '\0' a >&2; printf '\n' >&2; head -c 1000 /dev/zero | tr '\0' b >&2; printf 'END\n' >&2; exit 1`,
			": ..." + strings.Repeat("b", 197) + "..."},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Exec{Command: []string{"/bin/sh", "-c", tt.script}}.Callback()(context.Background(), cpuNote(), nil)
			if err == nil || !strings.HasSuffix(err.Error(), "exit status 1"+tt.want) {
				t.Errorf("error = %v; want it to end %q", err, "exit status 1"+tt.want)
			}
		})
	}
}

// TestCappedBufferLastLine: the last line is found in the tail however the output was cut into
// writes, and a line the tail holds only the end of is never taken for a whole one.
func TestCappedBufferLastLine(t *testing.T) {
	long := strings.Repeat("checking pool slot ok\n", 20) // 440 bytes
	for _, tt := range []struct {
		name, out, want string
	}{
		{"within the limit", "a\nb\n", "b"},
		{"within the limit, the last line longer than the tail", strings.Repeat("x", 300) + "\n", strings.Repeat("x", 200) + "..."},
		{"beyond the limit", long + "refused\n\n", "refused"},
		{"beyond the limit, no final newline", long + "refused", "refused"},
		{"beyond the limit, the first line in the tail cut", long + strings.Repeat("y", 50) + "\n  \n", strings.Repeat("y", 50)},
		{"beyond the limit, only a cut line in the tail", long + strings.Repeat("z", 130) + "END\n", "..." + strings.Repeat("z", 124) + "END"},
	} {
		for _, chunk := range []int{1, 7, 64, 1 << 20} {
			t.Run(fmt.Sprintf("%s/%d", tt.name, chunk), func(t *testing.T) {
				c := &cappedBuffer{limit: 400, tail: 128}
				for s := tt.out; s != ""; {
					n := min(chunk, len(s))
					if w, err := c.Write([]byte(s[:n])); w != n || err != nil {
						t.Fatalf("Write = %d, %v; want %d", w, err, n)
					}
					s = s[n:]
				}
				if got := c.lastLine(); got != tt.want {
					t.Errorf("lastLine = %q; want %q", got, tt.want)
				}
				if len(c.end) > 2*c.tail {
					t.Errorf("%d bytes kept for a tail of %d", len(c.end), c.tail)
				}
			})
		}
	}
}

func TestExecCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	// Returning at all proves the kill: the command would sleep for 300 s.
	err := Exec{Command: []string{"/bin/sleep", "300"}}.Callback()(ctx, cpuNote(), nil)
	if err == nil {
		t.Fatal("a command cut short by its context must report an error")
	}
}

func TestLogLine(t *testing.T) {
	var buf bytes.Buffer
	Log(slog.New(slog.NewJSONHandler(&buf, nil)))(context.Background(), memNote(), nil)
	for _, want := range []string{`"event":"removal"`, `"interface_class":"memory"`,
		`"interface_class_guid":"3fd0f03d-92e0-45fb-b75c-5ed8ffb01021"`, `"symbolic_link":"/sys/devices/system/memory/memory32"`,
		`"memory_block":32`, `"phys_start":"0x100000000"`, `"seqnum":900`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log line lacks %s: %s", want, buf.String())
		}
	}
}

func TestNewLimiter(t *testing.T) {
	tests := []struct{ n, want int }{{-1, 0}, {0, 0}, {1, 1}, {8, 8}}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			l := NewLimiter(tt.n)
			if got := l.Limit(); got != tt.want || (tt.want == 0) != (l == nil) {
				t.Errorf("NewLimiter(%d).Limit() = %d (nil %v); want %d, nil for no limit", tt.n, got, l == nil, tt.want)
			}
			if l.Running() != 0 || l.Waiting() != 0 {
				t.Errorf("a new Limiter has %d running, %d waiting", l.Running(), l.Waiting())
			}
		})
	}
}

// gatedScript is a command line that marks itself running in dir/running, writes how many
// commands it sees running there to dir/counts/<pid>, waits until dir/go exists, and unmarks.
// It also ends when dir is removed, so that a failed test leaves no process behind.
func gatedScript(dir string) []string {
	return []string{"/bin/sh", "-c", `d=$1; touch "$d/running/$$"; ls "$d/running" | wc -l > "$d/counts/$$"
while [ -d "$d/running" ] && [ ! -e "$d/go" ]; do sleep 0.01; done; rm -f "$d/running/$$"`, "gated", dir}
}

// waitFor polls cond until it is true, failing t if that takes longer than a minute (a hang, not
// a measurement).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after a minute", what)
		}
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestExecLimiter runs six callbacks of two exec configurations that share a limit of two: at no
// moment do more than two of their commands run, the other four wait, and all six run in the end.
func TestExecLimiter(t *testing.T) {
	const limit, calls = 2, 6
	dir := t.TempDir()
	for _, sub := range []string{"running", "counts"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	lim := NewLimiter(limit)
	cbs := []notify.Callback{
		Exec{Command: gatedScript(dir), Limiter: lim}.Callback(),
		Exec{Command: gatedScript(dir), Timeout: time.Minute, Limiter: lim}.Callback(),
	}
	errs := make(chan error, calls)
	for k := range calls {
		go func() { errs <- cbs[k%len(cbs)](context.Background(), cpuNote(), nil) }()
	}
	running := filepath.Join(dir, "running")
	waitFor(t, fmt.Sprintf("%d commands running and %d waiting", limit, calls-limit), func() bool {
		if n := countFiles(t, running); n > limit {
			t.Fatalf("%d commands running at once with a limit of %d", n, limit)
		}
		return countFiles(t, running) == limit && lim.Waiting() == calls-limit
	})
	if got := lim.Running(); got != limit {
		t.Errorf("Limiter.Running() = %d with %d commands started; want %d", got, limit, limit)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for range calls {
		if err := <-errs; err != nil {
			t.Errorf("callback: %v", err)
		}
	}
	counts, err := filepath.Glob(filepath.Join(dir, "counts", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != calls {
		t.Errorf("%d commands ran; want %d", len(counts), calls)
	}
	for _, p := range counts {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || n > limit {
			t.Errorf("a command saw %q commands running; want at most %d", b, limit)
		}
	}
	if lim.Running() != 0 || lim.Waiting() != 0 {
		t.Errorf("after every callback returned: %d running, %d waiting; want 0, 0", lim.Running(), lim.Waiting())
	}
}

// TestExecLimiterWaitRespectsContext: a callback waiting for a slot returns when its context
// ends, without running its command, and slots are given back on every path out of a callback.
func TestExecLimiterWaitRespectsContext(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"running", "counts"} {
		os.Mkdir(filepath.Join(dir, sub), 0o700)
	}
	lim := NewLimiter(1)
	holder := make(chan error, 1)
	go func() {
		holder <- Exec{Command: gatedScript(dir), Limiter: lim}.Callback()(context.Background(), cpuNote(), nil)
	}()
	waitFor(t, "the first command to run", func() bool { return countFiles(t, filepath.Join(dir, "running")) == 1 })

	ran := filepath.Join(dir, "second-ran")
	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan error, 1)
	go func() {
		second <- Exec{Command: []string{"/bin/touch", ran}, Limiter: lim}.Callback()(ctx, cpuNote(), nil)
	}()
	waitFor(t, "the second callback to wait for a slot", func() bool { return lim.Waiting() == 1 })
	cancel()
	err := <-second
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "waiting for one of the 1 process slots") {
		t.Errorf("callback cancelled while waiting: %v; want an error saying it waited for a slot, wrapping context.Canceled", err)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Errorf("the command of a callback cancelled while waiting ran")
	}

	os.WriteFile(filepath.Join(dir, "go"), nil, 0o600)
	if err := <-holder; err != nil {
		t.Errorf("the command holding the slot: %v", err)
	}
	// A failed start, a non-zero exit and a timeout each give their slot back: with a limit of
	// one, each call below would otherwise wait until the guard's deadline.
	for _, cmd := range [][]string{{"/nonexistent/hook"}, {"/bin/sh", "-c", "exit 3"}, {"/bin/sleep", "60"}} {
		guard, stop := context.WithTimeout(context.Background(), time.Minute)
		err := Exec{Command: cmd, Timeout: 100 * time.Millisecond, Limiter: lim}.Callback()(guard, cpuNote(), nil)
		stop()
		if err == nil || strings.Contains(err.Error(), "process slots") {
			t.Errorf("%s: %v; want the command's own failure", cmd[0], err)
		}
	}
	if lim.Running() != 0 || lim.Waiting() != 0 {
		t.Errorf("at the end: %d running, %d waiting; want 0, 0", lim.Running(), lim.Waiting())
	}
}
