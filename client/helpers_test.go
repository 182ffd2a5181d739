package client

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/web"
)

// patience bounds every wait of these tests: a generous deadline for something that must happen,
// never a measurement.
const patience = 30 * time.Second

func cpuIface(n int) notify.Interface {
	return notify.Interface{ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: fmt.Sprintf("/sys/devices/system/cpu/cpu%d", n),
		Number: n, Node: 0, State: "online"}
}

func blockIface(n int) notify.Interface {
	return notify.Interface{ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: fmt.Sprintf("/sys/devices/system/memory/memory%d", n),
		Number: n, Node: -1, PhysStart: uint64(n) << 27, Size: 1 << 27, State: "online", Zones: "Normal"}
}

// testLogger returns a debug logger whose output the test prints if it fails.
func testLogger(t *testing.T, name string) *slog.Logger {
	t.Helper()
	buf := &testenv.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("who", name)
}

// memAgent is the agent's registry and HTTP handler, in memory: a test publishes into it.
type memAgent struct {
	reg *notify.Registry
	srv *httptest.Server
	// cut counts the subscribers cut off (web.Options.OnCut): the hub counts one too slow at
	// once, even while its handler is blocked writing to it.
	cut atomic.Int64
}

func newMemAgent(t *testing.T, seed []notify.Interface, lastID uint64, o web.Options) *memAgent {
	t.Helper()
	m := &memAgent{}
	m.reg = notify.NewRegistry(notify.Options{Logger: testLogger(t, "registry")})
	m.reg.Seed(seed)
	m.reg.SetLastID(lastID)
	o.Registry, o.Gatherer = m.reg, prometheus.NewRegistry()
	o.OnCut = func() { m.cut.Add(1) }
	if o.Logger == nil {
		o.Logger = testLogger(t, "web")
	}
	h, err := web.Handler(o)
	if err != nil {
		t.Fatal(err)
	}
	m.srv = httptest.NewServer(h)
	t.Cleanup(func() {
		m.srv.CloseClientConnections()
		m.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.reg.Close(ctx)
	})
	return m
}

func (m *memAgent) addr() string { return strings.TrimPrefix(m.srv.URL, "http://") }

// publish publishes an event of iface and fails the test if the registry refuses it.
func (m *memAgent) publish(t *testing.T, event bool, iface notify.Interface) {
	t.Helper()
	ev := notify.GUIDDeviceInterfaceRemoval
	if event {
		ev = notify.GUIDDeviceInterfaceArrival
	}
	if !m.reg.Publish(notify.NewNotification(ev, iface, 0, time.Now(), notify.CauseUevent)) {
		t.Fatalf("registry refused %s of %s", notify.EventName(ev), iface.SymbolicLink)
	}
}

// flip publishes n alternating removals and arrivals of iface, which must be active.
func (m *memAgent) flip(t *testing.T, iface notify.Interface, n int) {
	t.Helper()
	for i := range n {
		m.publish(t, i%2 == 1, iface)
	}
}

// recorder is a callback that keeps what it is given.
type recorder struct {
	mu    sync.Mutex
	got   []notify.Notification
	moved chan struct{} // capacity 1: something was recorded
}

func newRecorder() *recorder { return &recorder{moved: make(chan struct{}, 1)} }

func (r *recorder) callback(_ context.Context, n notify.Notification) error {
	r.add(n)
	return nil
}

// registryCallback is the same, as a notify.Callback (the in-agent ground truth).
func (r *recorder) registryCallback(_ context.Context, n notify.Notification, _ any) error {
	r.add(n)
	return nil
}

func (r *recorder) add(n notify.Notification) {
	r.mu.Lock()
	r.got = append(r.got, n)
	r.mu.Unlock()
	select {
	case r.moved <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []notify.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// lastID returns the ID of the last numbered notification recorded, 0 if none.
func (r *recorder) lastID() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.got) - 1; i >= 0; i-- {
		if r.got[i].ID != 0 {
			return r.got[i].ID
		}
	}
	return 0
}

// waitFor polls cond until it holds, failing the test after patience with what describe says.
func waitFor(t *testing.T, what string, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			extra := ""
			if describe != nil {
				extra = ": " + describe()
			}
			t.Fatalf("not within %s: %s%s", patience, what, extra)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// short describes a notification in a few words: "removal cpu1 #12 uevent".
func short(n notify.Notification) string {
	link := n.SymbolicLinkName[strings.LastIndex(n.SymbolicLinkName, "/")+1:]
	return fmt.Sprintf("%s %s #%d %s", notify.EventName(n.Event), link, n.ID, n.Cause)
}

func shorts(ns []notify.Notification) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = short(n)
	}
	return out
}

// numbered returns the notifications that carry an agent ID, in order.
func numbered(ns []notify.Notification) []notify.Notification {
	var out []notify.Notification
	for _, n := range ns {
		if n.ID != 0 {
			out = append(out, n)
		}
	}
	return out
}

