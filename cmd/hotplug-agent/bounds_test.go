//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// agentDescriptors is the descriptor limit the agent runs with in TestIntegrationConnectionBounds,
// fewer than the 22,000 connections the test makes.
const agentDescriptors = 20000

// TestIntegrationConnectionBounds is the agent under 2,000 /events subscribers and 20,000 idle
// keep-alive connections, with a descriptor limit of 20,000, while a real CPU goes offline and
// online with an exec callback configured: the callback runs for the removal and the arrival,
// the state file is saved after them, the connections and subscribers beyond the limits are
// refused and counted on /metrics, and the agent's resident memory stays within a bound. Two
// settings: the default limits, and limits asked for above what the descriptors hold, where the
// descriptors kept in reserve are all that stands between the connections and the callbacks.
// The clients are spread over helper processes (this test binary again, see connectHelper), so
// that none needs more descriptors than the agent has.
func TestIntegrationConnectionBounds(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max < agentDescriptors {
		testenv.Unavailable(t, "the descriptor limit is %d; the agent under test needs %d", lim.Max, agentDescriptors)
	}
	// The binary as shipped (the race detector's memory would be measured otherwise), run with a
	// descriptor limit of agentDescriptors.
	dir := t.TempDir()
	plain := filepath.Join(dir, "hotplug-agent")
	if out, err := exec.Command("go", "build", "-o", plain, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	wrapper := filepath.Join(dir, "hotplug-agent-limited")
	if err := os.WriteFile(wrapper, fmt.Appendf(nil, "#!/bin/sh\nulimit -n %d || exit 1\nexec %s \"$@\"\n", agentDescriptors, plain), 0o755); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name  string
		flags []string
		// subscribers and connections are the most the agent may serve at once.
		subscribers, connections int
		// rssBound bounds the agent's resident memory under the load, in MiB.
		rssBound int64
	}{
		{"default limits", nil, 1024, 2048, 128},
		{"limits above the descriptors", []string{"--web.max-stream-subscribers=2000", "--web.max-connections=100000"},
			// 20,000 less the reserve: 64 for the agent, 64 for refusals, 8 for the exec callback.
			2000, agentDescriptors - 136, 640},
	} {
		t.Run(tt.name, func(t *testing.T) {
			connectionBounds(t, wrapper, cpu, tt.flags, tt.subscribers, tt.connections, tt.rssBound)
		})
	}
}

// crowd is what helper processes made of n connections that each sent one request.
type crowd struct {
	OK     int      `json:"ok"`     // answered 200 and left open
	Busy   int      `json:"busy"`   // answered 503 Service Unavailable, and closed
	Closed int      `json:"closed"` // closed without an answer
	Errors []string `json:"errors"`
}

// connectHelperEnv holds "address path n" in a helper process; see connectHelper.
const connectHelperEnv = "HOTPLUG_TEST_CONNECT"

// connectHelper runs in a helper process (TestMain calls it when connectHelperEnv is set): it
// opens n connections to address, 16 at a time, each sending GET path with keep-alive and
// reading the answer's status line, writes the crowd as a JSON line on stdout, and keeps the
// connections answered 200 open until its standard input closes. It returns the exit code.
func connectHelper() int {
	var addr, path string
	var n int
	if _, err := fmt.Sscanf(os.Getenv(connectHelperEnv), "%s %s %d", &addr, &path, &n); err != nil {
		fmt.Fprintln(os.Stderr, connectHelperEnv+":", err)
		return 2
	}
	request := "GET " + path + " HTTP/1.1\r\nHost: agent\r\n\r\n"
	var mu sync.Mutex
	var c crowd
	var open []net.Conn
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					mu.Lock()
					c.Errors = append(c.Errors, err.Error())
					mu.Unlock()
					continue
				}
				conn.SetDeadline(time.Now().Add(20 * time.Second))
				var status string
				if _, err = io.WriteString(conn, request); err == nil {
					status, err = bufio.NewReaderSize(conn, 512).ReadString('\n')
				}
				mu.Lock()
				switch {
				case err == nil && strings.HasPrefix(status, "HTTP/1.1 200 "):
					c.OK++
					conn.SetDeadline(time.Time{})
					open = append(open, conn)
					conn = nil
				case err == nil && strings.HasPrefix(status, "HTTP/1.1 503 "):
					c.Busy++
				case err != nil && !os.IsTimeout(err):
					c.Closed++
				default:
					c.Errors = append(c.Errors, fmt.Sprintf("status %q, %v", status, err))
				}
				mu.Unlock()
				if conn != nil {
					conn.Close()
				}
			}
		})
	}
	wg.Wait()
	if err := json.NewEncoder(os.Stdout).Encode(c); err != nil {
		return 1
	}
	io.Copy(io.Discard, os.Stdin)
	for _, conn := range open {
		conn.Close()
	}
	return 0
}

