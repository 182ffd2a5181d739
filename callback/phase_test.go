//go:build linux

package callback

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// envOf runs cb's command, which writes its environment to out, and returns the HOTPLUG_ lines.
func hotplugEnv(t *testing.T, out string) []string {
	t.Helper()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.HasPrefix(l, "HOTPLUG_") {
			got = append(got, l)
		}
	}
	slices.Sort(got)
	return got
}

func TestExecChangeEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	cb := Exec{Command: []string{"/bin/sh", "-c", "env > " + out}}.ChangeCallback()
	iface := cpuNote().Interface
	iface.State = "offline"
	n := notify.ChangeNotification{State: notify.AddFailure, InterfaceClassGUID: iface.ClassGUID, SymbolicLinkName: iface.SymbolicLink,
		Interface: iface, Cause: notify.CauseUevent, Seqnum: 812, Status: errors.New("vetoed by pool\nat add_start")}
	if err := cb(context.Background(), n, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"HOTPLUG_CAUSE=uevent", "HOTPLUG_CPU=3", "HOTPLUG_EVENT=add_failure",
		"HOTPLUG_INTERFACE_CLASS=processor", "HOTPLUG_INTERFACE_CLASS_GUID=97fadb10-4e33-40ae-359c-8bef029dbdd0",
		"HOTPLUG_NODE=1", "HOTPLUG_PHASE=add_failure", "HOTPLUG_SEQNUM=812",
		"HOTPLUG_STATUS=vetoed by pool at add_start", "HOTPLUG_SYMBOLIC_LINK=/sys/devices/system/cpu/cpu3",
	}
	if got := hotplugEnv(t, out); !slices.Equal(got, want) {
		t.Errorf("environment:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestExecTargetEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	cb := Exec{Command: []string{"/bin/sh", "-c", "env > " + out}}.TargetCallback()
	iface := memNote().Interface
	n := notify.TargetNotification{Version: 1, Event: notify.GUIDTargetDeviceRemoveCancelled, SymbolicLinkName: iface.SymbolicLink,
		Interface: iface, Requested: true, Requester: notify.Requester{UID: 0, PID: 4711},
		Status: fmt.Errorf("write offline: %w", syscall.EBUSY)}
	if err := cb(context.Background(), n, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"HOTPLUG_EVENT=remove_cancelled", "HOTPLUG_EVENT_GUID=cb3a4007-46f0-11d0-b08f-00609713053f",
		"HOTPLUG_INTERFACE_CLASS=memory", "HOTPLUG_INTERFACE_CLASS_GUID=3fd0f03d-92e0-45fb-b75c-5ed8ffb01021",
		"HOTPLUG_MEMORY_BLOCK=32", "HOTPLUG_MEMORY_PHYS_START=0x100000000", "HOTPLUG_MEMORY_SIZE=134217728",
		"HOTPLUG_PHASE=remove_cancelled", "HOTPLUG_REQUESTED=1", "HOTPLUG_REQUESTER_PID=4711", "HOTPLUG_REQUESTER_UID=0",
		"HOTPLUG_SEQNUM=0", "HOTPLUG_STATUS=write offline: device or resource busy",
		"HOTPLUG_SYMBOLIC_LINK=/sys/devices/system/memory/memory32",
	}
	if got := hotplugEnv(t, out); !slices.Equal(got, want) {
		t.Errorf("environment:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	n.Requested, n.Event, n.Status = false, notify.GUIDTargetDeviceRemoveComplete, nil
	if err := cb(context.Background(), n, nil); err != nil {
		t.Fatal(err)
	}
	if got := hotplugEnv(t, out); !slices.Contains(got, "HOTPLUG_REQUESTED=0") || slices.ContainsFunc(got, func(s string) bool {
		return strings.HasPrefix(s, "HOTPLUG_REQUESTER_") || strings.HasPrefix(s, "HOTPLUG_STATUS=")
	}) {
		t.Errorf("surprise removal environment %v; want HOTPLUG_REQUESTED=0 and no requester or status", got)
	}
}

// TestExecAddStartVeto: through a real ChangeRegistry, a non-zero exit of the AddStart run vetoes
// the add, the command sees HOTPLUG_PHASE, and a command still running at the deadline is killed.
func TestExecAddStartVeto(t *testing.T) {
	dir := t.TempDir()
	script := `echo "$HOTPLUG_PHASE $HOTPLUG_CPU" >> ` + dir + `/phases
case "$HOTPLUG_PHASE:$HOTPLUG_CPU" in
  add_start:1) echo "cpu1 is reserved" >&2; exit 3 ;;
  add_start:2) echo $$ > ` + dir + `/sleeper; exec sleep 60 ;;
esac`
	r := notify.NewChangeRegistry(notify.ChangeOptions{Timeout: 2 * time.Second})
	defer r.Close(context.Background())
	cb := Exec{Command: []string{"/bin/sh", "-c", script}, Timeout: time.Minute}.ChangeCallback()
	if _, err := r.Register(context.Background(), notify.GUIDDeviceProcessor, 0, "script", cb, nil); err != nil {
		t.Fatal(err)
	}
	cpu := func(n int) notify.Interface {
		return notify.Interface{ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: fmt.Sprintf("/sys/devices/system/cpu/cpu%d", n), Number: n, Node: -1}
	}
	_, err := r.Begin(context.Background(), cpu(1), 0, time.Now(), notify.CauseUevent)
	var veto *notify.VetoError
	if !errors.As(err, &veto) || veto.Owner != "script" || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Begin(cpu1) = %v; want a veto by script with exit status 3", err)
	}
	add, err := r.Begin(context.Background(), cpu(0), 0, time.Now(), notify.CauseUevent)
	if err != nil {
		t.Fatalf("Begin(cpu0) = %v; want consent (exit 0)", err)
	}
	add.Complete()
	_, err = r.Begin(context.Background(), cpu(2), 0, time.Now(), notify.CauseUevent)
	if !errors.As(err, &veto) || veto.Err != nil {
		t.Fatalf("Begin(cpu2) = %v; want a timeout veto", err)
	}
	// The sleeping command's process was killed at the deadline.
	b, err := os.ReadFile(dir + "/sleeper")
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the AddStart command (pid %d) still runs after its deadline", pid)
		}
	}
	want := "add_start 1\nadd_failure 1\nadd_start 0\nadd_complete 0\nadd_start 2\nadd_failure 2\n"
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, _ = os.ReadFile(dir + "/phases"); len(b) >= len(want) {
			break
		}
	}
	if string(b) != want {
		t.Errorf("phases run:\n%s\nwant:\n%s", b, want)
	}
}

