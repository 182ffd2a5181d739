package callback

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/net/http/httpguts"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// Webhook configures a callback that POSTs each notification's JSON to a URL.
type Webhook struct {
	// URL receives the POSTs. Its password, if it has one, is never logged nor put in an error:
	// they show the URL as url.URL.Redacted does.
	URL string
	// Timeout bounds one request. Zero means 10 s.
	Timeout time.Duration
	// Retries bounds the further attempts after a failed one; the wait between attempts starts at
	// Backoff (zero: 200 ms) and doubles up to 30 s. A failure that another attempt cannot mend is
	// not retried: a 4xx answer other than 408 (Request Timeout) and 429 (Too Many Requests), a
	// redirect (3xx: it is not followed, see Callback), and a request that cannot be made (a
	// URL that does not parse, a header CheckHeader refuses).
	Retries int
	Backoff time.Duration
	// InsecureSkipVerify turns TLS certificate verification off. It is on by default.
	InsecureSkipVerify bool
	// Headers are added to every request (for example Authorization). Each must pass
	// CheckHeader, or every request fails.
	Headers map[string]string
	// Logger receives failed attempts; nil discards.
	Logger *slog.Logger
	// Name and Namespace make the Idempotency-Key of a notification with an ID (see Key): the
	// callback's name, and a UUID of the agent that keeps it across its restarts (its state
	// file's instance). A nil Namespace is replaced by a random one.
	Name      string
	Namespace uuid.UUID
}

// IdempotencyHeader carries a key that is the same for every attempt at one notification and
// different for every notification, so a receiver can drop the duplicates retries produce, and
// those a restart of the agent produces: a notification given again has the key it had.
const IdempotencyHeader = "Idempotency-Key"

// Key returns the Idempotency-Key of n for the webhook callback name of the agent namespace:
// for a notification with an ID, the version 5 UUID of "hotplug-agent/<name>/<ID>" in
// namespace, the same every time n is delivered, by this agent or after its restart; for one
// without (ID 0: a notification the agent does not give again), a random UUID. It does not block
// and is safe for concurrent use.
func Key(namespace uuid.UUID, name string, n notify.Notification) string {
	if n.ID == 0 {
		return uuid.NewString()
	}
	return uuid.NewSHA1(namespace, []byte("hotplug-agent/"+name+"/"+strconv.FormatUint(n.ID, 10))).String()
}

