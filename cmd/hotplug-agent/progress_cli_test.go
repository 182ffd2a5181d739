package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/control"
)

// deviceAgent is a control server whose handler takes memory device PNP0C80:01 (blocks 35 down
// to 32) offline with a progress line each, refuses PNP0C80:00 at its second block as the kernel
// does (EBUSY, rolling back the first), and waits in PNP0C80:02's first block until its context
// ends, then rolls nothing back and fails with the context's cause. PNP0C80:03 ignores its
// context: it answers when the test ends.
func deviceAgent(t *testing.T) string {
	t.Helper()
	hang := make(chan struct{})
	path := filepath.Join(t.TempDir(), "control.sock")
	s, err := control.Listen(control.Options{Path: path, Authorize: func(control.Peer) error { return nil },
		Handler: func(ctx context.Context, op string, tg control.Target, _ control.Peer, progress func(control.Progress)) control.Result {
			switch tg.ID {
			case "PNP0C80:01":
				var freed uint64
				for i, b := range []int{35, 34, 33, 32} {
					freed += 128 << 20
					progress(control.Progress{Device: tg.ID, Block: b, State: "offline", Done: i + 1, Of: 4, FreedBytes: freed, Result: control.Success, ElapsedMS: 7})
				}
				r := control.NewResult(tg, control.Success, nil)
				r.FreedBytes, r.FreedBlocks = freed, 4
				return r
			case "PNP0C80:00":
				progress(control.Progress{Device: tg.ID, Block: 37, State: "offline", Done: 1, Of: 2, FreedBytes: 128 << 20, Result: control.Success, ElapsedMS: 7})
				refusal := fmt.Errorf(`sysfs: write "offline" to memory36/state: %w: the kernel could not move every page out (memory36 is in zone Normal, which holds kernel allocations that cannot move; kernel: unmovable page at pfn 0x120400)`, syscall.EBUSY)
				progress(control.NewProgress(tg.ID, 36, "offline", control.Failed, refusal))
				back := control.NewProgress(tg.ID, 37, "online", control.Success, nil)
				back.Rollback, back.Of = true, 2
				progress(back)
				return control.NewResult(tg, control.Failed, fmt.Errorf("memory-device %s: %w (memory blocks 37, taken offline first, are online again)", tg.ID, refusal))
			case "PNP0C80:03":
				<-hang
				return control.NewResult(tg, control.Success, nil)
			case "PNP0C80:02":
				<-ctx.Done()
				return control.NewResult(tg, control.Failed, fmt.Errorf("memory-device %s: memory 40: stopped: %w", tg.ID, context.Cause(ctx)))
			}
			return control.NewResult(tg, control.NotFound, errors.New("no such memory device"))
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ctx) }()
	t.Cleanup(func() { close(hang); cancel(); <-done })
	return path
}

func offlineFlags(socket string, timeout time.Duration, targets ...string) *controlFlags {
	asJSON := false
	return &controlFlags{socket: &socket, json: &asJSON, timeout: &timeout, targets: &targets}
}

// TestOfflineMemoryDeviceProgress: the command prints a line per block on stderr, then the
// device's result with the memory freed; a device the kernel refuses prints the refused block
// with the kernel's reason, the rollback, and exits 1.
func TestOfflineMemoryDeviceProgress(t *testing.T) {
	sock := deviceAgent(t)
	var stdout, stderr bytes.Buffer
	err := runControl(t.Context(), "offline", offlineFlags(sock, time.Minute, "memory-device", "PNP0C80:01"), nil, &stdout, &stderr)
	if err != nil {
		t.Fatalf("offline memory-device PNP0C80:01: %v", err)
	}
	wantErr := "memory-device PNP0C80:01: memory 35 offline (1 of 4, 128 MiB freed, 7 ms)\n" +
		"memory-device PNP0C80:01: memory 34 offline (2 of 4, 256 MiB freed, 7 ms)\n" +
		"memory-device PNP0C80:01: memory 33 offline (3 of 4, 384 MiB freed, 7 ms)\n" +
		"memory-device PNP0C80:01: memory 32 offline (4 of 4, 512 MiB freed, 7 ms)\n"
	if stderr.String() != wantErr || stdout.String() != "memory-device PNP0C80:01: success: 512 MiB freed (4 memory blocks)\n" {
		t.Errorf("stdout:\n%s\nstderr:\n%s\nwant stdout: memory-device PNP0C80:01: success: 512 MiB freed (4 memory blocks)\nstderr:\n%s", &stdout, &stderr, wantErr)
	}

	stdout.Reset()
	stderr.Reset()
	err = runControl(t.Context(), "offline", offlineFlags(sock, time.Minute, "memory-device", "PNP0C80:00", "memory-device", "PNP0C80:01"), nil, &stdout, &stderr)
	if !errors.Is(err, errFailed) {
		t.Errorf("a refused device: %v; want errFailed (exit 1)", err)
	}
	reason := "(memory36 is in zone Normal, which holds kernel allocations that cannot move; kernel: unmovable page at pfn 0x120400)"
	lines := strings.Split(stderr.String(), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[1], "memory-device PNP0C80:00: memory 36: operation-failed: ") ||
		!strings.HasSuffix(lines[1], reason+" (EBUSY)") ||
		lines[2] != "memory-device PNP0C80:00: memory 37 online again (rollback; 0 of 2 offline)" {
		t.Errorf("stderr of a refused device:\n%s\nwant memory 36 refused with the kernel's reason, then memory 37 online again", &stderr)
	}
	out := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(out) != 2 || !strings.Contains(out[0], reason) || !strings.HasPrefix(out[0], "memory-device PNP0C80:00: operation-failed: ") ||
		out[1] != "memory-device PNP0C80:01: success: 512 MiB freed (4 memory blocks)" {
		t.Errorf("stdout of a refused device and a good one:\n%s", &stdout)
	}
}

// TestOfflineCancelAndTimeout: an interrupt cancels the request, the agent's answer is printed
// and the command exits 3; so does a --timeout that passes. A second interrupt stops waiting.
func TestOfflineCancelAndTimeout(t *testing.T) {
	sock := deviceAgent(t)
	var stdout, stderr bytes.Buffer
	interrupts := make(chan os.Signal, 2)
	interrupts <- os.Interrupt
	err := runControl(t.Context(), "offline", offlineFlags(sock, time.Minute, "memory-device", "PNP0C80:02"), interrupts, &stdout, &stderr)
	if !errors.Is(err, errStopped) {
		t.Errorf("interrupted: %v; want errStopped (exit 3)", err)
	}
	// The interrupt is waiting before the request is sent: the agent may see the cancel before or
	// after it begins the device's first block, and says which.
	if got := stdout.String(); got != "memory-device PNP0C80:02: operation-failed: memory-device PNP0C80:02: memory 40: stopped: cancelled by the client\n" &&
		got != "memory-device PNP0C80:02: operation-failed: not begun: cancelled by the client\n" ||
		!strings.Contains(stderr.String(), "cancelling") {
		t.Errorf("interrupted: stdout %q, stderr %q; want the device stopped, cancelled by the client, and a notice", got, &stderr)
	}

	stdout.Reset()
	stderr.Reset()
	err = runControl(t.Context(), "offline", offlineFlags(sock, 300*time.Millisecond, "memory-device", "PNP0C80:02", "cpu", "1"), nil, &stdout, &stderr)
	if !errors.Is(err, errStopped) {
		t.Errorf("timed out: %v; want errStopped (exit 3)", err)
	}
	want := "memory-device PNP0C80:02: operation-failed: memory-device PNP0C80:02: memory 40: stopped: timed out after 300ms\n" +
		"cpu 1: operation-failed: not begun: timed out after 300ms\n"
	if stdout.String() != want {
		t.Errorf("timed out: stdout %q; want %q", &stdout, want)
	}

	stdout.Reset()
	stderr.Reset()
	interrupts <- os.Interrupt
	interrupts <- os.Interrupt
	err = runControl(t.Context(), "offline", offlineFlags(sock, time.Minute, "memory-device", "PNP0C80:03"), interrupts, &stdout, &stderr)
	if err == nil || errors.Is(err, errStopped) || !strings.Contains(err.Error(), "interrupted again") {
		t.Errorf("interrupted twice: %v; want a plain failure saying it stopped waiting", err)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 bytes", 4096: "4096 bytes", 128 << 20: "128 MiB", 3 << 29: "1.5 GiB", 32 << 30: "32 GiB", 1<<20 + 1<<19: "1.5 MiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q; want %q", n, got, want)
		}
	}
}

