//go:build linux

package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/web"
)

func TestConnectionLimit(t *testing.T) {
	tests := []struct {
		name                  string
		want, nofile, reserve int
		limit                 int
	}{
		{"descriptors unknown", 2048, 0, 128, 2048},
		{"room for what is asked", 2048, 524288, 128, 2048},
		{"lowered to the descriptors beside the reserve", 30000, 20000, 128, 19872},
		{"a shell's 1024", 2048, 1024, 128, 896},
		{"never under the minimum", 2048, 100, 128, minConnections},
		{"asked for less than the minimum", 4, 20000, 128, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := connectionLimit(tt.want, tt.nofile, tt.reserve); got != tt.limit {
				t.Errorf("connectionLimit(%d, %d, %d) = %d; want %d", tt.want, tt.nofile, tt.reserve, got, tt.limit)
			}
		})
	}
	two := 2
	reserves := []struct {
		name string
		cfg  config.Config
		want int
	}{
		{"no callbacks", config.Config{}, reserveBase + web.RefusingConnections},
		{"three exec callbacks, two at once", config.Config{MaxExecProcesses: &two, Callbacks: []config.Callback{
			{Exec: &config.Exec{}}, {Exec: &config.Exec{}}, {Exec: &config.Exec{}}, {Webhook: &config.Webhook{}},
		}}, reserveBase + web.RefusingConnections + 2*reservePerExec + reservePerWebhook},
		{"one exec callback", config.Config{Callbacks: []config.Callback{{Exec: &config.Exec{}}}},
			reserveBase + web.RefusingConnections + reservePerExec},
	}
	for _, tt := range reserves {
		t.Run(tt.name, func(t *testing.T) {
			if got := descriptorReserve(&tt.cfg); got != tt.want {
				t.Errorf("descriptorReserve = %d; want %d", got, tt.want)
			}
		})
	}
}

// httpGet sends one keep-alive request on c and returns the status and the body.
func httpGet(t *testing.T, c net.Conn, r *bufio.Reader, path string) (int, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: agent\r\n\r\n", path)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return 0, err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// TestConnectionsBeyondTheLimit: with MaxConnections held open, one more connection is
// answered 503 and closed, and /metrics counts it once a place is free.
func TestConnectionsBeyondTheLimit(t *testing.T) {
	a, _, _, _ := runAgent(t, Options{SysfsPath: fixture(t), MaxConnections: 4})
	addr := a.Addrs()[0].String()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return c, bufio.NewReader(c)
	}
	for i := range 4 {
		c, r := dial()
		held = append(held, c)
		if code, body := httpGet(t, c, r, "/healthz"); code != 200 {
			t.Fatalf("connection %d of 4: %d %s", i, code, body)
		}
	}
	c, r := dial()
	code, body := httpGet(t, c, r, "/healthz")
	c.Close()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "at most 4") {
		t.Fatalf("a fifth connection: %d %q; want 503 naming the limit", code, body)
	}
	held[0].Close()
	held = held[1:]
	refused := 1
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c, r := dial()
		code, body := httpGet(t, c, r, "/metrics")
		c.Close()
		if code == 200 {
			if want := fmt.Sprintf("hotplug_agent_http_refused_total{reason=\"connections\"} %d\n", refused); !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
			break
		}
		refused++ // the agent has not yet seen the close
		if time.Now().After(deadline) {
			t.Fatalf("a connection closed, and /metrics is still refused after 10 s: %d", code)
		}
	}
}

