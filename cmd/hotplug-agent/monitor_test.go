//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/client"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
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
	if l := nextLine(t, agentLines, "ARRIVAL", "processor", link); strings.Contains(l, "\x1b[") {
		t.Errorf("piped, monitor writes escape sequences: %q", l)
	}
	nextLine(t, jsonLines, `"event":"removal"`, `"symbolic_link":"`+link+`"`)
	nextLine(t, kernelLines, "offline", fmt.Sprintf("/devices/system/cpu/cpu%d", cpu))
	nextLine(t, kernelLines, "online", fmt.Sprintf("/devices/system/cpu/cpu%d", cpu))
}

// TestIntegrationMonitorKernelBurst: `monitor --kernel` prints every uevent of a burst of 4,000
// real ones and no overflow line. Its output is read only after the burst, as a slow terminal
// would read it: meanwhile its socket's receive buffer holds what it has not printed. With the
// kernel's default buffer (208 KiB) it printed a few hundred and an overflow line. When udevadm
// is installed it is read the same way, and monitor must not print fewer than it.
func TestIntegrationMonitorKernelBurst(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.LockCPUs(t)
	const burst = 4000
	const dev, devpath = "/sys/devices/system/cpu/cpu0", "/devices/system/cpu/cpu0"

	// counts are the lines of the burst and the overflow lines a monitor printed.
	type counts struct{ burst, overflow atomic.Int64 }
	count := func(out <-chan string, c *counts) {
		for l := range out {
			switch {
			case strings.Contains(l, "overflow"):
				c.overflow.Add(1)
			case strings.Contains(l, "change") && strings.Contains(l, devpath+" "):
				c.burst.Add(1)
			}
		}
	}
	ourOut := lines(t, exec.Command(binary, "monitor", "--kernel"), "listening")
	var udevadmOut chan string
	if path, err := exec.LookPath("udevadm"); err == nil {
		// Its header on stdout comes once it listens.
		cmd := exec.Command(path, "monitor", "--kernel", "--subsystem-match=cpu")
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		udevadmOut = make(chan string, 100)
		ready := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(stdout)
			once := sync.OnceFunc(func() { close(ready) })
			for sc.Scan() {
				if strings.Contains(sc.Text(), "monitor will print") {
					once()
				}
				udevadmOut <- sc.Text()
			}
			close(udevadmOut)
		}()
		select {
		case <-ready:
		case <-time.After(20 * time.Second):
			t.Fatal("udevadm monitor never said it listens")
		}
	}

	for range burst {
		if err := testenv.Synthesize(dev, "change"); err != nil {
			t.Fatal(err)
		}
	}
	var ours, udevadm counts
	go count(ourOut, &ours)
	if udevadmOut != nil {
		go count(udevadmOut, &udevadm)
	}
	for deadline := time.Now().Add(60 * time.Second); ours.burst.Load() < burst && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if udevadmOut != nil {
		for deadline := time.Now().Add(10 * time.Second); udevadm.burst.Load() < burst && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("udevadm monitor --kernel printed %d of the %d uevents, and %d overflow lines", udevadm.burst.Load(), burst, udevadm.overflow.Load())
		if ours.burst.Load() < udevadm.burst.Load() {
			t.Errorf("monitor --kernel printed %d uevents of the burst, udevadm %d", ours.burst.Load(), udevadm.burst.Load())
		}
	}
	if got, over := ours.burst.Load(), ours.overflow.Load(); got < burst || over != 0 {
		t.Errorf("monitor --kernel printed %d of the %d uevents and %d overflow lines; want all and none", got, burst, over)
	}
}

// closedURL returns the URL of a local port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	l.Close()
	return u
}

