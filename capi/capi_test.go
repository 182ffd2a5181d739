//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/agent"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// patience bounds every wait: a deadline for what must happen, never a measurement.
const patience = 60 * time.Second

// tool finds a program the test needs; a missing one ends the test through testenv.Unavailable.
func tool(t *testing.T, name string) string {
	t.Helper()
	return testenv.Tool(t, name, "Debian package "+name+"; make deps installs it")
}

var (
	buildMu sync.Mutex
	built   = map[string]string{} // tags -> directory holding libhotplug.so
	workDir string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hotplug-capi-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// notShort skips the C tests in -short mode: they build the library and run C programs.
func notShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds libhotplug.so and runs C programs against the real agent: left out with -short")
	}
}

// library builds libhotplug.so from this package (once per tag set) and returns its directory.
func library(t *testing.T, tags string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if d, ok := built[tags]; ok {
		return d
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	d := filepath.Join(workDir, "lib"+strings.ReplaceAll(tags, ",", "-"))
	args := []string{"build", "-buildmode=c-shared", "-o", filepath.Join(d, "libhotplug.so")}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command(goTool, append(args, ".")...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	built[tags] = d
	return d
}

// compile builds a C program against the library in libDir, with every warning an error.
func compile(t *testing.T, libDir, src, name string, extra ...string) string {
	t.Helper()
	gcc := tool(t, "gcc")
	out := filepath.Join(libDir, name)
	args := append([]string{"-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-I", ".", src,
		"-L", libDir, "-lhotplug", "-Wl,-rpath," + libDir, "-lpthread", "-o", out}, extra...)
	if b, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

// startAgent runs the real agent in this process on 127.0.0.1 and returns its URL.
func startAgent(t *testing.T) string {
	t.Helper()
	return startAgentOn(t, "/sys")
}

// startAgentOn starts an agent on the sysfs tree at root and returns its URL.
func startAgentOn(t *testing.T, root string) string {
	t.Helper()
	logs := &testenv.Buffer{}
	a, err := agent.New(agent.Options{
		SysfsPath:       root,
		ListenAddresses: []string{"127.0.0.1:0"},
		StatePath:       filepath.Join(t.TempDir(), "state.json"),
		Version:         "test",
		Logger:          slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(patience):
			t.Error("agent did not stop")
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs)
		}
	})
	return "http://" + a.Addrs()[0].String()
}

// deadURL is an address of this machine where nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// TestIntegrationCAPIChecks runs a C program that checks every function of hotplug.h against
// the real agent: error codes for bad arguments, waiting for an agent that is not there, the
// notification's layout (GUIDs in the Windows layout, strings, CPU and memory fields), and
// unregistering from inside a callback.
func TestIntegrationCAPIChecks(t *testing.T) {
	notShort(t)
	lib := library(t, "")
	prog := compile(t, lib, "testdata/api_check.c", "api_check")
	url := startAgent(t)
	cmd := exec.Command(prog, url, deadURL(t))
	cmd.WaitDelay = patience
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "all checks passed") {
		t.Fatalf("api_check: %v\n%s", err, out)
	}
}

// TestIntegrationCMemoryDevices: a C program registered with HOTPLUG_FLAG_MEMORY_DEVICES
// receives the DIMM of a sysfs fixture (blocks 32 and 33 linked to PNP0C80:00) as one arrival,
// with its id and blocks in the fields added for it.
func TestIntegrationCMemoryDevices(t *testing.T) {
	notShort(t)
	root := testenv.SysfsFixture(t, "..")
	testenv.LinkMemoryDevice(t, root, "PNP0C80:00", 32, 33)
	lib := library(t, "")
	prog := compile(t, lib, "testdata/devices.c", "devices")
	cmd := exec.Command(prog, startAgentOn(t, root))
	cmd.WaitDelay = patience
	out, err := cmd.CombinedOutput()
	want := "ARRIVAL /sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04/PNP0C80:00 device=PNP0C80:00 blocks=32-33 memory_block=-1 size=268435456 cause=existing\n"
	if err != nil || string(out) != want {
		t.Errorf("devices: %v\n%s\nwant %s", err, out, want)
	}
}