// TestExecVetoReasonControlBytes: a vetoing command whose stderr holds a NUL and other control
// bytes does not keep add_failure from the other registrations: the reason they get (and the
// veto's error) has those bytes escaped.
func TestExecVetoReasonControlBytes(t *testing.T) {
	dir := t.TempDir()
	r := notify.NewChangeRegistry(notify.ChangeOptions{Timeout: 10 * time.Second})
	defer r.Close(context.Background())
	record := func(name string) notify.ChangeCallback {
		script := `printf '%s %s\n' "$HOTPLUG_PHASE" "$HOTPLUG_STATUS" >> ` + dir + "/" + name
		return Exec{Command: []string{"/bin/sh", "-c", script}}.ChangeCallback()
	}
	for _, name := range []string{"first", "second"} {
		if _, err := r.Register(context.Background(), notify.GUIDDeviceProcessor, 0, name, record(name), nil); err != nil {
			t.Fatal(err)
		}
	}
	veto := Exec{Command: []string{"/bin/sh", "-c", `if [ "$HOTPLUG_PHASE" = add_start ]; then printf 'no\000room\033[2J\177\n' >&2; exit 1; fi
printf '%s %s\n' "$HOTPLUG_PHASE" "$HOTPLUG_STATUS" >> ` + dir + `/veto`}}.ChangeCallback()
	if _, err := r.Register(context.Background(), notify.GUIDDeviceProcessor, 0, "veto", veto, nil); err != nil {
		t.Fatal(err)
	}
	cpu1 := notify.Interface{ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: "/sys/devices/system/cpu/cpu1", Number: 1, Node: -1}
	_, err := r.Begin(context.Background(), cpu1, 0, time.Now(), notify.CauseUevent)
	const reason = `vetoed by veto at add_start: exec /bin/sh: exit status 1: no\x00room\x1b[2J\x7f`
	if err == nil || !strings.HasSuffix(err.Error(), reason) {
		t.Fatalf("Begin = %q; want a veto ending %q", err, reason)
	}
	// Begin has waited for the add_failure calls.
	for name, want := range map[string]string{
		"first":  "add_start \nadd_failure " + reason + "\n",
		"second": "add_start \nadd_failure " + reason + "\n",
		"veto":   "add_failure " + reason + "\n",
	} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != want {
			t.Errorf("%s ran:\n%q (%v)\nwant:\n%q", name, b, err, want)
		}
	}
}

func TestLastLine(t *testing.T) {
	long := strings.Repeat("é", 150) // 300 bytes
	tests := []struct{ name, in, want string }{
		{"plain", "starting\ncpu1 is reserved\n", "cpu1 is reserved"},
		{"blank lines after", "why\n\n  \r\n", "why"},
		{"NUL", "no\x00room", `no\x00room`},
		{"escape sequence and DEL", "\x1b[31mred\x7f", `\x1b[31mred\x7f`},
		{"C1 control", "a\u0085b", `a\u0085b`},
		{"not UTF-8", "bad \xff byte", `bad \xff byte`},
		{"tab and backslash kept", "a\tb\\x00", "a\tb\\x00"},
		{"cut at a character", long, strings.Repeat("é", 100) + "..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lastLine(tt.in); got != tt.want {
				t.Errorf("lastLine(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}
