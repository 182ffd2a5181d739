package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// clientEnv makes the test binary act as a control client (see TestMain): it sends the request
// in HOTPLUG_CONTROL_TEST_REQUEST to the socket at this path and prints the response as JSON,
// or "error: ..." when there is none.
const clientEnv = "HOTPLUG_CONTROL_TEST_CLIENT"

func TestMain(m *testing.M) {
	if path := os.Getenv(clientEnv); path != "" {
		var req Request
		json.Unmarshal([]byte(os.Getenv("HOTPLUG_CONTROL_TEST_REQUEST")), &req)
		resp, err := Do(context.Background(), path, req)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(0)
		}
		json.NewEncoder(os.Stdout).Encode(resp)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serve runs a server at path until the test ends.
func serve(t *testing.T, o Options) *Server {
	t.Helper()
	s, err := Listen(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

func TestServeRequest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "control.sock")
	var mu sync.Mutex
	var seen []string
	var peers []Peer
	var observed []string
	logs := &testenv.Buffer{}
	serve(t, Options{
		Path:      path,
		Logger:    slog.New(slog.NewTextHandler(logs, nil)),
		Authorize: func(Peer) error { return nil }, // this test may run as any user
		Observe: func(op, response string) {
			mu.Lock()
			observed = append(observed, op+" "+response)
			mu.Unlock()
		},
		Handler: func(ctx context.Context, op string, tg Target, p Peer, _ func(Progress)) Result {
			mu.Lock()
			seen = append(seen, op+" "+tg.String())
			peers = append(peers, p)
			mu.Unlock()
			switch tg.ID {
			case "0":
				return NewResult(tg, Failed, fmt.Errorf("write offline: %w", syscall.EBUSY))
			case "7":
				return NewResult(tg, NotFound, errors.New("no such CPU"))
			}
			return NewResult(tg, Success, nil)
		},
	})
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Mode().Type() != os.ModeSocket {
		t.Errorf("socket mode %v; want a socket with 0600", st.Mode())
	}
	if st.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
		t.Errorf("socket owned by uid %d; want the agent's %d", st.Sys().(*syscall.Stat_t).Uid, os.Geteuid())
	}
	resp, err := Do(context.Background(), path, Request{Op: OpOffline, Targets: []Target{{KindCPU, "1"}, {KindMemory, "0"}, {KindCPU, "7"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := Response{Results: []Result{
		{Kind: "cpu", ID: "1", Response: Success},
		{Kind: "memory", ID: "0", Response: Failed, Error: "write offline: device or resource busy", ErrorCode: 16, ErrorName: "EBUSY"},
		{Kind: "cpu", ID: "7", Response: NotFound, Error: "no such CPU"},
	}}
	if diff := cmp.Diff(want, resp); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"offline cpu 1", "offline memory 0", "offline cpu 7"}, seen); diff != "" {
		t.Errorf("handled (-want +got):\n%s", diff)
	}
	if peers[0].UID != os.Getuid() || peers[0].PID != os.Getpid() {
		t.Errorf("peer %+v; want uid %d pid %d (this process)", peers[0], os.Getuid(), os.Getpid())
	}
	if diff := cmp.Diff([]string{"offline success", "offline operation-failed", "offline not-found"}, observed); diff != "" {
		t.Errorf("observed (-want +got):\n%s", diff)
	}
	if l := logs.String(); !strings.Contains(l, fmt.Sprintf("msg=\"control request\" component=control uid=%d pid=%d op=offline targets=\"cpu 1, memory 0, cpu 7\"", os.Getuid(), os.Getpid())) {
		t.Errorf("the request was not logged with the peer's uid and pid:\n%s", l)
	}
}

func TestServeBadRequests(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	called := false
	serve(t, Options{Path: path, Authorize: func(Peer) error { return nil },
		Handler: func(context.Context, string, Target, Peer, func(Progress)) Result { called = true; return Result{} }})
	for _, tt := range []struct {
		req  Request
		want string
	}{
		{Request{Op: "eject", Targets: []Target{{KindCPU, "1"}}}, `bad request: op "eject": want online, offline or reload`},
		{Request{Op: OpOnline}, "bad request: no targets"},
		{Request{Op: OpOnline, Targets: []Target{{"disk", "1"}}}, `target kind "disk"`},
		{Request{Op: OpOnline, Targets: []Target{{KindCPU, "01"}}}, "cpu 01: want a number"},
		{Request{Op: OpOnline, Targets: []Target{{KindMemory, "-3"}}}, "memory -3: want a number"},
		{Request{Op: OpOnline, Targets: []Target{{KindMemoryDevice, ""}}}, "want a device id"},
	} {
		resp, err := Do(context.Background(), path, tt.req)
		if err != nil || !strings.Contains(resp.Error, tt.want) || len(resp.Results) != 0 {
			t.Errorf("Do(%+v) = %+v, %v; want the request refused with %q", tt.req, resp, err, tt.want)
		}
	}
	// Not JSON at all.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(c, "offline cpu 1")
	var resp Response
	json.NewDecoder(c).Decode(&resp)
	c.Close()
	if !strings.HasPrefix(resp.Error, "bad request: ") {
		t.Errorf("a request that is not JSON got %+v", resp)
	}
	if called {
		t.Error("the handler ran for a bad request")
	}
}

func TestRootOnly(t *testing.T) {
	if err := RootOnly(Peer{UID: 0, PID: 1}); err != nil {
		t.Errorf("RootOnly(root) = %v", err)
	}
	if err := RootOnly(Peer{UID: 65534}); err == nil || err.Error() != "permission denied: uid 65534 is not root" {
		t.Errorf("RootOnly(nobody) = %v", err)
	}
}

// TestDefaultRefusesNonRoot: with the default authorisation a non-root peer is refused (as a
// non-root test user, this is the test's own connection; as root see
// TestIntegrationControlRejectsNonRoot).
func TestDefaultRefusesNonRoot(t *testing.T) {
	if os.Getuid() == 0 {
		t.Skip("runs as root: the peer would be allowed; TestIntegrationControlRejectsNonRoot covers a non-root peer")
	}
	path := filepath.Join(t.TempDir(), "control.sock")
	serve(t, Options{Path: path, Handler: func(context.Context, string, Target, Peer, func(Progress)) Result {
		t.Error("the handler ran for a non-root peer")
		return Result{}
	}})
	resp, err := Do(context.Background(), path, Request{Op: OpOffline, Targets: []Target{{KindCPU, "1"}}})
	if err != nil || resp.Error != fmt.Sprintf("permission denied: uid %d is not root", os.Getuid()) {
		t.Errorf("Do as uid %d = %+v, %v; want permission denied", os.Getuid(), resp, err)
	}
}

// TestIntegrationControlRejectsNonRoot runs a client as nobody (uid 65534). With the socket's
// mode 0600 it cannot even connect; with the mode opened up to 0666, so that only the peer
// credential check stands in its way, it connects and is refused, the handler never runs, and
// the refusal is logged with its uid and pid.
func TestIntegrationControlRejectsNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "needs root: it runs the client as another user (uid 65534)")
	}
	dir, err := os.MkdirTemp("", "hotplug-control")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // nobody must reach the socket and run the client copied here
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	client := filepath.Join(dir, "client")
	if err := os.WriteFile(client, b, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "control.sock")
	logs := &testenv.Buffer{}
	serve(t, Options{Path: path, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Handler: func(context.Context, string, Target, Peer, func(Progress)) Result {
			t.Error("the handler ran for a non-root peer")
			return Result{}
		}})
	runAsNobody := func() (string, int) {
		t.Helper()
		req, _ := json.Marshal(Request{Op: OpOffline, Targets: []Target{{KindCPU, "1"}}})
		cmd := execCommand(client, clientEnv+"="+path, "HOTPLUG_CONTROL_TEST_REQUEST="+string(req))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("client as nobody: %v", err)
		}
		return strings.TrimSpace(string(out)), cmd.Process.Pid
	}

	out, _ := runAsNobody()
	if want := "error: " + path + ": permission denied: the control socket is for root"; out != want {
		t.Errorf("nobody connecting to the 0600 socket: %q; want %q", out, want)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	out, pid := runAsNobody()
	var resp Response
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.Error != "permission denied: uid 65534 is not root" || len(resp.Results) != 0 {
		t.Errorf("nobody's request answered %q; want the error permission denied: uid 65534 is not root", out)
	}
	want := fmt.Sprintf(`msg="control request refused" component=control uid=65534 pid=%d`, pid)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), want) && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	}
	if !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, logs.String())
	}
}

