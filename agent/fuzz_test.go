package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/hotplug-agent/hotplug-agent/callback"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/udev"
)

// steppedSource is a source whose Read says when it is called: the loop has then handled the
// event before.
type steppedSource struct {
	ch    chan udev.Event
	reads chan struct{}
}

func (s *steppedSource) Read(ctx context.Context) (udev.Event, error) {
	s.reads <- struct{}{}
	select {
	case ev := <-s.ch:
		return ev, nil
	case <-ctx.Done():
		return udev.Event{}, ctx.Err()
	}
}

func (s *steppedSource) Close() error { return nil }

// fuzzed is one agent per fuzzing process, running on the read-only sysfs fixture.
var fuzzed struct {
	once  sync.Once
	a     *Agent
	src   *steppedSource
	logs  *testenv.Buffer
	mu    sync.Mutex
	notes []notify.Notification
	err   error
}

func fuzzAgent(t *testing.T) {
	fuzzed.once.Do(func() {
		fuzzed.src = &steppedSource{ch: make(chan udev.Event), reads: make(chan struct{}, 1)}
		fuzzed.logs = &testenv.Buffer{}
		a, err := New(Options{
			SysfsPath: "../sysfs/testdata/vm/sys", ListenAddresses: []string{"127.0.0.1:0"}, Source: fuzzed.src,
			Logger: slog.New(slog.NewJSONHandler(fuzzed.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		if err != nil {
			fuzzed.err = err
			return
		}
		if _, err := a.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.AllClasses, "fuzz",
			func(_ context.Context, n notify.Notification, _ any) error {
				fuzzed.mu.Lock()
				fuzzed.notes = append(fuzzed.notes, n)
				fuzzed.mu.Unlock()
				return nil
			}, nil); err != nil {
			fuzzed.err = err
			return
		}
		fuzzed.a = a
		go a.Run(context.Background()) // lives as long as the fuzzing process
		<-fuzzed.src.reads
	})
	if fuzzed.err != nil {
		t.Fatal(fuzzed.err)
	}
}

// FuzzPipeline sends one datagram, parsed as the listener parses it, through the agent's own
// loop, and checks every place a value from a uevent could reach: the metrics (a label value
// that is not UTF-8 once panicked the loop), the JSON log, the notifications' JSON and the exec
// callbacks' environment, and /interfaces. Nothing may panic, every output must be valid
// UTF-8 and valid JSON, and the uevent series must stay bounded.
func FuzzPipeline(f *testing.F) {
	for _, s := range []string{
		"online@/devices/system/cpu/cpu1\x00ACTION=online\x00DEVPATH=/devices/system/cpu/cpu1\x00SUBSYSTEM=cpu\x00SEQNUM=10\x00",
		"offline@/devices/system/cpu/cpu1\x00ACTION=offline\x00DEVPATH=/devices/system/cpu/cpu1\x00SUBSYSTEM=cpu\x00SEQNUM=11\x00",
		"remove@/devices/system/memory/memory0\x00ACTION=remove\x00DEVPATH=/devices/system/memory/memory0\x00SUBSYSTEM=memory\x00SEQNUM=12\x00",
		"add@/devices/system/memory/memory99\x00ACTION=add\x00DEVPATH=/devices/system/memory/memory99\x00SUBSYSTEM=memory\x00SEQNUM=13\x00",
		"change@/devices/system/cpu/cpu0\x00ACTION=change\x00DEVPATH=/devices/system/cpu/cpu0\x00SUBSYSTEM=\xff\xfe\x00SEQNUM=14\x00",
		"\xff\xfe@/devices/\xc3\x28\x00ACTION=\xff\xfe\x00DEVPATH=/devices/\xc3\x28\x00SUBSYSTEM=cpu\x00SEQNUM=15\x00",
		"online@/devices/system/cpu/../cpu/cpu1\x00ACTION=online\x00DEVPATH=/devices/system/cpu/../cpu/cpu1\x00SUBSYSTEM=cpu\x00SEQNUM=16\x00",
		"online@/devices/system/cpu/cpu1\x00ACTION=online\x00DEVPATH=/devices/system/cpu/cpu1\x00SUBSYSTEM=cpu\x00SEQNUM=18446744073709551615\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := udev.Parse(b)
		if err != nil {
			return
		}
		fuzzAgent(t)
		a := fuzzed.a
		fuzzed.src.ch <- ev
		<-fuzzed.src.reads // handled

		rec := httptest.NewRecorder()
		a.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		body := rec.Body.String()
		if rec.Code != http.StatusOK || !utf8.ValidString(body) {
			t.Fatalf("/metrics: %d, valid UTF-8 %v", rec.Code, utf8.ValidString(body))
		}
		if n := strings.Count(body, "\nhotplug_agent_uevents_total{"); n > 27 {
			t.Fatalf("/metrics has %d uevents_total series", n)
		}
		rec = httptest.NewRecorder()
		a.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/interfaces", nil))
		if rec.Code != http.StatusOK || !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("/interfaces: %d %q", rec.Code, rec.Body.String())
		}
		for _, line := range bytes.Split(bytes.TrimSpace([]byte(fuzzed.logs.Take())), []byte("\n")) {
			if len(line) > 0 && (!json.Valid(line) || !utf8.Valid(line)) {
				t.Fatalf("log line is not valid JSON in UTF-8: %q", line)
			}
		}
		fuzzed.mu.Lock()
		notes := fuzzed.notes
		fuzzed.notes = nil
		fuzzed.mu.Unlock()
		for _, n := range notes {
			j, err := json.Marshal(n)
			if err != nil || !json.Valid(j) || !utf8.Valid(j) {
				t.Fatalf("notification JSON %q: %v", j, err)
			}
			for _, kv := range callback.Env(n) {
				if !utf8.ValidString(kv) || strings.ContainsRune(kv, 0) || !strings.HasPrefix(kv, "HOTPLUG_") {
					t.Fatalf("exec environment entry %q", kv)
				}
			}
		}
	})
}