// TestProgressOnTerminal: on a terminal the blocks done share one line, rewritten in place; a
// failure and a rollback get lines of their own, and the line in place is ended first.
func TestProgressOnTerminal(t *testing.T) {
	var b bytes.Buffer
	p := &progressPrinter{w: &b, tty: true}
	p.show(control.Progress{Device: "PNP0C80:00", Block: 35, State: "offline", Done: 1, Of: 2, FreedBytes: 128 << 20, Result: control.Success, ElapsedMS: 3})
	p.show(control.NewProgress("PNP0C80:00", 34, "offline", control.Failed, fmt.Errorf("write: %w", syscall.EBUSY)))
	p.show(control.Progress{Device: "PNP0C80:00", Block: 35, State: "online", Rollback: true, Of: 2, Result: control.Success})
	p.show(control.Progress{Device: "PNP0C80:01", Block: 37, State: "offline", Done: 1, Of: 1, FreedBytes: 128 << 20, Result: control.Success, ElapsedMS: 4})
	p.end()
	want := "\r\x1b[Kmemory-device PNP0C80:00: memory 35 offline (1 of 2, 128 MiB freed, 3 ms)\n" +
		"memory-device PNP0C80:00: memory 34: operation-failed: write: device or resource busy (EBUSY)\n" +
		"memory-device PNP0C80:00: memory 35 online again (rollback; 0 of 2 offline)\n" +
		"\r\x1b[Kmemory-device PNP0C80:01: memory 37 offline (1 of 1, 128 MiB freed, 4 ms)\n"
	if b.String() != want {
		t.Errorf("on a terminal:\n%q\nwant:\n%q", b.String(), want)
	}
}
