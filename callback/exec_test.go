//go:build linux

package callback

import (
	"bytes"
	"context"
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

func cpuNote() notify.Notification {
	return notify.NewNotification(notify.GUIDDeviceInterfaceArrival, notify.Interface{
		ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: "/sys/devices/system/cpu/cpu3", Number: 3, Node: 1, State: "online",
	}, 817, time.Now(), notify.CauseUevent)
}

func memNote() notify.Notification {
	return notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, notify.Interface{
		ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: "/sys/devices/system/memory/memory32", Number: 32,
		Node: -1, PhysStart: 32 << 27, Size: 128 << 20,
	}, 900, time.Now(), notify.CauseResync)
}

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

func TestExecFailures(t *testing.T) {
	tests := []struct {
		name    string
		command []string
		want    string
	}{
		{"non-zero exit", []string{"/bin/sh", "-c", "exit 3"}, "exit status 3"},
		{"cannot start", []string{"/nonexistent/hook"}, "no such file or directory"},
		{"not in PATH", []string{"no-such-hook-anywhere"}, "executable file not found"},
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

// TestExecTimeoutKillsProcessGroup starts a command that leaves a grandchild behind and overruns
// its timeout: both must be killed, and the callback must return promptly with a timeout error.
func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	cb := Exec{
		Command: []string{"/bin/sh", "-c", "sleep 300 & echo $! > " + pidFile + "; wait"},
		Timeout: 300 * time.Millisecond,
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