// checkAlternation fails the test unless, per interface, the sequence starts with an arrival
// (or a removal of an interface in start) and alternates, and returns the resulting view.
func checkAlternation(t *testing.T, start []notify.Interface, seq []notify.Notification) map[string]notify.Interface {
	t.Helper()
	view := map[string]notify.Interface{}
	for _, i := range start {
		view[i.SymbolicLink] = i
	}
	for k, n := range seq {
		_, active := view[n.SymbolicLinkName]
		switch {
		case n.IsArrival() && active:
			t.Fatalf("notification %d (%s): a second arrival without a removal between", k, short(n))
		case !n.IsArrival() && !active:
			t.Fatalf("notification %d (%s): a removal of an interface not active", k, short(n))
		case n.IsArrival():
			view[n.SymbolicLinkName] = n.Interface
		default:
			delete(view, n.SymbolicLinkName)
		}
	}
	return view
}

// sameView fails the test unless view holds exactly want (by symbolic link and details).
func sameView(t *testing.T, what string, view map[string]notify.Interface, want []notify.Interface) {
	t.Helper()
	var got, exp []string
	for _, i := range view {
		got = append(got, fmt.Sprintf("%s/%s", i.SymbolicLink, i.State))
	}
	for _, i := range want {
		exp = append(exp, fmt.Sprintf("%s/%s", i.SymbolicLink, i.State))
	}
	slices.Sort(got)
	slices.Sort(exp)
	if !slices.Equal(got, exp) {
		t.Fatalf("%s: view %v; want the agent's %v", what, got, exp)
	}
}

// newTestClient makes a client with a fast backoff and closes it at the end of the test.
func newTestClient(t *testing.T, url string, o Options) *Client {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testLogger(t, "client")
	}
	if o.Backoff == (BackoffOptions{}) {
		o.Backoff = BackoffOptions{Min: time.Millisecond, Max: 20 * time.Millisecond}
	}
	c, err := New(url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return c
}

func waitReady(t *testing.T, r *Registration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := r.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

// cutMode is how the proxy kills connections.
type cutMode int

const (
	cutNow      cutMode = iota // close every open connection at once, wherever its stream is
	cutMidFrame                // cut each open connection inside the next chunk the agent sends
	cutRequest                 // cut the next new connection inside the client's request
	cutModes
)

func (m cutMode) String() string {
	return [...]string{"now", "mid-frame", "request"}[m]
}

// proxy is a TCP proxy on 127.0.0.1 that a test can cut, take down and point elsewhere.
type proxy struct {
	t   *testing.T
	ln  net.Listener
	rng *rand.Rand

	mu       sync.Mutex
	target   string
	down     bool
	conns    map[*proxyConn]struct{}
	rngMu    sync.Mutex
	armedReq int // the next armedReq new connections die inside their request

	kills   atomic.Int64 // connections killed by a cut
	accepts atomic.Int64
}

type proxyConn struct {
	client, server net.Conn
	midFrame       atomic.Bool
	once           sync.Once
}

func newProxy(t *testing.T, target string, seed uint64) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: target, conns: map[*proxyConn]struct{}{}, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.kill()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *proxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) intN(n int) int {
	p.rngMu.Lock()
	defer p.rngMu.Unlock()
	if n <= 0 {
		return 0
	}
	return p.rng.IntN(n)
}

// SetTarget points new connections at addr.
func (p *proxy) SetTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

// Down closes every connection and refuses new ones (they are accepted and closed) until Up.
func (p *proxy) Down() {
	p.mu.Lock()
	p.down = true
	conns := p.conns
	p.conns = map[*proxyConn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		c.kill()
	}
}

// Up accepts connections again.
func (p *proxy) Up() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// Cut kills connections as mode says; the kills are counted when they happen.
func (p *proxy) Cut(mode cutMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch mode {
	case cutNow:
		for c := range p.conns {
			delete(p.conns, c)
			c.kill()
			p.kills.Add(1)
		}
	case cutMidFrame:
		for c := range p.conns {
			c.midFrame.Store(true)
		}
	case cutRequest:
		p.armedReq++
	}
}

func (p *proxy) accept() {
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepts.Add(1)
		p.mu.Lock()
		down, target := p.down, p.target
		cutReq := false
		if p.armedReq > 0 && !down {
			p.armedReq--
			cutReq = true
		}
		p.mu.Unlock()
		if down {
			cc.Close()
			continue
		}
		sc, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			cc.Close()
			continue
		}
		c := &proxyConn{client: cc, server: sc}
		p.mu.Lock()
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		go p.pipe(c, cc, sc, cutReq, false)
		go p.pipe(c, sc, cc, false, true)
	}
}

// pipe copies src to dst in chunks. toClient is the agent's direction, where mid-frame cuts
// happen; cutFirst cuts inside the first chunk (the client's request).
func (p *proxy) pipe(c *proxyConn, src, dst net.Conn, cutFirst, toClient bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if cutFirst || (toClient && c.midFrame.Load()) {
				dst.Write(buf[:p.intN(n)])
				p.drop(c)
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				p.forget(c)
				return
			}
		}
		if err != nil {
			p.forget(c)
			return
		}
	}
}

// forget closes c after its stream ended by itself (not a cut).
func (p *proxy) forget(c *proxyConn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.kill()
}

// drop kills c as a counted cut.
func (p *proxy) drop(c *proxyConn) {
	p.mu.Lock()
	_, open := p.conns[c]
	delete(p.conns, c)
	p.mu.Unlock()
	c.kill()
	if open {
		p.kills.Add(1)
	}
}

func (c *proxyConn) kill() {
	c.once.Do(func() {
		// An abortive close (RST) for the client, as a dead peer or a middlebox gives.
		if tc, ok := c.client.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.client.Close()
		c.server.Close()
	})
}