// Callback returns the notify.Callback that delivers to w. It blocks until the receiver has
// accepted the notification (a 2xx answer), refused it for good (a 4xx answer but 408 and 429,
// or a redirect: an error, at once), or the attempts are spent, so one webhook's notifications
// arrive in order; its registration's bounded queue holds what waits meanwhile. A request that
// cannot be made (w.URL does not parse, a header CheckHeader refuses) is an error at once too.
//
// A redirect (3xx) is not followed: a client follows a 301, 302 or 303 with a GET without the
// notification, whose 2xx would count as delivered, and it would send w.Headers (credentials)
// to the address the receiver names. The error names the status and the Location. It is safe
// for concurrent use.
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
	if w.Namespace == uuid.Nil {
		w.Namespace = uuid.New()
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if w.InsecureSkipVerify {
		transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the operator asked for it
	}
	client := &http.Client{
		Transport: transport,
		Timeout:   w.Timeout,
		// The 3xx answer itself is returned, and post refuses it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	shown := redactURL(w.URL)
	var headerErr error
	for _, k := range slices.Sorted(maps.Keys(w.Headers)) {
		if headerErr = CheckHeader(k, w.Headers[k]); headerErr != nil {
			break
		}
	}
	return func(ctx context.Context, n notify.Notification, _ any) error {
		if headerErr != nil {
			return fmt.Errorf("webhook %s: %w: not sent, every attempt would fail alike", shown, headerErr)
		}
		body, err := json.Marshal(n)
		if err != nil {
			return fmt.Errorf("webhook: encode: %w", err)
		}
		key := Key(w.Namespace, w.Name, n)
		wait := w.Backoff
		for attempt := 0; ; attempt++ {
			err = w.post(ctx, client, body, key)
			if err == nil {
				return nil
			}
			if se, ok := errors.AsType[*statusError](err); ok && se.permanent() {
				return fmt.Errorf("webhook %s: %w: not retried, another attempt would get the same answer", shown, err)
			}
			if _, ok := errors.AsType[*requestError](err); ok {
				return fmt.Errorf("webhook %s: %w: not retried, every attempt would fail alike", shown, err)
			}
			if attempt >= w.Retries || ctx.Err() != nil {
				return fmt.Errorf("webhook %s: gave up after %d attempts: %w", shown, attempt+1, err)
			}
			w.Logger.Warn("webhook attempt failed; retrying", "url", shown, "attempt", attempt+1, "backoff", wait, "err", err)
			select {
			case <-ctx.Done():
				return fmt.Errorf("webhook %s: %w", shown, ctx.Err())
			case <-time.After(wait):
			}
			wait = min(2*wait, 30*time.Second)
		}
	}
}

func (w Webhook) post(ctx context.Context, client *http.Client, body []byte, key string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		// Not the *url.Error: it quotes the URL whole.
		return &requestError{fmt.Errorf("request to %s: %w", redactURL(w.URL), errors.Unwrap(err))}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "hotplug-agent")
	req.Header.Set(IdempotencyHeader, key)
	for k, v := range w.Headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err // a *url.Error, whose URL net/http has stripped of its password
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		se := &statusError{code: resp.StatusCode, status: resp.Status}
		if se.redirect() {
			se.location = "without a Location"
			if resp.Header.Get("Location") != "" {
				if loc, err := resp.Location(); err != nil {
					se.location = "to a Location that does not parse" // not quoted: it may hold a password
				} else {
					se.location = "to " + loc.Redacted() // resolved against w.URL, whose password it may hold
				}
			}
		}
		return se
	}
	return nil
}

// statusError is an answer other than 2xx.
type statusError struct {
	code     int
	status   string
	location string // of a redirect, as shown
}

func (e *statusError) Error() string {
	if e.redirect() {
		return fmt.Sprintf("answered %s, a redirect %s: not followed (the url must be the receiver's own address)", e.status, e.location)
	}
	return "answered " + e.status
}

func (e *statusError) redirect() bool { return e.code/100 == 3 }

// permanent reports an answer that another attempt would get too: a redirect, a 4xx, but 408
// (Request Timeout) and 429 (Too Many Requests), which say to come back later.
func (e *statusError) permanent() bool {
	return e.redirect() || (e.code/100 == 4 && e.code != http.StatusRequestTimeout && e.code != http.StatusTooManyRequests)
}

// requestError is a request that could not be made: every attempt would fail alike.
type requestError struct{ err error }

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// CheckHeader returns an error when name and value cannot make a header of a request: a name
// that is not an HTTP token (RFC 9110 section 5.6.2: letters, digits and !#$%&'*+-.^_`|~; no
// space, no colon) or a value that holds a control character other than the tab (a newline, as
// a YAML block scalar "|" leaves at its end). The error quotes the name but never the value,
// which may be a credential. It does not block and is safe for concurrent use.
func CheckHeader(name, value string) error {
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("header %q: not a valid header name: use letters, digits and !#$%%&'*+-.^_`|~ only (no spaces, no colon)", name)
	}
	if !httpguts.ValidHeaderFieldValue(value) {
		i := strings.IndexFunc(value, func(r rune) bool { return (r < ' ' && r != '\t') || r == 0x7f })
		what := fmt.Sprintf("a control character (0x%02x)", value[i])
		if value[i] == '\n' {
			what = "a newline"
			if i == len(value)-1 {
				what += " at its end (a YAML block scalar \"|\" keeps it: write \"|-\" or a plain string)"
			}
		}
		return fmt.Errorf("header %q: its value holds %s, which a header cannot carry", name, what)
	}
	return nil
}

// redactURL returns raw as logs and errors show it: with its password replaced
// (url.URL.Redacted), and not at all when it does not parse (the parser's error would quote it).
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
