package web

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConnLimit: beyond its limit a ConnLimit answers each new connection with a 503 that names
// the limit and the flag, or closes it, counts it, and goes on accepting without waiting; the
// connections within the limit keep being served, and one that closes makes room.
func TestConnLimit(t *testing.T) {
	var refused atomic.Int64
	lim := NewConnLimit(3, func(reason string) {
		if reason != RefusedConnections {
			t.Errorf("refused for %q; want %q", reason, RefusedConnections)
		}
		refused.Add(1)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })}
	go srv.Serve(lim.Listener(l))
	defer srv.Close()
	addr := l.Addr().String()

	// get sends a keep-alive request on a new connection and returns the connection and the
	// status, or 0 when the connection ended without an answer.
	get := func() (net.Conn, int, string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: agent\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return c, 0, err.Error()
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
		c.SetDeadline(time.Time{})
		return c, resp.StatusCode, string(b)
	}
	var kept []net.Conn
	defer func() {
		for _, c := range kept {
			c.Close()
		}
	}()
	for i := range 3 {
		c, code, body := get()
		kept = append(kept, c)
		if code != 200 {
			t.Fatalf("connection %d within the limit: %d %s", i, code, body)
		}
	}
	c, code, body := get()
	c.Close()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "at most 3") ||
		!strings.Contains(body, "--web.max-connections") || strings.Count(body, "\n") != 1 {
		t.Fatalf("a fourth connection: %d %q; want 503 and one line naming the limit and the flag", code, body)
	}

	// A flood: every connection is refused, none waits for a place, and each is counted.
	const flood = 500
	var wg sync.WaitGroup
	var answered, closed atomic.Int64
	start := time.Now()
	for range flood {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: agent\r\n\r\n")
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil && resp.StatusCode == http.StatusServiceUnavailable {
				answered.Add(1)
			} else if err != nil && !strings.Contains(err.Error(), "timeout") {
				closed.Add(1)
			} else {
				t.Errorf("a connection of the flood: %v %v", resp, err)
			}
		})
	}
	wg.Wait()
	t.Logf("a flood of %d connections: %d answered 503, %d closed, in %s", flood, answered.Load(), closed.Load(), time.Since(start).Round(time.Millisecond))
	if got := refused.Load(); got != flood+1 {
		t.Errorf("refusals counted: %d; want %d", got, flood+1)
	}
	if lim.Open() != 3 {
		t.Errorf("open connections: %d; want 3", lim.Open())
	}

	// A TLS client gets no plain text, only the close.
	if c, err := net.Dial("tcp", addr); err != nil {
		t.Fatal(err)
	} else {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})
		if b, err := io.ReadAll(c); len(b) != 0 {
			t.Errorf("a refused TLS client read %q (%v); want nothing", b, err)
		}
		c.Close()
	}

	// The connections within the limit are still served; one that closes makes room.
	fmt.Fprintf(kept[0], "GET / HTTP/1.1\r\nHost: agent\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(kept[0]), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a kept connection after the flood: %v %v", resp, err)
	}
	kept[2].Close()
	kept = kept[:2]
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c, code, _ := get()
		if code == 200 {
			kept = append(kept, c)
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("a connection closed, and a new one is still refused after 10 s")
		}
	}
}