func TestListenSocketFile(t *testing.T) {
	dir := t.TempDir()
	handler := func(context.Context, string, Target, Peer, func(Progress)) Result { return Result{} }

	// A stale socket (its agent died without removing it) is replaced.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	s, err := Listen(Options{Path: stale, Handler: handler})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	// A live one is not.
	if _, err := Listen(Options{Path: stale, Handler: handler}); err == nil || !strings.Contains(err.Error(), "another agent is listening") {
		t.Errorf("Listen over a live socket: %v", err)
	}
	s.Close()
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket file remains after Close: %v", err)
	}
	// A file that is not a socket is left alone.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, err := Listen(Options{Path: file, Handler: handler}); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("the regular file was changed")
	}
	if _, err := Listen(Options{Path: "", Handler: handler}); err == nil {
		t.Error("Listen with an empty path succeeded")
	}
}

func TestDoWithoutAgent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	_, err := Do(context.Background(), path, Request{Op: OpOffline, Targets: []Target{{KindCPU, "1"}}})
	if err == nil || !strings.Contains(err.Error(), "no agent is listening on "+path) {
		t.Errorf("Do without an agent: %v", err)
	}
}

func TestNewResult(t *testing.T) {
	tg := Target{KindCPU, "1"}
	veto := fmt.Errorf("notify: remove cpu1: %w", &notify.VetoError{Owner: "guard", Phase: "query_remove", Err: errors.New("busy")})
	if r := NewResult(tg, Failed, veto); r.VetoedBy != "guard" || r.ErrorCode != 0 || !strings.Contains(r.Error, "vetoed by guard") {
		t.Errorf("NewResult(veto) = %+v", r)
	}
	if r := NewResult(tg, Failed, fmt.Errorf("write: %w", syscall.EINVAL)); r.ErrorCode != 22 || r.ErrorName != "EINVAL" || r.VetoedBy != "" {
		t.Errorf("NewResult(EINVAL) = %+v", r)
	}
	if r := NewResult(tg, Success, nil); r != (Result{Kind: "cpu", ID: "1", Response: Success}) {
		t.Errorf("NewResult(success) = %+v", r)
	}
}