// TestIdleConnectionsTimeOut: a keep-alive connection that sends no further request is closed
// after IdleTimeout, while an /events stream open as long carries on.
func TestIdleConnectionsTimeOut(t *testing.T) {
	root := fixture(t)
	a, src, _, _ := runAgent(t, Options{SysfsPath: root, IdleTimeout: 300 * time.Millisecond})
	base := "http://" + a.Addrs()[0].String()
	resp, err := http.Get(base + "/events?class=processor")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	c, err := net.Dial("tcp", a.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if code, body := httpGet(t, c, r, "/healthz"); code != 200 {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	began := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("an idle keep-alive connection: %v after %s; want the agent to close it after 300ms", err, time.Since(began).Round(time.Millisecond))
	}
	if d := time.Since(began); d < 250*time.Millisecond {
		t.Errorf("the idle connection was closed after %s; want 300ms", d)
	}

	// The stream, open for longer than the idle timeout, still delivers.
	time.Sleep(time.Second)
	writeAttr(t, root, "devices/system/cpu/cpu1/online", "0")
	src.send(t, "offline", "/devices/system/cpu/cpu1", "cpu", 100)
	sc := bufio.NewScanner(resp.Body)
	got := make(chan string, 1)
	go func() {
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				got <- sc.Text()
				return
			}
		}
		got <- "the stream ended: " + fmt.Sprint(sc.Err())
	}()
	select {
	case line := <-got:
		if !strings.Contains(line, `"event":"removal"`) {
			t.Errorf("the stream after the idle timeout: %s; want the removal of cpu1", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream delivered nothing within 10 s")
	}
}

// pinConnection connects to addr and sends requests for path, pipelined, far more than the
// socket buffers hold the answers of, and never reads past the first answer's status line: the
// agent's handler ends up blocked writing an answer nobody takes (it returns a second later,
// by when the answers have filled the socket buffers). The connection is closed when the test
// ends.
func pinConnection(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.(*net.TCPConn).SetReadBuffer(4096)
	req := "GET " + path + " HTTP/1.1\r\nHost: agent\r\n\r\n"
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	if status, err := bufio.NewReaderSize(c, 64).ReadString('\n'); err != nil || !strings.HasPrefix(status, "HTTP/1.1 200 ") {
		t.Fatalf("GET %s: %q, %v", path, status, err)
	}
	c.SetDeadline(time.Time{})
	go c.Write([]byte(strings.Repeat(req, 20000))) // until the agent stops reading, or closes
	time.Sleep(time.Second)                        // the answers fill the socket buffers
	return c
}

// TestNonReadingClientLetGo: a client that sends requests and stops reading the answers loses
// its connection after WriteTimeout, although it is never idle.
func TestNonReadingClientLetGo(t *testing.T) {
	a, _, _, _ := runAgent(t, Options{SysfsPath: fixture(t), WriteTimeout: 300 * time.Millisecond})
	pinConnection(t, a.Addrs()[0].String(), "/metrics")
	began := time.Now()
	for a.conns.Open() > 0 {
		if time.Since(began) > 10*time.Second {
			t.Fatalf("a client that does not read still holds its connection after %s, with a write timeout of 300ms", time.Since(began).Round(time.Millisecond))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStreamOutlastsWriteTimeout: an /events stream, whose writes each get WriteTimeout, still
// delivers long after the write timeout has passed since its request.
func TestStreamOutlastsWriteTimeout(t *testing.T) {
	root := fixture(t)
	a, src, _, _ := runAgent(t, Options{SysfsPath: root, WriteTimeout: 300 * time.Millisecond})
	resp, err := http.Get("http://" + a.Addrs()[0].String() + "/events?class=processor")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				lines <- sc.Text()
			}
		}
		lines <- "the stream ended: " + fmt.Sprint(sc.Err())
	}()
	for i, v := range []string{"0", "1", "0"} {
		time.Sleep(time.Second) // more than the write timeout, each time
		writeAttr(t, root, "devices/system/cpu/cpu1/online", v)
		action := map[string]string{"0": "offline", "1": "online"}[v]
		src.send(t, action, "/devices/system/cpu/cpu1", "cpu", uint64(100+i))
		select {
		case line := <-lines:
			want := map[string]string{"0": `"event":"removal"`, "1": `"event":"arrival"`}[v]
			if !strings.Contains(line, want) {
				t.Fatalf("the stream %s after its request: %s; want %s of cpu1", time.Duration(i+1)*time.Second, line, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the stream delivered nothing within 10 s")
		}
	}
}

// TestShutdownNotHeldByNonReadingClient: a client whose answer is stuck in a write (it stopped
// reading, and the write timeout is far off) does not make shutdown wait the callbacks' grace:
// its connection is closed after a short wait.
func TestShutdownNotHeldByNonReadingClient(t *testing.T) {
	a, _, cancel, done := runAgent(t, Options{SysfsPath: fixture(t), WriteTimeout: time.Hour, ShutdownGrace: time.Minute})
	pinConnection(t, a.Addrs()[0].String(), "/metrics")
	began := time.Now()
	cancel()
	select {
	case err := <-done:
		done <- err // for runAgent's cleanup
	case <-time.After(15 * time.Second):
		t.Fatalf("Run has not returned %s after its context ended (grace 1m): a client that does not read holds the shutdown", time.Since(began).Round(time.Millisecond))
	}
}

// TestShutdownGraceForCallbacksBesideStuckClient: while a client that does not read holds an
// HTTP connection, the callback running at shutdown gets the grace to finish, and the one
// queued behind it does not start (it is kept for the next start), rather than starting and
// being cancelled at once.
func TestShutdownGraceForCallbacksBesideStuckClient(t *testing.T) {
	root := fixture(t)
	a, src, cancel, done := runAgent(t, Options{SysfsPath: root, WriteTimeout: time.Hour, ShutdownGrace: 3 * time.Second})
	var mu sync.Mutex
	var calls []string
	started := make(chan struct{}, 2)
	if _, err := a.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.GUIDDeviceProcessor, "slow",
		func(ctx context.Context, n notify.Notification, _ any) error {
			started <- struct{}{}
			outcome := "finished"
			select {
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
				outcome = "cancelled"
			}
			mu.Lock()
			calls = append(calls, fmt.Sprintf("%d %s", n.ID, outcome))
			mu.Unlock()
			return nil
		}, nil); err != nil {
		t.Fatal(err)
	}
	pinConnection(t, a.Addrs()[0].String(), "/metrics")
	writeAttr(t, root, "devices/system/cpu/cpu1/online", "0")
	src.send(t, "offline", "/devices/system/cpu/cpu1", "cpu", 100)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback did not start within 10 s")
	}
	writeAttr(t, root, "devices/system/cpu/cpu1/online", "1")
	src.send(t, "online", "/devices/system/cpu/cpu1", "cpu", 101)
	queued := func() int {
		for _, e := range a.registry.Entries() {
			if e.Owner == "slow" {
				return e.Queued
			}
		}
		return 0
	}
	for deadline := time.Now().Add(10 * time.Second); queued() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the arrival was not queued for the callback within 10 s")
		}
	}
	cancel()
	done <- <-done // and again for runAgent's cleanup
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 1 || !strings.HasSuffix(calls[0], " finished") {
		t.Errorf("callbacks at shutdown: %q; want the one running to finish and none to start after it", calls)
	}
}