// TestMonitorAgentNotRunning: with no agent at --url, monitor says so and asks whether the agent
// runs; --no-retry exits 1 at the first failure, --retries=N after N failures in a row.
func TestMonitorAgentNotRunning(t *testing.T) {
	for _, tt := range []struct {
		args     []string
		retrying int // lines that say it reconnects
		giveUp   string
	}{
		{[]string{"--no-retry"}, 0, "(not retrying: --no-retry or --retries=1)"},
		{[]string{"--retries=3"}, 2, "(gave up after 3 failed attempts in a row, --retries=3)"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			u := closedURL(t)
			var stdout, stderr strings.Builder
			code := run(append([]string{"monitor", "--url=" + u}, tt.args...), &stdout, &stderr)
			if code != 1 {
				t.Errorf("exit %d; want 1", code)
			}
			want := "cannot connect to " + u + " (connect: connection refused): is hotplug-agent run running?"
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if n := strings.Count(stderr.String(), "reconnecting in"); n != tt.retrying {
				t.Errorf("%d lines say it reconnects; want %d:\n%s", n, tt.retrying, stderr.String())
			}
			last := lines[len(lines)-1]
			if !strings.Contains(last, want) || !strings.HasSuffix(last, tt.giveUp) {
				t.Errorf("last line:\n%s\nwant it to say %q and end %q", last, want, tt.giveUp)
			}
		})
	}
	var stderr strings.Builder
	if code := run([]string{"monitor", "--retries=-1"}, io.Discard, &stderr); code != 2 {
		t.Errorf("--retries=-1: exit %d; want 2 (%s)", code, stderr.String())
	}
}

// TestMonitorHidesURLPassword: a password in --url is sent to the agent but not printed: the line
// that says what monitor follows, and the one that says why it stops, show "xxxxx" instead.
func TestMonitorHidesURLPassword(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, _ := r.BasicAuth(); u != "alice" || p != "s3cret" {
			http.Error(w, "who are you?", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: resync\nid: 5\ndata: {\"last_id\":5,\"interfaces\":[]}\n\n") // and the stream ends
	}))
	defer srv.Close()
	for _, tc := range []struct{ url, want string }{
		{srv.URL, "following " + srv.URL + "/events"},
		{closedURL(t), "cannot connect to "},
	} {
		var stderr strings.Builder
		u := strings.Replace(tc.url, "http://", "http://alice:s3cret@", 1)
		if code := run([]string{"monitor", "--url=" + u, "--no-retry"}, io.Discard, &stderr); code != 1 {
			t.Errorf("%s: exit %d; want 1", tc.url, code)
		}
		want := strings.Replace(tc.want, "http://", "http://alice:xxxxx@", 1)
		if !strings.Contains(stderr.String(), want) || strings.Contains(stderr.String(), "s3cret") {
			t.Errorf("stderr:\n%s\nwant it to say %q, and not the password", stderr.String(), want)
		}
	}
}

// arrivalsStream is an event stream as the agent sends it to a new client: a resync with no
// interface, then an arrival of each of the CPUs numbered from, through to (notification IDs
// 1 and up).
func arrivalsStream(t *testing.T, from, to int, link func(int) string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("event: resync\nid: 0\ndata: {\"last_id\":0,\"interfaces\":[]}\n\n")
	for i := from; i <= to; i++ {
		n := notify.NewNotification(notify.GUIDDeviceInterfaceArrival, notify.Interface{ClassGUID: notify.GUIDDeviceProcessor,
			SymbolicLink: link(i), Number: i, Node: -1, State: "online"}, uint64(i), time.Now(), notify.CauseUevent)
		n.ID = uint64(i - from + 1)
		data, err := json.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "id: %d\ndata: %s\n\n", n.ID, data)
	}
	return b.String()
}

// TestMonitorInterruptedWhileStdoutBlocked: monitor writing to a pipe nobody reads (a terminal
// paused with Ctrl-S) still ends on SIGTERM or SIGINT, within its grace of a few seconds; a
// second signal meanwhile ends it at once, by the signal.
func TestMonitorInterruptedWhileStdoutBlocked(t *testing.T) {
	stream := arrivalsStream(t, 0, 3000, func(i int) string {
		return fmt.Sprintf("/sys/devices/system/cpu/cpu%d%s", i, strings.Repeat("/x", 100))
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, stream)
		<-r.Context().Done()
	}))
	defer srv.Close()
	defer srv.CloseClientConnections()
	for _, sigs := range [][]os.Signal{{syscall.SIGTERM}, {os.Interrupt, os.Interrupt}} {
		t.Run(fmt.Sprint(sigs), func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close() // never read: the monitor's writes block once the pipe is full
			cmd := exec.Command(binary, "monitor", "--url="+srv.URL)
			cmd.Stdout = w
			stderr, _ := cmd.StderrPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			w.Close()
			following := make(chan struct{})
			go func() {
				sc := bufio.NewScanner(stderr)
				once := sync.OnceFunc(func() { close(following) })
				for sc.Scan() {
					if strings.Contains(sc.Text(), "following") {
						once()
					}
				}
			}()
			exited := make(chan struct{})
			var waitErr error
			go func() { waitErr = cmd.Wait(); close(exited) }()
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			select {
			case <-following:
			case <-time.After(20 * time.Second):
				t.Fatal("monitor never said it follows the agent")
			}
			time.Sleep(time.Second) // the pipe fills up
			start := time.Now()
			for i, sig := range sigs {
				if i > 0 {
					time.Sleep(shutdownGrace / 2)
				}
				cmd.Process.Signal(sig)
			}
			select {
			case <-exited:
			case <-time.After(shutdownGrace + 10*time.Second):
				t.Fatalf("monitor did not end within %s of %v", shutdownGrace+10*time.Second, sigs)
			}
			ee, _ := errors.AsType[*exec.ExitError](waitErr)
			switch {
			case len(sigs) == 1 && waitErr != nil:
				t.Errorf("after %v: %v; want exit 0", sigs, waitErr)
			case len(sigs) > 1 && (ee == nil || ee.Sys().(syscall.WaitStatus).Signal() != sigs[1].(syscall.Signal)):
				t.Errorf("after %v: %v (%s); want it killed by the second signal", sigs, waitErr, time.Since(start))
			}
		})
	}
}

