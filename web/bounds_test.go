package web

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// flushWriter is an http.ResponseWriter for the events handler without a connection: it
// discards the body and says when the headers and the first flush went out.
type flushWriter struct {
	h       http.Header
	flushed chan struct{}
	once    sync.Once
}

func (w *flushWriter) Header() http.Header         { return w.h }
func (w *flushWriter) WriteHeader(int)             {}
func (w *flushWriter) Write(b []byte) (int, error) { return io.Discard.Write(b) }
func (w *flushWriter) Flush()                      { w.once.Do(func() { close(w.flushed) }) }

// TestIdleSubscribersCostLittle holds 2,000 idle /events subscribers in the handler, with the
// default StreamBuffer, and measures what each costs beyond its connection: the heap and the
// goroutine stack. A queue made for the whole buffer up front cost about 280 KiB each.
func TestIdleSubscribersCostLittle(t *testing.T) {
	const n = 2000
	reg := notify.NewRegistry(notify.Options{})
	reg.Seed([]notify.Interface{cpu(0), cpu(1)})
	defer reg.Close(context.Background())
	h, err := Handler(Options{Registry: reg, Gatherer: prometheus.NewRegistry(), MaxStreamSubscribers: n})
	if err != nil {
		t.Fatal(err)
	}
	inUse := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc + m.StackInuse
	}
	before := inUse()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for range n {
		w := &flushWriter{h: http.Header{}, flushed: make(chan struct{})}
		r := httptest.NewRequestWithContext(ctx, "GET", "/events", nil)
		wg.Go(func() { h.ServeHTTP(w, r) })
		select {
		case <-w.flushed:
		case <-time.After(10 * time.Second):
			t.Fatal("a subscriber got no headers within 10 s")
		}
	}
	per := (int64(inUse()) - int64(before)) / n
	t.Logf("%d idle subscribers: %d bytes each (heap and stack)", n, per)
	if per > 16<<10 {
		t.Errorf("an idle subscriber costs %d bytes; want at most 16 KiB", per)
	}
}

// TestEventsSubscriberLimit: beyond MaxStreamSubscribers, of both streams together, /events
// answers 503 with Retry-After and a line that names the limit and the flag, and counts the
// refusal; a subscriber that leaves makes room for another.
func TestEventsSubscriberLimit(t *testing.T) {
	reg := notify.NewRegistry(notify.Options{})
	reg.Seed([]notify.Interface{cpu(0), cpu(1)})
	devices := notify.NewRegistry(notify.Options{})
	defer reg.Close(context.Background())
	defer devices.Close(context.Background())
	var mu sync.Mutex
	refused := map[string]int{}
	h, err := Handler(Options{Registry: reg, DeviceRegistry: devices, Gatherer: prometheus.NewRegistry(),
		MaxStreamSubscribers: 3, OnRefused: func(reason string) { mu.Lock(); refused[reason]++; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	_, done1 := stream(t, srv.URL+"/events")
	defer done1()
	_, done2 := stream(t, srv.URL+"/events?class=processor")
	defer done2()
	_, done3 := stream(t, srv.URL+"/events?memory_devices=true")
	defer done3()

	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		resp.Body.Close()
		t.Fatalf("a fourth subscriber: %s, Retry-After %q; want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "at most 3") || !strings.Contains(string(body), "--web.max-stream-subscribers") ||
		strings.Count(string(body), "\n") != 1 {
		t.Errorf("refusal body %q; want one line naming the limit and the flag", body)
	}
	mu.Lock()
	if refused[RefusedSubscribers] != 1 || len(refused) != 1 {
		t.Errorf("refusals counted: %v; want subscribers: 1", refused)
	}
	mu.Unlock()

	// Other endpoints are not affected.
	if resp, err := http.Get(srv.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz with the subscribers at their limit: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	done2()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(srv.URL + "/events")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a subscriber left, and a new one still gets %s after 10 s", resp.Status)
		}
	}
}

// TestSubscriberLimit: a subscriber is cut off once limit frames are not yet written to it,
// whether they wait in its queue or were taken and wait for the socket.
func TestSubscriberLimit(t *testing.T) {
	s := newSubscriber(notify.AllClasses, 3)
	f := frame{id: 1}
	for i := range 3 {
		if !s.offer(f) {
			t.Fatalf("frame %d of 3 refused", i+1)
		}
	}
	if s.offer(f) {
		t.Fatal("a fourth frame queued; want it refused")
	}
	batch := s.take(nil)
	if len(batch) != 3 {
		t.Fatalf("took %d frames; want 3", len(batch))
	}
	if s.offer(f) {
		t.Fatal("a frame queued while 3 taken wait to be written; want it refused")
	}
	s.wrote()
	if !s.offer(f) {
		t.Fatal("a frame refused with 2 frames waiting")
	}
	s.wrote()
	s.wrote()
	if !s.offer(f) || !s.offer(f) || s.offer(f) {
		t.Error("with the batch written and one queued, want two more queued and the next refused")
	}
	if got := s.take(batch); len(got) != 3 {
		t.Errorf("took %d frames; want 3", len(got))
	}
}