// TestRequestHeadersBounded: a request with the headers of any real client is served; one with
// far more than maxHeaderBytes is answered 431 and its connection closed, so that no connection
// holds more than that while its headers arrive.
func TestRequestHeadersBounded(t *testing.T) {
	a, _, _, _ := runAgent(t, Options{SysfsPath: fixture(t)})
	get := func(headerBytes int) (int, error) {
		c, err := net.Dial("tcp", a.Addrs()[0].String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		req := "GET /healthz HTTP/1.1\r\nHost: agent\r\n" +
			strings.Repeat("X-Pad: "+strings.Repeat("a", 1015)+"\r\n", headerBytes>>10) + "\r\n"
		go io.WriteString(c, req) // the agent may stop reading it
		r := bufio.NewReader(c)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			// The answer ends with the connection (a reset is as good as an end).
			if _, err := io.ReadAll(resp.Body); os.IsTimeout(err) {
				t.Errorf("after a %d answer to %d KiB of headers, the connection: %v; want it closed", resp.StatusCode, headerBytes>>10, err)
			}
		}
		return resp.StatusCode, nil
	}
	if code, err := get(8 << 10); code != http.StatusOK {
		t.Errorf("a request with 8 KiB of headers: %d, %v; want 200", code, err)
	}
	if code, err := get(64 << 10); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a request with 64 KiB of headers: %d, %v; want 431", code, err)
	}
}
