//go:build linux

package callback

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// receiver is a webhook endpoint that fails, then is slow, then recovers, and records what it got.
type receiver struct {
	mu       sync.Mutex
	requests int
	failFor  int           // the first requests answer 500
	slowFor  int           // the next ones answer only after slow
	slow     time.Duration //
	seen     map[string]bool
	accepted []string // symbolic links + event, in order, duplicates dropped by key
	dupes    int
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.requests++
	n := r.requests
	r.mu.Unlock()
	switch {
	case n <= r.failFor:
		http.Error(w, "down", http.StatusInternalServerError)
		return
	case n <= r.failFor+r.slowFor:
		time.Sleep(r.slow)
	}
	key := req.Header.Get(IdempotencyHeader)
	var v struct {
		Event        string `json:"event"`
		SymbolicLink string `json:"symbolic_link"`
	}
	if err := json.Unmarshal(body, &v); err != nil || key == "" || req.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[key] {
		r.dupes++
	} else {
		r.seen[key] = true
		r.accepted = append(r.accepted, v.Event+" "+v.SymbolicLink)
	}
}

// TestWebhookEveryNotificationArrives sends notifications through a receiver that fails, is
// slower than the timeout, and then recovers: each arrives once after dropping retried
// duplicates by their idempotency key, in order.
func TestWebhookEveryNotificationArrives(t *testing.T) {
	r := &receiver{failFor: 3, slowFor: 2, slow: 300 * time.Millisecond, seen: map[string]bool{}}
	srv := httptest.NewServer(r)
	defer srv.Close()
	cb := Webhook{URL: srv.URL, Timeout: 100 * time.Millisecond, Retries: 10, Backoff: 10 * time.Millisecond}.Callback()
	var want []string
	for i := range 6 {
		n := cpuNote()
		if i%3 != 2 { // some without an ID
			n.ID = uint64(i + 1)
		}

		if i%2 == 1 {
			n.Event = notify.GUIDDeviceInterfaceRemoval
		}
		n.SymbolicLinkName = "/sys/devices/system/cpu/cpu" + string(rune('1'+i))
		want = append(want, notify.EventName(n.Event)+" "+n.SymbolicLinkName)
		if err := cb(context.Background(), n, nil); err != nil {
			t.Fatalf("notification %d: %v", i, err)
		}
	}
	// The slow answers finish after the client gave up on them; wait for the handlers.
	srv.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	if strings.Join(r.accepted, "\n") != strings.Join(want, "\n") {
		t.Errorf("accepted:\n%s\nwant:\n%s", strings.Join(r.accepted, "\n"), strings.Join(want, "\n"))
	}
	if r.dupes == 0 {
		t.Errorf("no retried duplicate reached the receiver; the slow answers should have produced some")
	}
	t.Logf("%d requests for %d notifications, %d duplicates dropped by key", r.requests, len(want), r.dupes)
}

// TestWebhookKeyAcrossRestarts: the Idempotency-Key of a notification with an ID is the same
// from a second agent of the same namespace and callback (the same agent after a restart), and
// differs for another ID, another callback, another agent; one without an ID has a fresh key.
func TestWebhookKeyAcrossRestarts(t *testing.T) {
	type got struct {
		key  string
		link string
	}
	keys := make(chan got, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var v struct {
			SymbolicLink string `json:"symbolic_link"`
		}
		json.NewDecoder(req.Body).Decode(&v)
		keys <- got{req.Header.Get(IdempotencyHeader), v.SymbolicLink}
	}))
	defer srv.Close()
	agent := uuid.MustParse("0b5e2e62-6a53-4a8b-9a55-1f3b5b8c2d10")
	send := func(ns uuid.UUID, name string, id uint64) string {
		t.Helper()
		n := cpuNote()
		n.ID = id
		if err := (Webhook{URL: srv.URL, Name: name, Namespace: ns}).Callback()(context.Background(), n, nil); err != nil {
			t.Fatal(err)
		}
		g := <-keys
		if g.link != n.SymbolicLinkName {
			t.Fatalf("posted %s; want %s", g.link, n.SymbolicLinkName)
		}
		return g.key
	}
	first := send(agent, "scheduler", 42)
	if want := uuid.NewSHA1(agent, []byte("hotplug-agent/scheduler/42")).String(); first != want {
		t.Errorf("key of notification 42: %s; want %s", first, want)
	}
	if again := send(agent, "scheduler", 42); again != first {
		t.Errorf("notification 42 given again: key %s; want the first one's, %s", again, first)
	}
	others := map[string]string{
		"another ID":       send(agent, "scheduler", 43),
		"another callback": send(agent, "pool", 42),
		"another agent":    send(uuid.MustParse("5d1c0b7e-2f0a-4b55-8d0e-7a9d3c1b2e44"), "scheduler", 42),
		"no ID":            send(agent, "scheduler", 0),
	}
	for what, k := range others {
		if k == first {
			t.Errorf("%s: the same key %s", what, k)
		}
	}
	if a, b := send(agent, "scheduler", 0), send(agent, "scheduler", 0); a == b {
		t.Errorf("two notifications without an ID: the same key %s", a)
	}
}