// TestServeReload: a reload request carries no targets; the agent's answer (its Reload) is the
// response: nothing when the configuration is in force, else why not; and it is counted.
func TestServeReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	var refuse atomic.Bool
	var observed []string
	var mu sync.Mutex
	serve(t, Options{
		Path: path,
		Handler: func(context.Context, string, Target, Peer, func(Progress)) Result {
			t.Error("Handler called for a reload")
			return Result{}
		},
		Authorize: func(Peer) error { return nil },
		Observe: func(op, response string) {
			mu.Lock()
			observed = append(observed, op+" "+response)
			mu.Unlock()
		},
		Reload: func(context.Context, Peer) error {
			if refuse.Load() {
				return errors.New(`config /etc/hotplug-agent/config.yaml: line 2: unknown key "callbaks"`)
			}
			return nil
		},
	})
	ctx := t.Context()
	resp, err := Do(ctx, path, Request{Op: OpReload})
	if err != nil || resp.Error != "" || len(resp.Results) != 0 {
		t.Errorf("reload: %+v, %v; want an empty response", resp, err)
	}
	refuse.Store(true)
	resp, err = Do(ctx, path, Request{Op: OpReload})
	if err != nil || !strings.Contains(resp.Error, `unknown key "callbaks"`) {
		t.Errorf("refused reload: %+v, %v; want the agent's reason as the error", resp, err)
	}
	if err := (Request{Op: OpReload, Targets: []Target{{Kind: KindCPU, ID: "1"}}}).Validate(); err == nil {
		t.Error("a reload with targets is valid")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"reload success", "reload operation-failed"}; !slices.Equal(observed, want) {
		t.Errorf("observed %q; want %q", observed, want)
	}
}

// TestServeReloadUnsupported: an agent with no Reload says it cannot reload.
func TestServeReloadUnsupported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	serve(t, Options{Path: path, Handler: func(context.Context, string, Target, Peer, func(Progress)) Result { return Result{} },
		Authorize: func(Peer) error { return nil }})
	resp, err := Do(t.Context(), path, Request{Op: OpReload})
	if err != nil || !strings.Contains(resp.Error, "cannot reload") {
		t.Errorf("reload of an agent that cannot: %+v, %v", resp, err)
	}
}
