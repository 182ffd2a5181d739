package web

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hotplug-agent/hotplug-agent/internal/chromium"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// The status page in a real headless Chromium, against a handler of this package: what
// status.js does over time, across reconnections and time zones. (The page against a real agent
// and a real CPU is cmd/hotplug-agent's TestIntegrationStatusPage.)

// pageServer serves the agent's handler with o, over a registry holding cpu0, cpu1 and memory0.
func pageServer(t *testing.T, o Options) (*notify.Registry, *server, *httptest.Server) {
	t.Helper()
	reg := notify.NewRegistry(notify.Options{})
	reg.Seed([]notify.Interface{cpu(0), cpu(1), block(0)})
	o.Registry, o.Gatherer = reg, prometheus.NewRegistry()
	s, h, err := newHandler(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		reg.Close(ctx)
	})
	return reg, s, srv
}

// headless starts a headless Chromium for the rest of t, its clock in the time zone tz ("" for
// the machine's); before each page's own scripts it runs script ("" for none).
func headless(t *testing.T, tz, script string) context.Context {
	t.Helper()
	ctx := chromium.Start(t, time.Minute)
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if tz != "" {
			if _, err := cdp.Call(ctx, tg, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: tz}); err != nil {
				return err
			}
		}
		if script != "" {
			if _, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: script}); err != nil {
				return err
			}
		}
		return nil
	})); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// js evaluates a JavaScript expression in the page.
func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// until polls a JavaScript condition until it holds, failing t with what after timeout.
func until(t *testing.T, ctx context.Context, timeout time.Duration, cond, what string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(timeout))); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestStatusPageReconnectsAfterRefusal: an EventSource gives up for good when its request is
// answered with an error status (the agent's 503 at its subscriber limit, a proxy's 502 while
// the agent restarts) rather than with a stream. The page must try again, from the last event it
// showed, and go on showing the notifications.
func TestStatusPageReconnectsAfterRefusal(t *testing.T) {
	var refused atomic.Int64
	reg, s, srv := pageServer(t, Options{MaxStreamSubscribers: 1, OnRefused: func(string) { refused.Add(1) }})
	// Another subscriber holds the only place: the page's stream is refused.
	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ctx := headless(t, "", "")
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatalf("load the status page: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if refused.Load() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the page's stream was never refused")
		}
	}
	resp.Body.Close() // the place is free again
	for s.subscribers.Load() != 0 {
		time.Sleep(time.Millisecond)
	}
	reg.Publish(notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, cpu(1), 4242, time.Now(), notify.CauseUevent))
	until(t, ctx, 15*time.Second, `(() => { const r = document.querySelector("#notifications tbody tr"); return !!r && r.textContent.includes("4242"); })()`,
		"after its stream was refused once, the page never showed a notification again")
}

// fakeClock runs before the page's scripts: Date.now() is window.ahead ms ahead of the real
// clock, and every setInterval fires at least every 100 ms, so that a test sees the page's
// periodic work without waiting for it.
const fakeClock = `(() => {
	const now = Date.now.bind(Date), every = window.setInterval.bind(window);
	window.ahead = 0;
	Date.now = () => now() + window.ahead;
	window.setInterval = (f, ms, ...args) => every(f, Math.min(ms, 100), ...args);
})();`

// TestStatusPageChartFollowsTheClock: the chart of notifications per minute is of the last hour.
// Left open with nothing happening, the page must let the minutes go by and the old
// notifications leave the chart, not keep showing them as the last hour's.
func TestStatusPageChartFollowsTheClock(t *testing.T) {
	reg, _, srv := pageServer(t, Options{})
	reg.Publish(notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, cpu(1), 7, time.Now().Add(-58*time.Minute), notify.CauseUevent))
	for {
		if noteRows(t, srv.URL) > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ctx := headless(t, "", fakeClock)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatalf("load the status page: %v", err)
	}
	if n := js[int](t, ctx, `+document.getElementById("chart-notes").dataset.points`); n != 1 {
		t.Fatalf("the chart has %d bars at load; want the notification of 58 minutes ago", n)
	}
	js[int](t, ctx, `window.ahead = 5 * 60 * 1000`) // five minutes later
	until(t, ctx, 5*time.Second, `document.getElementById("chart-notes").dataset.points === "0"`,
		"five minutes later, the chart of the last hour still shows a notification of 63 minutes ago")
}

// noteRows returns how many notifications the status page at base lists.
func noteRows(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_, rows, _ := strings.Cut(string(b), `<table id="notifications"`)
	rows, _, _ = strings.Cut(rows, "</table>")
	return strings.Count(rows, "<tr class=")
}

// TestStatusPageTimesInOneZone: the notifications the page comes with and those that arrive
// live are in one table, their times in one time zone, the agent's (as its log has them),
// whatever the browser's.
func TestStatusPageTimesInOneZone(t *testing.T) {
	reg, _, srv := pageServer(t, Options{})
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.FixedZone("", -5*3600)) // the agent's local time
	reg.Publish(notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, cpu(1), 7, at, notify.CauseUevent))
	for noteRows(t, srv.URL) == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx := headless(t, "Asia/Kolkata", "") // UTC+05:30
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatalf("load the status page: %v", err)
	}
	until(t, ctx, 10*time.Second, `document.getElementById("stream").textContent === "(live)"`, "the page's stream never went live")
	reg.Publish(notify.NewNotification(notify.GUIDDeviceInterfaceArrival, cpu(1), 8, at.Add(5*time.Second), notify.CauseUevent))
	until(t, ctx, 10*time.Second, `document.querySelectorAll("#notifications tbody tr").length === 2`, "the arrival never came live")
	got := js[[]string](t, ctx, `Array.from(document.querySelectorAll("#notifications tbody tr"), r => r.cells[0].textContent)`)
	if want := []string{"10:00:05", "10:00:00"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("times of the notifications, newest first: %q; want %q, both the agent's", got, want)
	}
}