// connect makes n connections to a, each sending GET path, from helper processes of at most
// 5,000 connections each, and returns the crowd they made. The connections answered 200 stay
// open until the test ends.
func connect(t *testing.T, a *agentProc, path string, n int) crowd {
	t.Helper()
	var total crowd
	type helper struct {
		cmd   *exec.Cmd
		stdin io.Closer
		out   *bufio.Reader
	}
	var helpers []helper
	for k := 0; k < n; k += 5000 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", connectHelperEnv, strings.TrimPrefix(a.base, "http://"), path, min(5000, n-k)))
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stdin.Close(); cmd.Wait() })
		helpers = append(helpers, helper{cmd, stdin, bufio.NewReader(stdout)})
	}
	for _, h := range helpers {
		line, err := h.out.ReadBytes('\n')
		var c crowd
		if err == nil {
			err = json.Unmarshal(line, &c)
		}
		if err != nil {
			t.Fatalf("connection helper: %v (%q)", err, line)
		}
		total.OK += c.OK
		total.Busy += c.Busy
		total.Closed += c.Closed
		total.Errors = append(total.Errors, c.Errors...)
	}
	if len(total.Errors) > 0 {
		t.Errorf("%d connections failed otherwise; the first: %s", len(total.Errors), total.Errors[0])
	}
	return total
}

func connectionBounds(t *testing.T, agentBinary string, cpu int, flags []string, maxSubscribers, maxConns int, rssBoundMiB int64) {
	const subscribers, idle = 2000, 20000
	outDir := t.TempDir()
	statePath := filepath.Join(t.TempDir(), "state.json")
	saved := binary
	binary = agentBinary
	a := startAgent(t, append([]string{"--log.level=info", "--config.file=" + recordingConfig(t, outDir), "--path.state=" + statePath}, flags...)...)
	binary = saved
	if !strings.Contains(a.logs.String(), fmt.Sprintf("max_connections=%d ", maxConns)) {
		t.Fatalf("the agent does not log a connection limit of %d; log:\n%s", maxConns, a.logs.String())
	}

	// The test's own connections, open before the crowd: one that follows the notifications and
	// one for /metrics.
	events := a.subscribe(t, "class=processor")
	scraper := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}, Timeout: 20 * time.Second}
	defer scraper.CloseIdleConnections()
	scrape := func() string {
		t.Helper()
		resp, err := scraper.Get(a.base + "/metrics")
		if err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics: %s: %s", resp.Status, b)
		}
		return string(b)
	}
	rssBefore := settledRSS(t, a.cmd.Process.Pid)
	scrape()

	began := time.Now()
	subs := connect(t, a, "/events?class=processor", subscribers)
	idles := connect(t, a, "/healthz", idle)
	t.Logf("%d subscribers: %d served, %d refused with 503, %d closed; %d idle connections: %d served, %d refused with 503, %d closed (%s)",
		subscribers, subs.OK, subs.Busy, subs.Closed, idle, idles.OK, idles.Busy, idles.Closed, time.Since(began).Round(time.Millisecond))
	// The test's own subscriber is one of the subscribers; its two connections are two of the
	// connections.
	if want := min(subscribers, maxSubscribers-1); subs.OK != want {
		t.Errorf("subscribers served: %d; want %d", subs.OK, want)
	}
	if want := maxConns - 2 - subs.OK; idles.OK != want {
		t.Errorf("idle connections served: %d; want %d (the connection limit %d, less the subscribers and the test's own)", idles.OK, want, maxConns)
	}

	rss := settledRSS(t, a.cmd.Process.Pid)
	m := scrape()
	t.Logf("agent: RSS %d MiB before, %d MiB with %d connections open (bound %d MiB); %v descriptors open, %v goroutines",
		rssBefore>>20, rss>>20, 2+subs.OK+idles.OK, rssBoundMiB, metric(t, m, "process_open_fds"), metric(t, m, "go_goroutines"))
	if rss > rssBoundMiB<<20 {
		t.Errorf("the agent's resident memory is %d MiB; want at most %d MiB", rss>>20, rssBoundMiB)
	}
	lastID := func() uint64 {
		b, err := os.ReadFile(statePath)
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			LastEventID uint64 `json:"last_event_id"`
		}
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("state file: %v", err)
		}
		return s.LastEventID
	}
	idBefore := lastID()

	// A real CPU goes offline and online with every place taken.
	testenv.SetCPUOnline(t, cpu, false)
	removal := next(t, events, "the removal of cpu"+fmt.Sprint(cpu))
	testenv.SetCPUOnline(t, cpu, true)
	arrival := next(t, events, "the arrival of cpu"+fmt.Sprint(cpu))
	if removal.Event != "removal" || arrival.Event != "arrival" {
		t.Fatalf("got %s then %s; want a removal then an arrival", removal.Event, arrival.Event)
	}
	names := records(t, outDir, 2)
	if !strings.Contains(names[0], "-removal-uevent") || !strings.Contains(names[1], "-arrival-uevent") {
		t.Errorf("exec callback records %v; want the removal, then the arrival", names)
	}
	for deadline := time.Now().Add(10 * time.Second); lastID() < idBefore+2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the state file's last_event_id is %d; want at least %d once the removal and the arrival are announced", lastID(), idBefore+2)
		}
	}

	m = scrape()
	for _, c := range []struct {
		sample string
		want   int
	}{
		{`hotplug_agent_http_refused_total{reason="connections"}`, subs.Closed + idles.Busy + idles.Closed},
		{`hotplug_agent_http_refused_total{reason="subscribers"}`, subs.Busy},
		{`hotplug_agent_callback_errors_total{callback="record"}`, 0},
	} {
		if v := metric(t, m, c.sample); v != float64(c.want) {
			t.Errorf("%s = %v; want %d", c.sample, v, c.want)
		}
	}
	if strings.Contains(a.logs.String(), "too many open files") {
		t.Errorf("the agent ran out of descriptors:\n%s", a.logs.String())
	}
	a.stop(t)
}
