//go:build linux

package agent

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/config"
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
