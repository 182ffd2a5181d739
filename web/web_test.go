package web

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

func cpu(n int) notify.Interface {
	return notify.Interface{ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: "/sys/devices/system/cpu/cpu" + string(rune('0'+n)), Number: n, Node: 0, State: "online"}
}

func block(n int) notify.Interface {
	return notify.Interface{ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: "/sys/devices/system/memory/memory" + string(rune('0'+n)),
		Number: n, Node: -1, PhysStart: uint64(n) << 27, Size: 1 << 27, State: "online", Zones: "Normal"}
}

func newServer(t *testing.T, buffer int) (*notify.Registry, *httptest.Server) {
	return newServerHistory(t, buffer, 0)
}

func newServerHistory(t *testing.T, buffer, history int) (*notify.Registry, *httptest.Server) {
	reg, srv, _ := newServerHub(t, buffer, history)
	return reg, srv
}

// newServerHub is newServerHistory, also returning the event stream's hub.
func newServerHub(t *testing.T, buffer, history int) (*notify.Registry, *httptest.Server, *hub) {
	t.Helper()
	reg, s, srv := pageServer(t, Options{StreamBuffer: buffer, History: history})
	return reg, srv, s.hub
}

// caughtUp waits until the hub has received every notification reg published: its callback
// runs on a goroutine of its own, after Publish returns.
func caughtUp(t *testing.T, h *hub, reg *notify.Registry) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		h.mu.Lock()
		last := h.last
		h.mu.Unlock()
		if last == reg.LastID() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hub has seen up to ID %d of %d after 10 s", last, reg.LastID())
		}
	}
}

type wire struct {
	ID             uint64 `json:"id"`
	Event          string `json:"event"`
	InterfaceClass string `json:"interface_class"`
	SymbolicLink   string `json:"symbolic_link"`
	Cause          string `json:"cause"`
	MemoryBlock    *int   `json:"memory_block"`
	PhysStart      *uint64
}

// stream reads the SSE lines of one /events response.
func stream(t *testing.T, url string) (*bufio.Scanner, func()) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return bufio.NewScanner(resp.Body), func() { resp.Body.Close() }
}

func nextData(t *testing.T, sc *bufio.Scanner) (wire, string) {
	t.Helper()
	for sc.Scan() {
		line := sc.Text()
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			var w wire
			if err := json.Unmarshal([]byte(d), &w); err != nil {
				t.Fatalf("data %q: %v", d, err)
			}
			return w, d
		}
	}
	t.Fatalf("stream ended: %v", sc.Err())
	return wire{}, ""
}

func TestEventsIncludeExistingThenLive(t *testing.T) {
	reg, srv := newServer(t, 0)
	sc, done := stream(t, srv.URL+"/events?class=processor&include_existing=true")
	defer done()
	// Published after the headers arrived: must follow the existing ones, with nothing lost.
	reg.Publish(notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, cpu(1), 7, time.Now(), notify.CauseUevent))
	reg.Publish(notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, block(0), 8, time.Now(), notify.CauseUevent))
	reg.Publish(notify.NewNotification(notify.GUIDDeviceInterfaceArrival, cpu(1), 9, time.Now(), notify.CauseUevent))
	want := []string{"arrival cpu0 existing", "arrival cpu1 existing", "removal cpu1 uevent", "arrival cpu1 uevent"}
	for i, w := range want {
		got, _ := nextData(t, sc)
		s := got.Event + " " + got.SymbolicLink[strings.LastIndex(got.SymbolicLink, "/")+1:] + " " + got.Cause
		if s != w {
			t.Errorf("event %d = %q; want %q (the memory removal must be filtered out)", i, s, w)
		}
	}
}

func TestEventsMemoryFields(t *testing.T) {
	_, srv := newServer(t, 0)
	sc, done := stream(t, srv.URL+"/events?class=memory&include_existing=1")
	defer done()
	_, raw := nextData(t, sc)
	for _, want := range []string{`"interface_class":"memory"`, `"interface_class_guid":"3fd0f03d-92e0-45fb-b75c-5ed8ffb01021"`,
		`"memory_block":0`, `"phys_start":0`, `"size":134217728`, `"event_guid":"cb3a4004-46f0-11d0-b08f-00609713053f"`, `"version":1`} {
		if !strings.Contains(raw, want) {
			t.Errorf("%s lacks %s", raw, want)
		}
	}
	if strings.Contains(raw, `"cpu"`) || strings.Contains(raw, `"node"`) {
		t.Errorf("%s has a cpu field or an unknown node", raw)
	}
}

