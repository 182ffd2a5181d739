//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// lines starts cmd and returns its stdout lines; it returns once stderr says ready.
func lines(t *testing.T, cmd *exec.Cmd, ready string) <-chan string {
	t.Helper()
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	up := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		closed := false
		for sc.Scan() {
			if strings.Contains(sc.Text(), ready) && !closed {
				close(up)
				closed = true
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	out := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out <- sc.Text()
		}
		close(out)
	}()
	select {
	case <-up:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: never said %q", cmd, ready)
	}
	return out
}

func nextLine(t *testing.T, ch <-chan string, want ...string) string {
	t.Helper()
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatalf("output ended before a line with %q", want)
			}
			match := true
			for _, w := range want {
				match = match && strings.Contains(l, w)
			}
			if match {
				return l
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no line with %q within 20 s", want)
		}
	}
}

// TestIntegrationMonitor follows a running agent with `monitor` and the kernel with
// `monitor --kernel` through a real CPU offline/online cycle.
func TestIntegrationMonitor(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	a := startAgent(t)
	agentLines := lines(t, exec.Command(binary, "monitor", "--url", a.base, "--class", "processor"), "following")
	jsonLines := lines(t, exec.Command(binary, "monitor", "--url", a.base, "--json"), "following")
	kernelLines := lines(t, exec.Command(binary, "monitor", "--kernel"), "listening")

	testenv.SetCPUOnline(t, cpu, false)
	testenv.SetCPUOnline(t, cpu, true)

	nextLine(t, agentLines, "REMOVAL", "processor", link, fmt.Sprintf("(cpu %d", cpu))
	nextLine(t, agentLines, "ARRIVAL", "processor", link)
	nextLine(t, jsonLines, `"event":"removal"`, `"symbolic_link":"`+link+`"`)
	nextLine(t, kernelLines, "offline", fmt.Sprintf("/devices/system/cpu/cpu%d", cpu))
	nextLine(t, kernelLines, "online", fmt.Sprintf("/devices/system/cpu/cpu%d", cpu))
}
