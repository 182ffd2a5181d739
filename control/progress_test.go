package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const mib = 1 << 20

// fakeDevice is a handler that takes the four blocks of memory device "PNP0C80:00" (35 down to
// 32) offline, one progress line each. It waits at block 34, after its first block, for release
// to be closed or its context to end; when the context ends it brings memory35 back online (a
// rollback progress line) and fails with the context's cause, which it records.
type fakeDevice struct {
	release chan struct{}
	mu      sync.Mutex
	cause   error
	calls   int
}

func newFakeDevice() *fakeDevice { return &fakeDevice{release: make(chan struct{})} }

func (f *fakeDevice) handle(ctx context.Context, op string, t Target, _ Peer, progress func(Progress)) Result {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if t.Kind != KindMemoryDevice {
		return NewResult(t, Success, nil)
	}
	var freed uint64
	for i, b := range []int{35, 34, 33, 32} {
		if b == 34 {
			select {
			case <-f.release:
			case <-ctx.Done():
				f.mu.Lock()
				f.cause = context.Cause(ctx)
				f.mu.Unlock()
				progress(Progress{Device: t.ID, Block: 35, State: "online", Rollback: true, Of: 4, Result: Success})
				return NewResult(t, Failed, fmt.Errorf("memory-device %s: memory 34: %w (memory blocks 35, taken offline first, are online again)", t.ID, context.Cause(ctx)))
			}
		}
		freed += 128 * mib
		progress(Progress{Device: t.ID, Block: b, State: "offline", Done: i + 1, Of: 4, FreedBytes: freed, Result: Success, ElapsedMS: 5})
	}
	r := NewResult(t, Success, nil)
	r.FreedBytes, r.FreedBlocks = freed, 4
	return r
}

func (f *fakeDevice) got() (error, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cause, f.calls
}

func serveFake(t *testing.T, f *fakeDevice) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	serve(t, Options{Path: path, Handler: f.handle, Authorize: func(Peer) error { return nil }})
	return path
}

var device = Target{KindMemoryDevice, "PNP0C80:00"}

// TestProgressLines: a client that asks for progress gets a line per block, in order, then the
// response with what was freed, per item and in all.
func TestProgressLines(t *testing.T) {
	f := newFakeDevice()
	close(f.release)
	path := serveFake(t, f)
	var got []string
	resp, err := DoWith(t.Context(), path, Request{Op: OpOffline, Targets: []Target{device, {KindCPU, "1"}}},
		CallOptions{Progress: func(p Progress) {
			got = append(got, fmt.Sprintf("%s memory%d %s %d/%d %dM %s", p.Device, p.Block, p.State, p.Done, p.Of, p.FreedBytes/mib, p.Result))
		}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"PNP0C80:00 memory35 offline 1/4 128M success",
		"PNP0C80:00 memory34 offline 2/4 256M success",
		"PNP0C80:00 memory33 offline 3/4 384M success",
		"PNP0C80:00 memory32 offline 4/4 512M success",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}
	wantResp := Response{FreedBytes: 512 * mib, Results: []Result{
		{Kind: KindMemoryDevice, ID: "PNP0C80:00", Response: Success, FreedBytes: 512 * mib, FreedBlocks: 4},
		{Kind: KindCPU, ID: "1", Response: Success},
	}}
	if diff := cmp.Diff(wantResp, resp); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
}

// readLines sends raw (a request, with or without a newline) on a new connection, applies then
// to the connection, and returns every line the agent wrote until it closed the connection.
func readLines(t *testing.T, path, raw string, then func(*net.UnixConn)) []string {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	if then != nil {
		then(c)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var lines []string
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the answer: %v (lines so far: %q)", err, lines)
	}
	return lines
}

// TestOldClientsUnchanged: a request without "progress" is answered by one line, the response,
// as before progress existed, whatever the handler reports; a client that shuts down its
// sending side once it has sent the request (socat, nc -N) is not cancelling, and gets it too.
func TestOldClientsUnchanged(t *testing.T) {
	for _, tt := range []struct {
		name string
		then func(*net.UnixConn)
	}{
		{"connection kept open", nil},
		{"sending side shut down", func(c *net.UnixConn) { c.CloseWrite() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeDevice()
			path := serveFake(t, f)
			go func() { time.Sleep(100 * time.Millisecond); close(f.release) }()
			lines := readLines(t, path, `{"op":"offline","targets":[{"kind":"memory-device","id":"PNP0C80:00"}]}`, tt.then)
			want := `{"results":[{"kind":"memory-device","id":"PNP0C80:00","response":"success","freed_bytes":536870912,"freed_blocks":4}],"freed_bytes":536870912}`
			if len(lines) != 1 || lines[0] != want {
				t.Errorf("an old client read %q; want one line, %s", lines, want)
			}
			if cause, _ := f.got(); cause != nil {
				t.Errorf("the request was cancelled: %v", cause)
			}
		})
	}
}

// TestCancelByClosing: a client that closes its connection in the middle of a memory device
// cancels the request (ErrClientGone): the handler stops and rolls back.
func TestCancelByClosing(t *testing.T) {
	f := newFakeDevice()
	path := serveFake(t, f)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(c, `{"op":"offline","targets":[{"kind":"memory-device","id":"PNP0C80:00"}],"progress":true}`)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, `"block":35`) {
		t.Fatalf("first line %q, %v; want memory35's progress", line, err)
	}
	c.Close()
	waitCause(t, f, ErrClientGone)
}