func TestWebhookGivesUp(t *testing.T) {
	r := &receiver{failFor: 1000, seen: map[string]bool{}}
	srv := httptest.NewServer(r)
	defer srv.Close()
	err := Webhook{URL: srv.URL, Retries: 2, Backoff: time.Millisecond}.Callback()(context.Background(), cpuNote(), nil)
	if err == nil || !strings.Contains(err.Error(), "gave up after 3 attempts") || !strings.Contains(err.Error(), "500") {
		t.Errorf("error = %v; want it to give up after 3 attempts with the status", err)
	}
}

func TestWebhookVerifiesTLS(t *testing.T) {
	r := &receiver{seen: map[string]bool{}}
	srv := httptest.NewTLSServer(r)
	defer srv.Close()
	err := Webhook{URL: srv.URL, Retries: 0}.Callback()(context.Background(), cpuNote(), nil)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a self-signed receiver was accepted: %v", err)
	}
	if err := (Webhook{URL: srv.URL, InsecureSkipVerify: true}).Callback()(context.Background(), cpuNote(), nil); err != nil {
		t.Errorf("insecure_skip_verify: %v", err)
	}
}

// TestWebhookRetriesOnlyWhatCanMend: a 4xx answer is final, but 408 and 429, which say to come
// back later; those, 5xx answers and failed connections are retried. Either way the callback
// returns the error, which the registry counts.
func TestWebhookRetriesOnlyWhatCanMend(t *testing.T) {
	for _, tt := range []struct {
		status   int
		requests int
	}{
		{http.StatusBadRequest, 1},
		{http.StatusUnauthorized, 1},
		{http.StatusForbidden, 1},
		{http.StatusNotFound, 1},
		{http.StatusGone, 1},
		{http.StatusUnprocessableEntity, 1},
		{http.StatusRequestTimeout, 3},
		{http.StatusTooManyRequests, 3},
		{http.StatusInternalServerError, 3},
		{http.StatusServiceUnavailable, 3},
	} {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			var requests atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				requests.Add(1)
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			err := Webhook{URL: srv.URL, Retries: 2, Backoff: time.Millisecond}.Callback()(context.Background(), cpuNote(), nil)
			if err == nil || !strings.Contains(err.Error(), strconv.Itoa(tt.status)) {
				t.Errorf("error = %v; want one naming the %d answer", err, tt.status)
			}
			if got := int(requests.Load()); got != tt.requests {
				t.Errorf("%d requests for a %d answer; want %d", got, tt.status, tt.requests)
			}
		})
	}
}

// TestWebhookHidesPassword: the password of a webhook URL appears in no log line and no error,
// whatever goes wrong.
func TestWebhookHidesPassword(t *testing.T) {
	const password = "s3cret-pw"
	for _, tt := range []struct {
		name   string
		status int // 0: nobody listens
	}{
		{"server error, retried", http.StatusInternalServerError},
		{"refused for good", http.StatusNotFound},
		{"nobody listens", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(tt.status) }))
			u, _ := url.Parse(srv.URL + "/hook")
			u.User = url.UserPassword("agent", password)
			if tt.status == 0 {
				srv.Close()
			} else {
				defer srv.Close()
			}
			var logs testenv.Buffer
			err := Webhook{URL: u.String(), Retries: 1, Backoff: time.Millisecond,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))}.Callback()(context.Background(), cpuNote(), nil)
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), password) || strings.Contains(logs.String(), password) {
				t.Errorf("the password is shown:\nerror: %v\nlog: %s", err, logs.String())
			}
			if !strings.Contains(err.Error(), "agent:xxxxx@") {
				t.Errorf("error = %v; want the URL, its password redacted", err)
			}
		})
	}
}

