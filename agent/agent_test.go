//go:build linux

package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/udev"
)

// fakeSource hands the agent the events a test sends, in place of the kernel's socket.
type fakeSource struct {
	ch     chan udev.Event
	closed chan struct{}
}

func newFakeSource() *fakeSource {
	return &fakeSource{ch: make(chan udev.Event, 16), closed: make(chan struct{})}
}

func (f *fakeSource) Read(ctx context.Context) (udev.Event, error) {
	select {
	case <-ctx.Done():
		return udev.Event{}, ctx.Err()
	case <-f.closed:
		return udev.Event{}, net.ErrClosed
	case ev := <-f.ch:
		return ev, nil
	}
}

func (f *fakeSource) Close() error {
	select {
	case <-f.closed:
	default:
		close(f.closed)
	}
	return nil
}

func (f *fakeSource) send(t *testing.T, action, devpath, subsystem string, seq uint64) {
	t.Helper()
	raw := fmt.Sprintf("%s@%s\x00ACTION=%s\x00DEVPATH=%s\x00SUBSYSTEM=%s\x00SEQNUM=%d\x00", action, devpath, action, devpath, subsystem, seq)
	ev, err := udev.Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	ev.ReadAt = time.Now()
	f.ch <- ev
}

// fixture copies the vm sysfs fixture into a temporary directory the test may change.
func fixture(t *testing.T) string { return testenv.SysfsFixture(t, "..") }

// runAgent starts an agent on root with a fake source and returns its first address.
func runAgent(t *testing.T, o Options) (*Agent, *fakeSource, context.CancelFunc, chan error) {
	t.Helper()
	src := newFakeSource()
	o.Source = src
	if o.ListenAddresses == nil {
		o.ListenAddresses = []string{"127.0.0.1:0"}
	}
	a, err := New(o)
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
		case <-time.After(20 * time.Second):
			t.Error("agent did not stop within 20 s")
		}
	})
	return a, src, cancel, done
}

// TestSystemdNotifyAndWatchdog plays systemd: it owns NOTIFY_SOCKET, asks for a watchdog, and
// checks READY=1, the pings, their absence while the event loop is wedged on one event, their
// return when it recovers, and STOPPING=1 at shutdown.
func TestSystemdNotifyAndWatchdog(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "400000")
	msgs := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	expect := func(want string, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s from the agent within %s", want, within)
			}
		}
	}

	root := fixture(t)
	_, src, cancel, done := runAgent(t, Options{SysfsPath: root})
	expect("READY=1", 10*time.Second)
	expect("WATCHDOG=1", 10*time.Second)

	// Wedge the loop: a CPU appears whose online file is a FIFO with no writer, so reading it
	// blocks the loop on that event.
	cpu7 := filepath.Join(root, "devices/system/cpu/cpu7")
	os.MkdirAll(cpu7, 0o755)
	if err := syscall.Mkfifo(filepath.Join(cpu7, "online"), 0o644); err != nil {
		t.Fatal(err)
	}
	src.send(t, "online", "/devices/system/cpu/cpu7", "cpu", 100)
	// Once the loop has been stuck longer than the watchdog interval the pings stop: after a
	// settling second, none may come for another second.
	time.Sleep(time.Second)
	for len(msgs) > 0 {
		<-msgs
	}
	select {
	case m := <-msgs:
		t.Fatalf("the watchdog was fed (%q) while the event loop was wedged", m)
	case <-time.After(time.Second):
	}
	// Unwedge: a writer gives the read its value; the pings resume.
	w, err := os.OpenFile(filepath.Join(cpu7, "online"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("1\n"))
	w.Close()
	expect("WATCHDOG=1", 10*time.Second)

	cancel()
	expect("STOPPING=1", 10*time.Second)
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	done <- nil // for the cleanup
}

// TestWebConfigTLSAndBasicAuth serves with an exporter-toolkit web config: TLS with a
// certificate made here, and basic auth that protects every endpoint alike.
func TestWebConfigTLSAndBasicAuth(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, pool := selfSigned(t)
	os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "web.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prometheus: %s\n",
		filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), hash)), 0o600)

	a, _, _, _ := runAgent(t, Options{SysfsPath: fixture(t), WebConfigFile: cfg})
	base := "https://" + a.Addrs()[0].String()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(path, user, pass string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		var resp *http.Response
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if resp, err = client.Do(req); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		if path == "/events" && resp.StatusCode == 200 {
			return 200 // a stream: do not read to the end
		}
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	for _, p := range []string{"/metrics", "/interfaces", "/events", "/healthz", "/"} {
		if code := get(p, "", ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d; want 401", p, code)
		}
		if code := get(p, "prometheus", "wrong"); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong password: %d; want 401", p, code)
		}
		if code := get(p, "prometheus", "s3cret"); code != http.StatusOK {
			t.Errorf("GET %s with credentials: %d; want 200", p, code)
		}
	}
	// Plain HTTP to the TLS port is refused.
	if resp, err := http.Get("http://" + a.Addrs()[0].String() + "/metrics"); err == nil {
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP served /metrics on the TLS port")
		}
		resp.Body.Close()
	}
}