// TestCancelMessage: a client that sends {"cancel":true} cancels the request (ErrCancelled)
// and still gets the answer: the rollback's progress line, then the response saying what was
// undone.
func TestCancelMessage(t *testing.T) {
	f := newFakeDevice()
	path := serveFake(t, f)
	cancel := make(chan struct{})
	var got []string
	resp, err := DoWith(t.Context(), path, Request{Op: OpOffline, Targets: []Target{device, {KindCPU, "1"}}}, CallOptions{
		Progress: func(p Progress) {
			got = append(got, fmt.Sprintf("memory%d %s rollback=%v", p.Block, p.State, p.Rollback))
			if p.Block == 35 && !p.Rollback {
				close(cancel)
			}
		},
		Cancel: cancel,
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"memory35 offline rollback=false", "memory35 online rollback=true"}, got); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}
	want := Response{Results: []Result{
		{Kind: KindMemoryDevice, ID: "PNP0C80:00", Response: Failed,
			Error: "memory-device PNP0C80:00: memory 34: cancelled by the client (memory blocks 35, taken offline first, are online again)", Stopped: StoppedCancelled},
		{Kind: KindCPU, ID: "1", Response: Failed, Error: "not begun: cancelled by the client", Stopped: StoppedCancelled},
	}}
	if diff := cmp.Diff(want, resp); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	if cause, calls := f.got(); !errors.Is(cause, ErrCancelled) || calls != 1 {
		t.Errorf("the handler ran %d times, its context ended with %v; want once, ErrCancelled", calls, cause)
	}
}

// TestTimeout: the request's deadline ends the handler's context with a *TimeoutError, which
// it reports; the items not begun fail with it.
func TestTimeout(t *testing.T) {
	f := newFakeDevice()
	path := serveFake(t, f)
	resp, err := Do(t.Context(), path, Request{Op: OpOffline, Targets: []Target{device, {KindCPU, "1"}}, TimeoutMS: 300})
	if err != nil {
		t.Fatal(err)
	}
	want := Response{Results: []Result{
		{Kind: KindMemoryDevice, ID: "PNP0C80:00", Response: Failed,
			Error: "memory-device PNP0C80:00: memory 34: timed out after 300ms (memory blocks 35, taken offline first, are online again)", Stopped: StoppedTimeout},
		{Kind: KindCPU, ID: "1", Response: Failed, Error: "not begun: timed out after 300ms", Stopped: StoppedTimeout},
	}}
	if diff := cmp.Diff(want, resp); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	if cause, _ := f.got(); !errors.Is(cause, context.DeadlineExceeded) {
		t.Errorf("the handler's context ended with %v; want a TimeoutError (DeadlineExceeded)", cause)
	}
	for _, ms := range []int64{-1, MaxTimeout.Milliseconds() + 1} {
		resp, err := Do(t.Context(), path, Request{Op: OpOffline, Targets: []Target{device}, TimeoutMS: ms})
		if err != nil || !strings.HasPrefix(resp.Error, "bad request: timeout_ms "+strconv.FormatInt(ms, 10)) {
			t.Errorf("timeout_ms %d: %+v, %v; want a bad request", ms, resp, err)
		}
	}
}

// TestStopping: an agent that stops cancels its requests with ErrStopping.
func TestStopping(t *testing.T) {
	f := newFakeDevice()
	path := filepath.Join(t.TempDir(), "control.sock")
	s, err := Listen(Options{Path: path, Handler: f.handle, Authorize: func(Peer) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	answered := make(chan Response, 1)
	go func() {
		resp, _ := DoWith(t.Context(), path, Request{Op: OpOffline, Targets: []Target{device}},
			CallOptions{Progress: func(p Progress) {
				if p.Block == 35 && !p.Rollback {
					stop()
				}
			}})
		answered <- resp
	}()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if resp := <-answered; len(resp.Results) != 1 || !strings.Contains(resp.Results[0].Error, "memory 34: cancelled: the agent is stopping") {
		t.Errorf("response %+v; want the device failed at memory 34 because the agent stops", resp)
	}
	waitCause(t, f, ErrStopping)
}

// TestOlderAgent: an agent that knows neither "progress" nor "timeout_ms" refuses them as
// unknown fields; DoWith asks again without them.
func TestOlderAgent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var requests []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// The older agent's decoding: unknown fields are errors.
			var req struct {
				Op      string   `json:"op"`
				Targets []Target `json:"targets"`
			}
			dec := json.NewDecoder(c)
			dec.DisallowUnknownFields()
			err = dec.Decode(&req)
			mu.Lock()
			if err != nil {
				requests = append(requests, "refused")
			} else {
				requests = append(requests, req.Op)
			}
			mu.Unlock()
			if err != nil {
				json.NewEncoder(c).Encode(Response{Error: "bad request: " + err.Error()})
			} else {
				json.NewEncoder(c).Encode(Response{Results: []Result{{Kind: req.Targets[0].Kind, ID: req.Targets[0].ID, Response: Success}}})
			}
			c.Close()
		}
	}()
	progress := 0
	resp, err := DoWith(t.Context(), path, Request{Op: OpOffline, Targets: []Target{device}, TimeoutMS: 1000},
		CallOptions{Progress: func(Progress) { progress++ }})
	if err != nil || len(resp.Results) != 1 || resp.Results[0].Response != Success || resp.Error != "" || progress != 0 {
		t.Errorf("DoWith to an older agent: %+v, %v, %d progress lines; want its success", resp, err, progress)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"refused", "offline"}, requests); diff != "" {
		t.Errorf("requests the older agent read (-want +got):\n%s", diff)
	}
}

func waitCause(t *testing.T, f *fakeDevice, want error) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		cause, _ := f.got()
		if errors.Is(cause, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the handler's context ended with %v; want %v", cause, want)
		}
	}
}