// TestWebhookRefusesRedirect: a redirect is not followed, whatever its code. Followed, a 301,
// 302 or 303 becomes a GET without the notification, whose 2xx counted as delivered, and the
// headers (credentials) went to the address the receiver named. It is a failure at once, whose
// error names the status and where it points, the password of the URL redacted.
func TestWebhookRefusesRedirect(t *testing.T) {
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			var old, moved atomic.Int64
			var leaked atomic.Bool
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/old" {
					old.Add(1)
					http.Redirect(w, r, "/new", code)
					return
				}
				moved.Add(1) // a landing page: 200 to anything
				if r.Header.Get("X-Api-Key") != "" {
					leaked.Store(true)
				}
			}))
			defer srv.Close()
			u, _ := url.Parse(srv.URL + "/old")
			u.User = url.UserPassword("agent", "s3cret-pw")
			err := Webhook{URL: u.String(), Retries: 2, Backoff: time.Millisecond,
				Headers: map[string]string{"X-Api-Key": "k"}}.Callback()(context.Background(), cpuNote(), nil)
			if err == nil {
				t.Fatal("a redirect counted as delivered")
			}
			want := strconv.Itoa(code) + " " + http.StatusText(code) + ", a redirect to http://agent:xxxxx@" + u.Host + "/new: not followed"
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "not retried") {
				t.Errorf("error = %v; want one containing %q, not retried", err, want)
			}
			if strings.Contains(err.Error(), "s3cret-pw") {
				t.Errorf("error shows the password: %v", err)
			}
			if old.Load() != 1 || moved.Load() != 0 || leaked.Load() {
				t.Errorf("%d requests to the URL, %d to where it redirects (headers sent there: %v); want 1 and 0",
					old.Load(), moved.Load(), leaked.Load())
			}
		})
	}
}

// TestWebhookBadHeaderNotRetried: a header net/http cannot send (a value ending in the newline
// a YAML block scalar leaves, a name with a space) fails every request before it is sent; the
// callback says so at once instead of retrying as if the receiver were down, and never shows
// the value, which may be a credential.
func TestWebhookBadHeaderNotRetried(t *testing.T) {
	for _, tt := range []struct {
		name    string
		headers map[string]string
		want    string
	}{
		{"value ends in a newline", map[string]string{"Authorization": "Bearer s3cret\n"}, `header "Authorization": its value holds a newline at its end`},
		{"name with a space", map[string]string{"Bad Name": "s3cret"}, `header "Bad Name": not a valid header name`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var requests atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { requests.Add(1) }))
			defer srv.Close()
			var logs testenv.Buffer
			err := Webhook{URL: srv.URL, Retries: 3, Backoff: time.Millisecond, Headers: tt.headers,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))}.Callback()(context.Background(), cpuNote(), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "every attempt would fail alike") {
				t.Errorf("error = %v; want one containing %q, not retried", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows the header's value: %v", err)
			}
			if strings.Contains(logs.String(), "retrying") || requests.Load() != 0 {
				t.Errorf("%d requests; log:\n%s\nwant none, no retry", requests.Load(), logs.String())
			}
		})
	}
}

// TestWebhookBadURLNotRetried: a URL the request cannot be made of fails at once.
func TestWebhookBadURLNotRetried(t *testing.T) {
	var logs testenv.Buffer
	err := Webhook{URL: "http://h:port/x", Retries: 3, Backoff: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}.Callback()(context.Background(), cpuNote(), nil)
	if err == nil || !strings.Contains(err.Error(), "not retried") || strings.Contains(logs.String(), "retrying") {
		t.Errorf("error = %v, log:\n%s\nwant an error at once, not retried", err, logs.String())
	}
}

func TestCheckHeader(t *testing.T) {
	for _, tt := range []struct {
		name, value, err string
	}{
		{"Authorization", "Bearer abc", ""},
		{"X-Api-Key", "a\tb", ""},
		{"X-Note", "caf\xc3\xa9", ""}, // obs-text: bytes above 0x7f pass, as net/http sends them
		{"!#$%&'*+-.^_`|~09az", "", ""},
		{"", "v", `header "": not a valid header name`},
		{"Bad Name", "v", `header "Bad Name": not a valid header name`},
		{"X-Key:", "v", `header "X-Key:": not a valid header name`},
		{"X-Key\n", "v", `header "X-Key\n": not a valid header name`},
		{"X-Key", "abc\n", `header "X-Key": its value holds a newline at its end (a YAML block scalar "|" keeps it: write "|-" or a plain string)`},
		{"X-Key", "a\r\nb", `header "X-Key": its value holds a control character (0x0d)`},
		{"X-Key", "a\nb", `header "X-Key": its value holds a newline, which`},
		{"X-Key", "a\x00b", `header "X-Key": its value holds a control character (0x00)`},
		{"X-Key", "a\x7f", `header "X-Key": its value holds a control character (0x7f)`},
	} {
		err := CheckHeader(tt.name, tt.value)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("CheckHeader(%q, %q) = %v; want nil", tt.name, tt.value, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("CheckHeader(%q, %q) = %v; want %q", tt.name, tt.value, err, tt.err)
		}
	}
}