// TestEventsSlowSubscriberIsCutOff fills a subscriber's buffer while it does not read: it is
// cut off with a reason, and publishing never blocks.
func TestEventsSlowSubscriberIsCutOff(t *testing.T) {
	reg := notify.NewRegistry(notify.Options{})
	reg.Seed([]notify.Interface{cpu(0), cpu(1)})
	cut := make(chan struct{}, 1)
	h, err := Handler(Options{Registry: reg, Gatherer: prometheus.NewRegistry(), StreamBuffer: 4,
		OnCut: func() { cut <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/events?class=processor")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Publish without reading until the agent gives up on this subscriber: the socket buffers
	// absorb a few megabytes first, however fast the machine is.
	for i := 0; ; i++ {
		select {
		case <-cut:
		default:
			if i > 5_000_000 {
				t.Fatal("a subscriber that never reads was not cut off after 5,000,000 notifications")
			}
			ev := notify.GUIDDeviceInterfaceRemoval
			if i%2 == 1 {
				ev = notify.GUIDDeviceInterfaceArrival
			}
			reg.Publish(notify.NewNotification(ev, cpu(1), uint64(i), time.Now(), notify.CauseUevent))
			continue
		}
		break
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	// Too slow for its buffer, or for the hub's queue when publishing outruns everything: either
	// way the stream ends with the reason and the way back.
	if !strings.Contains(string(b), "event: error\ndata: {\"error\":\"") || !strings.Contains(string(b), "reconnect with your last event ID") {
		t.Errorf("stream did not end with the cut-off reason; tail: %q", string(b[max(0, len(b)-300):]))
	}
}

func TestInterfacesAndErrors(t *testing.T) {
	_, srv := newServer(t, 0)
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/interfaces")
	var all []wire
	if err := json.Unmarshal([]byte(body), &all); code != 200 || err != nil || len(all) != 3 {
		t.Fatalf("/interfaces: %d %v %s", code, err, body)
	}
	if all[0].InterfaceClass != "processor" || all[2].InterfaceClass != "memory" {
		t.Errorf("/interfaces order: %s; want processors first", body)
	}
	if code, body = get("/interfaces?class=memory"); code != 200 || strings.Count(body, "symbolic_link") != 1 {
		t.Errorf("/interfaces?class=memory: %d %s", code, body)
	}
	for _, p := range []string{"/interfaces?class=disk", "/events?class=disk", "/events?include_existing=maybe"} {
		if code, body := get(p); code != 400 {
			t.Errorf("%s: %d %s; want 400", p, code, body)
		}
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, _ := get("/metrics"); code != 200 {
		t.Errorf("/metrics: %d", code)
	}
}

// sseEvent is one parsed SSE event.
type sseEvent struct {
	typ, id, data string
}

func nextEvent(t *testing.T, sc *bufio.Scanner) sseEvent {
	t.Helper()
	var e sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "" && e.data != "":
			return e
		case strings.HasPrefix(line, "event: "):
			e.typ = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			e.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			e.data = strings.TrimPrefix(line, "data: ")
		}
	}
	t.Fatalf("stream ended: %v", sc.Err())
	return e
}

func streamFrom(t *testing.T, url, lastID string) (*bufio.Scanner, func()) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return bufio.NewScanner(resp.Body), func() { resp.Body.Close() }
}

// flip publishes n alternating removals and arrivals of cpu1, which starts active.
func flip(reg *notify.Registry, n int) {
	for i := range n {
		ev := notify.GUIDDeviceInterfaceRemoval
		if i%2 == 1 {
			ev = notify.GUIDDeviceInterfaceArrival
		}
		reg.Publish(notify.NewNotification(ev, cpu(1), uint64(100+i), time.Now(), notify.CauseUevent))
	}
}

// TestEventsResume disconnects a client, publishes while it is away, and reconnects it with
// its Last-Event-ID: it gets exactly what it missed, with the same IDs, then live ones.
func TestEventsResume(t *testing.T) {
	reg, srv := newServerHistory(t, 0, 16)
	sc, done := streamFrom(t, srv.URL+"/events?class=processor", "")
	flip(reg, 2)
	first := nextEvent(t, sc)
	second := nextEvent(t, sc)
	done()
	if first.id != "1" || second.id != "2" {
		t.Fatalf("ids %q, %q; want 1, 2", first.id, second.id)
	}
	reg.Publish(notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, block(0), 7, time.Now(), notify.CauseUevent)) // id 3, another class
	flip(reg, 3)                                                                                                        // ids 4, 5, 6
	sc, done = streamFrom(t, srv.URL+"/events?class=processor", second.id)
	defer done()
	for _, want := range []string{"4", "5", "6"} {
		if e := nextEvent(t, sc); e.id != want || e.typ != "" {
			t.Fatalf("resumed event %+v; want id %s", e, want)
		}
	}
	reg.Publish(notify.NewNotification(notify.GUIDDeviceInterfaceArrival, cpu(1), 200, time.Now(), notify.CauseUevent)) // id 7: live
	if e := nextEvent(t, sc); e.id != "7" || !strings.Contains(e.data, `"event":"arrival"`) {
		t.Errorf("live event after the backlog: %+v; want id 7, an arrival", e)
	}
}

// TestEventsResyncWhenHistoryIsGone resumes from an ID older than the history and from one the
// agent never gave (as after a reset): both get a resync carrying the active set.
func TestEventsResyncWhenHistoryIsGone(t *testing.T) {
	reg, srv, h := newServerHub(t, 0, 4)
	flip(reg, 11) // ids 1..11; cpu1 ends removed; history holds 8..11
	caughtUp(t, h, reg)
	for _, last := range []string{"2", "999"} {
		t.Run("last "+last, func(t *testing.T) {
			sc, done := streamFrom(t, srv.URL+"/events", last)
			defer done()
			e := nextEvent(t, sc)
			if e.typ != "resync" || e.id != "11" {
				t.Fatalf("got %+v; want a resync with id 11", e)
			}
			var r struct {
				LastID     uint64 `json:"last_id"`
				Interfaces []wire `json:"interfaces"`
			}
			if err := json.Unmarshal([]byte(e.data), &r); err != nil {
				t.Fatal(err)
			}
			var links []string
			for _, i := range r.Interfaces {
				links = append(links, i.SymbolicLink)
			}
			want := "/sys/devices/system/cpu/cpu0 /sys/devices/system/memory/memory0"
			if strings.Join(links, " ") != want || r.LastID != 11 {
				t.Errorf("resync: last_id %d, interfaces %v; want 11 and %s", r.LastID, links, want)
			}
		})
	}
	// Resuming from within the history needs no resync.
	sc, done := streamFrom(t, srv.URL+"/events", "9")
	defer done()
	if e := nextEvent(t, sc); e.id != "10" || e.typ != "" {
		t.Errorf("resume from 9: %+v; want id 10", e)
	}
}

// TestEventsSubscriberNotReadingIsLetGo: a subscriber whose socket stays full (it stopped
// reading, its host froze) is cut off once a write has waited WriteTimeout, even when its queue
// never fills: it must not hold a goroutine and a connection for ever.
func TestEventsSubscriberNotReadingIsLetGo(t *testing.T) {
	reg := notify.NewRegistry(notify.Options{})
	reg.Seed([]notify.Interface{cpu(0), cpu(1)})
	cut := make(chan struct{}, 1)
	h, err := Handler(Options{Registry: reg, Gatherer: prometheus.NewRegistry(), StreamBuffer: 1 << 20,
		WriteTimeout: 200 * time.Millisecond, OnCut: func() { cut <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := fmt.Fprintf(conn, "GET /events?class=processor HTTP/1.1\r\nHost: agent\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Never read. Publish until the server's writes block for good, then some more.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		select {
		case <-cut:
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("a subscriber that never reads was not let go within 30 s (%d notifications published)", i)
		}
		ev := notify.GUIDDeviceInterfaceRemoval
		if i%2 == 1 {
			ev = notify.GUIDDeviceInterfaceArrival
		}
		reg.Publish(notify.NewNotification(ev, cpu(1), uint64(i), time.Now(), notify.CauseUevent))
		if i%100 == 99 {
			// Slowly enough that the hub keeps up (a hub that falls behind cuts everyone off with
			// a resync instead), fast enough to fill the socket within seconds.
			time.Sleep(time.Millisecond)
		}
	}
}

// TestStatusPageListsEverything: the status page shows each block's memory device, the memory
// devices, and every kind of registration: device interface, memory devices, two-phase and
// target device.
func TestStatusPageListsEverything(t *testing.T) {
	reg := notify.NewRegistry(notify.Options{})
	memBlock := func(n int) notify.Interface {
		i := block(n)
		i.SymbolicLink = "/sys/devices/system/memory/memory" + strconv.Itoa(n)
		return i
	}
	reg.Seed([]notify.Interface{cpu(0), memBlock(32), memBlock(33)})
	devices := notify.NewRegistry(notify.Options{})
	dimm := notify.Interface{ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: "/sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04/PNP0C80:00",
		Number: 32, Node: 0, PhysStart: 32 << 27, Size: 2 << 27, State: "online", Device: "PNP0C80:00", Blocks: "32-33"}
	devices.Seed([]notify.Interface{dimm})
	nop := func(context.Context, notify.Notification, any) error { return nil }
	if _, err := devices.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.GUIDDeviceMemory, "pools", nop, nil); err != nil {
		t.Fatal(err)
	}
	changes := notify.NewChangeRegistry(notify.ChangeOptions{})
	defer changes.Close(context.Background())
	if _, err := changes.Register(context.Background(), notify.GUIDDeviceProcessor, 0, "cpu-gate",
		func(context.Context, notify.ChangeNotification, any) error { return nil }, nil); err != nil {
		t.Fatal(err)
	}
	targets := notify.NewTargetRegistry(notify.TargetOptions{})
	defer targets.Close(context.Background())
	if _, err := targets.Register("/sys/devices/system/cpu/cpu1", "guard-cpu1",
		func(context.Context, notify.TargetNotification, any) error { return nil }, nil); err != nil {
		t.Fatal(err)
	}
	h, err := Handler(Options{Registry: reg, Gatherer: prometheus.NewRegistry(), DeviceRegistry: devices,
		DeviceOf: func(b int) string { return map[int]string{32: "PNP0C80:00", 33: "PNP0C80:00"}[b] },
		Changes:  changes, Targets: targets})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	defer devices.Close(context.Background())
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	for _, want := range []string{
		`<tr><td><code>0x0000000100000000-0x000000010fffffff</code></td><td>256M</td><td class="online">online</td><td>32-33</td><td>-</td><td>Normal</td><td>PNP0C80:00</td></tr>`,
		`<tr data-link="/sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04/PNP0C80:00"><td>1</td><td>PNP0C80:00</td><td>32-33</td><td>0</td><td><code>0x0000000100000000</code></td><td>256M</td>`,
		`memory32-33: online, Normal, device PNP0C80:00, 0x100000000-0x10fffffff (256M)`,
		`<tr><td>events</td><td>device interface</td><td>all</td>`,
		`<tr><td>pools</td><td>memory devices</td><td>memory</td><td>0</td>`,
		`<tr><td>events</td><td>memory devices</td><td>all</td>`,
		`<tr><td>cpu-gate</td><td>two-phase</td><td>processor</td><td></td><td class="hide-narrow"></td><td class="hide-narrow"></td><td>0</td><td>-</td>`,
		`<tr><td>guard-cpu1</td><td>target device</td><td>/sys/devices/system/cpu/cpu1</td>`,
		`<b>Memory devices</b> 1</span>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the status page lacks %s", want)
		}
	}
}

// TestHubFallsBehindWithNothingToResync: when the hub's own registration overflows and what it
// missed cancels out (cpu1 removed and back, four times), the registry's resync brings no
// notification; the hub must still know its history has a hole: a live subscriber is cut off
// (not handed the next notification as if nothing was missed), a client resuming from before the
// hole gets a resync, not a history that skips it, and one resuming from after it, the rest.
func TestHubFallsBehindWithNothingToResync(t *testing.T) {
	reg := notify.NewRegistry(notify.Options{QueueLimit: 4})
	reg.Seed([]notify.Interface{cpu(0), cpu(1)})
	h := newTestHub(t, reg, 64, func() {})
	delivered := func() uint64 {
		for _, e := range reg.Entries() {
			if e.Owner == StreamOwner {
				return e.Delivered
			}
		}
		return 0
	}
	waitDelivered := func(n uint64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); delivered() < n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the hub's callback was given %d notifications after 10 s; want %d", delivered(), n)
			}
		}
	}
	waitDelivered(2) // the existing arrivals
	live, _ := h.subscribe(notify.AllClasses, 100, false, false, 0)
	publish := func(ev uuid.UUID, i notify.Interface) {
		reg.Publish(notify.NewNotification(ev, i, 100+reg.LastID(), time.Now(), notify.CauseUevent))
	}
	publish(notify.GUIDDeviceInterfaceRemoval, cpu(1)) // ID 1
	caughtUp(t, h, reg)

	h.mu.Lock()                                        // the hub's callback is held up
	publish(notify.GUIDDeviceInterfaceArrival, cpu(1)) // ID 2: taken, its callback waits
	waitDelivered(4)
	for range 4 { // IDs 3-10: more than the queue holds, and nothing changed in the end
		publish(notify.GUIDDeviceInterfaceRemoval, cpu(1))
		publish(notify.GUIDDeviceInterfaceArrival, cpu(1))
	}
	h.mu.Unlock()
	// The resync, empty, is made before the next notification is published.
	for deadline := time.Now().Add(10 * time.Second); h.entry.Resyncs() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the hub's registration had no resync 10 s after its queue overflowed")
		}
	}
	publish(notify.GUIDDeviceInterfaceRemoval, cpu(0)) // ID 11
	caughtUp(t, h, reg)

	select {
	case <-live.cut:
	default:
		var ids []uint64
		for _, f := range live.take(nil) {
			ids = append(ids, f.id)
		}
		t.Errorf("the live subscriber was not cut off; it was handed IDs %v, with 3-10 missing", ids)
	}
	_, pre := h.subscribe(notify.AllClasses, 100, false, true, 2)
	if len(pre) != 1 || !pre[0].resync || pre[0].id != 11 || len(pre[0].interfaces) != 1 || pre[0].interfaces[0] != cpu(1) {
		t.Errorf("resuming from ID 2 gives %d frames (%+v); want one resync at ID 11 with cpu1 alone active", len(pre), pre)
	}
	publish(notify.GUIDDeviceInterfaceArrival, cpu(0)) // ID 12
	caughtUp(t, h, reg)
	if _, pre := h.subscribe(notify.AllClasses, 100, false, true, 11); len(pre) != 1 || pre[0].resync || pre[0].id != 12 {
		t.Errorf("resuming from ID 11, after the hole, gives %+v; want ID 12", pre)
	}
}

// TestSlowSubscriberIsNoCallbackError: a subscriber cut off for being too slow is the client's
// failing, logged and counted by its handler: the hub's callback reports no error for it, which
// would count as the "events" callback failing (hotplug_agent_callback_errors_total, the status
// page, the callback-errors alert).
func TestSlowSubscriberIsNoCallbackError(t *testing.T) {
	cuts := 0
	h := newTestHub(t, notify.NewRegistry(notify.Options{}), 16, func() { cuts++ })
	s, _ := h.subscribe(notify.AllClasses, 1, false, false, 0)
	for id := uint64(1); id <= 2; id++ {
		n := notify.NewNotification(notify.GUIDDeviceInterfaceArrival, cpu(int(id)), id, time.Now(), notify.CauseUevent)
		n.ID = id
		if err := h.deliver(context.Background(), n, nil); err != nil {
			t.Errorf("notification %d to a subscriber that holds 1: the hub's callback failed: %v", id, err)
		}
	}
	select {
	case <-s.cut:
	default:
		t.Error("a subscriber 2 notifications behind with room for 1 was not cut off")
	}
	if cuts != 1 {
		t.Errorf("%d cuts counted; want 1, when it was cut", cuts)
	}
}

// newTestHub is newHub on reg, which is closed when t ends.
func newTestHub(t *testing.T, reg *notify.Registry, size int, onCut func()) *hub {
	t.Helper()
	h, err := newHub(reg, size, onCut)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		reg.Close(ctx)
	})
	return h
}
