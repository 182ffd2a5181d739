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