// runMonitor runs the example (argv), waits until it has registered, takes cpu offline and online,
// and returns its stdout and stderr once it has exited with status 0. Under a memory checker (c
// not nil) its environment is the checker's, and a valgrind that cannot execute the program on
// this CPU skips t, saying so.
func runMonitor(t *testing.T, cpu int, c *memChecker, argv ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	if c != nil {
		cmd.Env = append(cmd.Environ(), c.env...)
	}
	toolLimit := func(err error, stderr string) {
		if c != nil && c.name == "valgrind" {
			if why, ok := toolCannotRun(stderr, err); ok {
				skipToolLimit(t, why)
			}
		}
	}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderrPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	registered := make(chan struct{})
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderrPipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			stderr.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), ": registered for ") { // monitor and workerpool say it
				once.Do(func() { close(registered) })
			}
		}
		io.Copy(io.Discard, stderrPipe)
	}()
	exited := make(chan error, 1)
	go func() { <-copied; exited <- cmd.Wait() }()
	select {
	case <-registered:
	case err := <-exited:
		toolLimit(err, stderr.String())
		t.Fatalf("%s exited before registering: %v\nstderr:\n%s", argv[0], err, stderr.String())
	case <-time.After(patience):
		cmd.Process.Kill()
		t.Fatalf("%s did not register within %s", argv[0], patience)
	}
	testenv.SetCPUOnline(t, cpu, false)
	testenv.SetCPUOnline(t, cpu, true)
	select {
	case err := <-exited:
		if err != nil {
			toolLimit(err, stderr.String())
			t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", argv[0], err, stdout.String(), stderr.String())
		}
	case <-time.After(patience):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("%s did not exit within %s after the CPU cycle\nstdout:\n%s\nstderr:\n%s", argv[0], patience, stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String()
}

// checkCycle checks the example's output: the removal, then the arrival, of cpu.
func checkCycle(t *testing.T, cpu int, stdout, stderr string) {
	t.Helper()
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	want := []*regexp.Regexp{
		regexp.MustCompile(fmt.Sprintf(`^REMOVAL processor +%s cpu=%d .*seq=[1-9][0-9]* id=[1-9][0-9]* cause=uevent class=\{97fadb10-4e33-40ae-359c-8bef029dbdd0\}$`, link, cpu)),
		regexp.MustCompile(fmt.Sprintf(`^ARRIVAL processor +%s cpu=%d .*seq=[1-9][0-9]* id=[1-9][0-9]* cause=uevent class=\{97fadb10-4e33-40ae-359c-8bef029dbdd0\}$`, link, cpu)),
	}
	if len(lines) != len(want) {
		t.Fatalf("the example printed %d lines; want the removal and the arrival:\n%s\nstderr:\n%s", len(lines), stdout, stderr)
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d: %q; want it to match %s", i+1, lines[i], re)
		}
	}
	if !strings.Contains(stderr, "unregistered after 2 notifications") {
		t.Errorf("the example did not report unregistering; stderr:\n%s", stderr)
	}
}

// TestIntegrationCExample builds examples/c/monitor.c with gcc against libhotplug.so and runs it
// against the real agent: it registers for processors, sees the removal and the arrival of a real
// CPU offline/online cycle, unregisters and exits 0. Then again under each memory checker
// (AddressSanitizer with LeakSanitizer on every machine, valgrind's memcheck with the library built
// with Go's valgrind support where valgrind can run): no error, no leak.
func TestIntegrationCExample(t *testing.T) {
	notShort(t)
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	url := startAgent(t)

	t.Run("plain", func(t *testing.T) {
		lib := library(t, "")
		prog := compile(t, lib, "../examples/c/monitor.c", "monitor")
		stdout, stderr := runMonitor(t, cpu, nil, prog, "-n", "2", url)
		checkCycle(t, cpu, stdout, stderr)
	})
	for _, c := range memCheckers() {
		t.Run(c.name, func(t *testing.T) {
			prog := c.build(t, "../examples/c/monitor.c", "monitor")
			stdout, stderr := runMonitor(t, cpu, &c, c.argv(t, prog, "-n", "2", url)...)
			checkCycle(t, cpu, stdout, stderr)
		})
	}
}