func TestBadWebConfigFailsEarly(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "web.yml")
	os.WriteFile(cfg, []byte("tls_server_config:\n  cert_file: /nonexistent.pem\n"), 0o600)
	_, err := New(Options{SysfsPath: fixture(t), WebConfigFile: cfg, ListenAddresses: []string{"127.0.0.1:0"}, Source: newFakeSource()})
	if err == nil || !strings.Contains(err.Error(), "web config "+cfg) {
		t.Errorf("New with a broken web config: %v; want an error naming the file", err)
	}
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "hotplug-agent test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), pool
}

// behindSource is a fake source whose socket queue has held uevents for behind.
type behindSource struct {
	*fakeSource
	behind atomic.Int64
}

func (b *behindSource) Behind(time.Time) time.Duration { return time.Duration(b.behind.Load()) }

// TestHealthzBehindKernel: /healthz fails, saying so, while uevents have waited in the socket's
// queue longer than the loop may take for one, and recovers once the loop has caught up; the
// backlog is on /metrics.
func TestHealthzBehindKernel(t *testing.T) {
	src := &behindSource{fakeSource: newFakeSource()}
	a, err := New(Options{SysfsPath: fixture(t), Source: src, ListenAddresses: []string{"127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + a.Addrs()[0].String()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %q with nothing queued; want 200", code, body)
	}
	src.behind.Store(int64(defaultStuckAfter + 2*time.Second))
	code, body := get("/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "behind the kernel") {
		t.Errorf("/healthz = %d %q with uevents queued for 12s; want 503 saying the loop is behind the kernel", code, body)
	}
	if _, m := get("/metrics"); !strings.Contains(m, "hotplug_agent_uevent_backlog_seconds 12\n") {
		t.Errorf("/metrics lacks hotplug_agent_uevent_backlog_seconds 12")
	}
	src.behind.Store(0)
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q once caught up; want 200", code, body)
	}
}

// TestFailedResyncIsTriedAgain: a resync that fails (sysfs cannot be read for a moment) is tried
// again without waiting for another uevent or gap: a CPU that went offline while its uevent was
// lost is announced once sysfs can be read again, with no uevent after.
func TestFailedResyncIsTriedAgain(t *testing.T) {
	root := fixture(t)
	a, src, _, _ := runAgent(t, Options{SysfsPath: root})
	got := make(chan notify.Notification, 16)
	if _, err := a.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.GUIDDeviceProcessor, "watch",
		func(_ context.Context, n notify.Notification, _ any) error { got <- n; return nil }, nil); err != nil {
		t.Fatal(err)
	}
	cpu := filepath.Join(root, "devices/system/cpu")
	src.send(t, "change", "/devices/system/cpu/cpu0", "cpu", 100)
	// cpu1 goes offline and its uevent is lost; sysfs cannot be read when the gap is seen.
	if err := os.WriteFile(filepath.Join(cpu, "online"), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	online := filepath.Join(cpu, "cpu1/online")
	if err := os.Remove(online); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(online, 0o755); err != nil { // reads fail with EISDIR
		t.Fatal(err)
	}
	src.send(t, "change", "/devices/system/cpu/cpu0", "cpu", 105)
	time.Sleep(200 * time.Millisecond) // the resync's three tries fail
	select {
	case n := <-got:
		t.Fatalf("%s of %s announced while sysfs could not be read", notify.EventName(n.Event), n.SymbolicLinkName)
	default:
	}
	if err := os.Remove(online); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(online, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n.Event != notify.GUIDDeviceInterfaceRemoval || n.SymbolicLinkName != "/sys/devices/system/cpu/cpu1" {
			t.Errorf("got %s of %s; want the removal of cpu1", notify.EventName(n.Event), n.SymbolicLinkName)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cpu1's removal not announced 10 s after sysfs could be read again")
	}
}
