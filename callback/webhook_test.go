//go:build linux

package callback

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

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
