//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/agent"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// patience bounds every wait: a deadline for what must happen, never a measurement.
const patience = 60 * time.Second

func TestPoolResize(t *testing.T) {
	p := NewPool()
	defer p.Close()
	for _, n := range []int{2, 5, 1, 0, 3} {
		p.Resize(n)
		if got := p.Size(); got != n {
			t.Fatalf("Resize(%d): Size() = %d", n, got)
		}
	}
	ran := make(chan struct{})
	if !p.Submit(context.Background(), func() { close(ran) }) {
		t.Fatal("Submit refused a job with 3 workers")
	}
	<-ran
}

// TestIntegrationWorkerPool runs the example against a real agent on this machine through a real
// CPU offline/online cycle: it starts a worker per online CPU, stops one at the removal and starts
// one at the arrival, unregisters and exits 0.
func TestIntegrationWorkerPool(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		t.Fatal(err)
	}
	cpus, err := sysfs.ParseCPUList(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	n := len(cpus)

	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	prog := filepath.Join(t.TempDir(), "workerpool")
	if out, err := exec.Command(goTool, "build", "-race", "-o", prog, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	logs := &testenv.Buffer{}
	a, err := agent.New(agent.Options{
		SysfsPath: "/sys", ListenAddresses: []string{"127.0.0.1:0"}, Version: "test",
		StatePath: filepath.Join(t.TempDir(), "state.json"),
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("agent log:\n%s", logs)
		}
	}()

	cmd := exec.Command(prog, "-n", "2", "http://"+a.Addrs()[0].String())
	var stdout bytes.Buffer
	stderr := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for deadline := time.Now().Add(patience); !strings.Contains(stderr.String(), "registered for processor"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the example did not register within %s:\n%s", patience, stderr)
		}
	}
	testenv.SetCPUOnline(t, cpu, false)
	testenv.SetCPUOnline(t, cpu, true)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("workerpool: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr)
		}
	case <-time.After(patience):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("workerpool did not exit within %s of the CPU cycle\nstdout:\n%s\nstderr:\n%s", patience, stdout.String(), stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != n+2 {
		t.Fatalf("workerpool printed %d lines; want %d existing CPUs, the removal and the arrival:\n%s", len(lines), n, stdout.String())
	}
	want := []string{
		fmt.Sprintf("removal cpu%d (uevent): %d -> %d workers", cpu, n, n-1),
		fmt.Sprintf("arrival cpu%d (uevent): %d -> %d workers", cpu, n-1, n),
	}
	for i, w := range want {
		if got := lines[n+i]; got != w {
			t.Errorf("line %d: %q; want %q", n+i+1, got, w)
		}
	}
	if !strings.Contains(stderr.String(), fmt.Sprintf("unregistered after 2 notifications; %d workers ran", n)) {
		t.Errorf("the example did not report unregistering with %d workers:\n%s", n, stderr)
	}
	t.Logf("workerpool:\n%s%s", stdout.String(), stderr)
}
