package callback

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// Webhook configures a callback that POSTs each notification's JSON to a URL.
type Webhook struct {
	// URL receives the POSTs.
	URL string
	// Timeout bounds one request. Zero means 10 s.
	Timeout time.Duration
	// Retries bounds the further attempts after a failed one; the wait between attempts starts at
	// Backoff (zero: 200 ms) and doubles up to 30 s.
	Retries int
	Backoff time.Duration
	// InsecureSkipVerify turns TLS certificate verification off. It is on by default.
	InsecureSkipVerify bool
	// Headers are added to every request (for example Authorization).
	Headers map[string]string
	// Logger receives failed attempts; nil discards.
	Logger *slog.Logger
}

// IdempotencyHeader carries a key that is the same for every attempt at one notification and
// different for every notification, so a receiver can drop the duplicates retries produce.
const IdempotencyHeader = "Idempotency-Key"

// Callback returns the notify.Callback that delivers to w. It blocks until the receiver has
// accepted the notification (a 2xx answer) or the attempts are spent, so one webhook's
// notifications arrive in order; its registration's bounded queue holds what waits meanwhile.
// It is safe for concurrent use.
func (w Webhook) Callback() notify.Callback {
	if w.Timeout <= 0 {
		w.Timeout = 10 * time.Second
	}
	if w.Backoff <= 0 {
		w.Backoff = 200 * time.Millisecond
	}
	if w.Logger == nil {
		w.Logger = slog.New(slog.DiscardHandler)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if w.InsecureSkipVerify {
		transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the operator asked for it
	}
	client := &http.Client{Transport: transport, Timeout: w.Timeout}
	return func(ctx context.Context, n notify.Notification, _ any) error {
		body, err := json.Marshal(n)
		if err != nil {
			return fmt.Errorf("webhook: encode: %w", err)
		}
		key := uuid.NewString()
		wait := w.Backoff
		for attempt := 0; ; attempt++ {
			err = w.post(ctx, client, body, key)
			if err == nil {
				return nil
			}
			if attempt >= w.Retries || ctx.Err() != nil {
				return fmt.Errorf("webhook %s: gave up after %d attempts: %w", w.URL, attempt+1, err)
			}
			w.Logger.Warn("webhook attempt failed; retrying", "url", w.URL, "attempt", attempt+1, "backoff", wait, "err", err)
			select {
			case <-ctx.Done():
				return fmt.Errorf("webhook %s: %w", w.URL, ctx.Err())
			case <-time.After(wait):
			}
			wait = min(2*wait, 30*time.Second)
		}
	}
}

func (w Webhook) post(ctx context.Context, client *http.Client, body []byte, key string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "hotplug-agent")
	req.Header.Set(IdempotencyHeader, key)
	for k, v := range w.Headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}