// TestMonitorRetriesStreamBreaksAtOnce: a server that answers as an agent does, then closes the
// stream before sending anything, fails every attempt: --retries=3 gives up after three.
func TestMonitorRetriesStreamBreaksAtOnce(t *testing.T) {
	var attempts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK) // and the stream ends
	}))
	defer srv.Close()
	var stderr strings.Builder
	code := make(chan int, 1)
	go func() { code <- run([]string{"monitor", "--url=" + srv.URL, "--retries=3"}, io.Discard, &stderr) }()
	select {
	case c := <-code:
		const want = "the agent closed the stream (gave up after 3 failed attempts in a row, --retries=3)"
		if last := strings.TrimSpace(stderr.String()); c != 1 || !strings.HasSuffix(last, want) {
			t.Errorf("exit %d, stderr:\n%s\nwant exit 1, ending %q", c, last, want)
		}
		if n := attempts.Load(); n != 3 {
			t.Errorf("%d attempts; want 3", n)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("monitor --retries=3 still retrying after 30 s and %d attempts", attempts.Load())
	}
}

// TestMonitorQuotesServerStrings: the strings a server sends (a symbolic link, a cause) reach
// the terminal quoted when they hold control characters, as monitor --kernel's do.
func TestMonitorQuotesServerStrings(t *testing.T) {
	const evil = "\x1b]0;pwned\x07"
	n := notify.NewNotification(notify.GUIDDeviceInterfaceArrival, notify.Interface{ClassGUID: notify.GUIDDeviceProcessor,
		SymbolicLink: "/sys/devices/system/cpu/cpu1" + evil, Number: 1, Node: -1, State: "online"}, 7, time.Now(), notify.Cause(evil+"uevent"))
	n.ID = 1
	data, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	stream := "event: resync\nid: 0\ndata: {\"last_id\":0,\"interfaces\":[]}\n\n" + fmt.Sprintf("id: 1\ndata: %s\n\n", data)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, stream)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	defer srv.CloseClientConnections()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- monitorAgent(ctx, srv.URL, client.Filter{}, 0, false, false, 0, pw, io.Discard)
		pw.Close()
	}()
	defer func() { cancel(); go io.Copy(io.Discard, pr); <-done }()
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Scan()
		line <- sc.Text()
	}()
	select {
	case l := <-line:
		quoted := strconv.Quote("/sys/devices/system/cpu/cpu1"+evil) + " (cpu 1) seq=7 " + strconv.Quote(evil+"uevent")
		if strings.ContainsAny(l, "\x1b\x07") || !strings.Contains(l, quoted) {
			t.Errorf("monitor printed %q; want it to contain %s", l, quoted)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("monitor printed no line within 20 s")
	}
}

// TestMonitorQuotesServerError: what a server says when it refuses the stream reaches stderr
// quoted when it holds control characters.
func TestMonitorQuotesServerError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy\x1b]0;pwned\x07", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	var stderr strings.Builder
	if code := run([]string{"monitor", "--url=" + srv.URL, "--no-retry"}, io.Discard, &stderr); code != 1 {
		t.Errorf("exit %d; want 1", code)
	}
	if out := stderr.String(); strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, `busy\x1b]0;pwned\a`) {
		t.Errorf("stderr %q: want the server's message quoted", out)
	}
}
