//go:build linux

package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// TestServeOutlastsDescriptorShortage: an accept that fails with EMFILE (the process out of
// descriptors for a moment) is logged and tried again: the connection that waited is answered
// once descriptors are free, and the socket keeps serving.
func TestServeOutlastsDescriptorShortage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	logs := &testenv.Buffer{}
	s, err := Listen(Options{Path: path, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Authorize: func(Peer) error { return nil },
		Handler: func(_ context.Context, _ string, tg Target, _ Peer, _ func(Progress)) Result {
			return NewResult(tg, Success, nil)
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()

	// Every descriptor below a lowered limit in use, the client's socket made before: its connect
	// needs none, and the agent's accept has none left. (Freeing one for the client to dial with
	// raced with anything else in the process that opens a file.)
	cfd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 64, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	var fill []int
	relieve := func() {
		for _, fd := range fill {
			syscall.Close(fd)
		}
		fill = nil
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	}
	defer relieve()
	for {
		fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		fill = append(fill, fd)
	}
	if len(fill) == 0 {
		relieve()
		t.Fatal("no descriptor could be opened under the lowered limit")
	}
	dialErr := syscall.Connect(cfd, &syscall.SockaddrUnix{Name: path})
	const warned = `msg="control socket: accept failed; trying again until it works" component=control err="accept unix`
	for deadline := time.Now().Add(10 * time.Second); dialErr == nil && len(done) == 0 && !strings.Contains(logs.String(), warned) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	relieve()
	if dialErr != nil {
		t.Fatalf("connect: %v", dialErr)
	}
	f := os.NewFile(uintptr(cfd), "client")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if l := logs.String(); !strings.Contains(l, warned) || !strings.Contains(l, "too many open files") {
		t.Errorf("the failed accept was not logged as EMFILE:\n%s", l)
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v after an EMFILE; want it to keep serving", err)
	default:
	}

	// The connection that waited through the shortage is answered.
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(c).Encode(Request{Op: OpOnline, Targets: []Target{{KindCPU, "1"}}}); err != nil {
		t.Fatal(err)
	}
	var resp Response
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&resp); err != nil {
		t.Fatalf("the connection made during the shortage: %v", err)
	}
	if len(resp.Results) != 1 || resp.Results[0].Response != Success {
		t.Errorf("the connection made during the shortage: %+v; want cpu 1 success", resp)
	}
	// And the socket serves on.
	if resp, err := Do(context.Background(), path, Request{Op: OpOnline, Targets: []Target{{KindCPU, "2"}}}); err != nil || len(resp.Results) != 1 {
		t.Errorf("Do after the shortage: %+v, %v", resp, err)
	}
	if l := logs.String(); !strings.Contains(l, `msg="control socket: accepting again" component=control failed_accepts=`) {
		t.Errorf("the recovery was not logged:\n%s", l)
	}
	if n := strings.Count(logs.String(), "accept failed"); n != 1 {
		t.Errorf("the failed accepts were logged %d times; want once for the shortage", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after its context ended: %v; want nil", err)
	}
}

// TestServeReturnsAcceptFailure: an accept that fails for good ends Serve with the error, for
// the agent to log, rather than as though the server had been closed.
func TestServeReturnsAcceptFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	s, err := Listen(Options{Path: path,
		Handler: func(_ context.Context, _ string, tg Target, _ Peer, _ func(Progress)) Result {
			return NewResult(tg, Success, nil)
		}})
	if err != nil {
		t.Fatal(err)
	}
	// The listening socket replaced under it by one that does not listen: accept fails with
	// EINVAL, every time.
	other, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(other)
	rc, err := s.ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { err = syscall.Dup3(other, int(fd), syscall.O_CLOEXEC) })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, syscall.EINVAL) || !strings.HasPrefix(err.Error(), "control: accept: ") {
			t.Errorf("Serve returned %v; want the accept's EINVAL", err)
		}
	case <-time.After(10 * time.Second):
		s.Close()
		t.Fatal("Serve did not return within 10 s of its socket failing")
	}
}