// TestIntegrationCWorkerPool builds examples/c/workerpool.c and runs it against the real agent
// through a real CPU offline/online cycle: a worker per online CPU, one stopped at the removal and
// one started at the arrival; it unregisters and exits 0. Then under each memory checker.
func TestIntegrationCWorkerPool(t *testing.T) {
	notShort(t)
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
	url := startAgent(t)
	check := func(t *testing.T, stdout, stderr string) {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if len(lines) != n+2 {
			t.Fatalf("workerpool printed %d lines; want %d existing CPUs, the removal and the arrival:\n%s\nstderr:\n%s", len(lines), n, stdout, stderr)
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
		if !strings.Contains(stderr, fmt.Sprintf("unregistered after 2 notifications; %d workers ran", n)) {
			t.Errorf("the example did not report unregistering with %d workers:\n%s", n, stderr)
		}
	}
	t.Run("plain", func(t *testing.T) {
		prog := compile(t, library(t, ""), "../examples/c/workerpool.c", "workerpool")
		stdout, stderr := runMonitor(t, cpu, nil, prog, "-n", "2", url)
		check(t, stdout, stderr)
		t.Logf("workerpool:\n%s%s", stdout, stderr)
	})
	for _, c := range memCheckers() {
		t.Run(c.name, func(t *testing.T) {
			prog := c.build(t, "../examples/c/workerpool.c", "workerpool")
			stdout, stderr := runMonitor(t, cpu, &c, c.argv(t, prog, "-n", "2", url)...)
			check(t, stdout, stderr)
		})
	}
}

// TestIntegrationMemcheckSeesMisuse: each memory checker above does catch the C side's errors.
// A program that reads a notification after its callback returned must fail under it, with the
// invalid read reported.
func TestIntegrationMemcheckSeesMisuse(t *testing.T) {
	notShort(t)
	url := startAgent(t)
	for _, c := range memCheckers() {
		t.Run(c.name, func(t *testing.T) {
			prog := c.build(t, "testdata/misuse.c", "misuse")
			argv := c.argv(t, prog, url)
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.WaitDelay = patience
			out, err := c.run(t, cmd)
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != memcheckExit || !strings.Contains(out, c.invalidRead) {
				t.Fatalf("%s on a use after free: %v; want exit status %d and %q reported:\n%s", c.name, err, memcheckExit, c.invalidRead, out)
			}
		})
	}
}

// TestIntegrationCExampleSignal: the example unregisters and exits 0 on SIGINT or SIGTERM.
func TestIntegrationCExampleSignal(t *testing.T) {
	notShort(t)
	lib := library(t, "")
	prog := compile(t, lib, "../examples/c/monitor.c", "monitor")
	url := startAgent(t)
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		cmd := exec.Command(prog, url)
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		registered := false
		for !registered && sc.Scan() {
			registered = strings.Contains(sc.Text(), "monitor: registered")
		}
		if !registered {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the example never registered")
		}
		cmd.Process.Signal(sig)
		rest, _ := io.ReadAll(stderr)
		if err := cmd.Wait(); err != nil {
			t.Errorf("after %v: %v; want exit status 0\n%s", sig, err, rest)
		}
		if !strings.Contains(string(rest), "unregistered after") {
			t.Errorf("after %v the example did not say it unregistered:\n%s", sig, rest)
		}
	}
}
