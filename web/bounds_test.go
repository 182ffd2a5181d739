package web

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
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
	h, err := Handler(Options{Registry: reg, Gatherer: prometheus.NewRegistry()})
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
