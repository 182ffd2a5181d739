package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/dispatch"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// unknownID is the Last-Event-ID the client sends when it has no position it can trust (its
// first connection, or after an inconsistency): an ID the agent never gave, which it answers
// with a resync carrying its active set and its position. That is how a new client learns both
// in one critical section of the agent, with nothing lost between them.
const unknownID = math.MaxUint64

// errAgentEnded is wrapped by the error of a stream that the agent ended with an error event.
var errAgentEnded = errors.New("the agent ended the stream")

// errInconsistent is wrapped by the error of a stream whose events contradict the replica.
var errInconsistent = errors.New("inconsistent event")

// run connects, follows the stream and reconnects with backoff until ctx ends.
func (c *Client) run(ctx context.Context) {
	defer close(c.runDone)
	backoff := c.backoff.Min
	for {
		c.setState(Connecting, nil, 0)
		progressed, received, err := c.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			backoff = c.backoff.Min
		}
		// A delay drawn from the upper half of the current step.
		delay := backoff/2 + rand.N(backoff/2+1)
		c.log.Info("event stream ended; reconnecting", "err", err, "delay", delay)
		c.setBackoff(err, delay, received)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, c.backoff.Max)
	}
}

// follow makes one connection and handles its events until it ends. progressed reports whether
// a numbered notification was applied: the connection was useful, and the backoff starts over.
// (A server that only ever sends a resync and hangs up gets a growing backoff.) received
// reports whether a resync or a notification was applied.
func (c *Client) follow(ctx context.Context) (progressed, received bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.eventsURL, nil)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL it quotes, password included
		}
		return false, false, fmt.Errorf("request %s: %w", c.shownURL, err)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	c.mu.Lock()
	last := uint64(unknownID)
	if c.resume {
		last = c.pos
	}
	c.mu.Unlock()
	req.Header.Set("Last-Event-ID", strconv.FormatUint(last, 10))

	// Nothing at all for the idle timeout, not the response's headers nor a line of the stream,
	// not even a keep-alive (the agent sends one every 15 s): the connection is dead.
	var idled atomic.Bool
	idle := time.AfterFunc(c.idle, func() { idled.Store(true); cancel() })
	defer idle.Stop()
	resp, err := c.http.Do(req)
	if err != nil {
		if idled.Load() {
			return false, false, fmt.Errorf("connect to %s: no response for %s", c.shownURL, c.idle)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the "Get URL" it wraps, password included
		}
		return false, false, fmt.Errorf("connect to %s: %w", c.shownURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		msg := strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
		return false, false, fmt.Errorf("GET %s: %s: %s", c.shownURL, resp.Status, msg)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return false, false, fmt.Errorf("GET %s: Content-Type %q, not an event stream: is this a hotplug-agent?",
			c.shownURL, resp.Header.Get("Content-Type"))
	}
	c.mu.Lock()
	c.stats.Connects++
	c.mu.Unlock()
	c.log.Debug("event stream connected", "last_event_id", last)
	c.setState(Connected, nil, 0)

	idle.Reset(c.idle)
	sr := newSSEReaderLimit(resp.Body, c.lineLimit)
	sr.onLine = func() { idle.Reset(c.idle) }
	for {
		ev, err := sr.next()
		switch {
		case err == nil:
		case idled.Load():
			return progressed, received, fmt.Errorf("nothing received for %s", c.idle)
		case errors.Is(err, io.EOF):
			return progressed, received, errors.New("the agent closed the stream")
		case errors.Is(err, errEventTooLarge), errors.Is(err, errLineTooLong):
			// Resumed at the same ID, the stream would bring the same event again: the next
			// connection asks for a resync instead.
			c.mu.Lock()
			c.stats.Inconsistencies++
			c.resume = false
			c.mu.Unlock()
			c.log.Warn("event too large to read; asking the agent for a resync", "err", err)
			return progressed, received, fmt.Errorf("read stream: %w", err)
		default:
			return progressed, received, fmt.Errorf("read stream: %w", err)
		}
		if !ev.hasData {
			continue // an id alone: nothing to apply
		}
		numbered, err := c.handle(ev)
		if err != nil {
			return progressed, received, err
		}
		progressed = progressed || numbered
		received = received || numbered || ev.typ == "resync"
	}
}

// handle applies one event to the replica and queues what it means for the registrations;
// numbered reports a notification applied. An error ends the connection; after an inconsistency
// the next connection asks for a resync.
func (c *Client) handle(ev sseEvent) (numbered bool, err error) {
	switch ev.typ {
	case "", "message":
		err := c.handleNotification(ev)
		return err == nil, err
	case "resync":
		return false, c.handleResync(ev)
	case "error":
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(ev.data), &e) != nil || e.Error == "" {
			e.Error = ev.data
		}
		c.mu.Lock()
		c.stats.Cuts++
		c.mu.Unlock()
		c.log.Warn("the agent ended the event stream", "reason", e.Error)
		return false, fmt.Errorf("%w: %s", errAgentEnded, e.Error)
	}
	c.log.Debug("event of an unknown type ignored", "type", ev.typ)
	return false, nil
}

// handleNotification applies one numbered notification: its ID must be above the client's
// position (the next one, or further on where the agent numbered notifications made for one of
// its callbacks alone, which the stream does not carry) and it must agree with the replica (an
// arrival of an interface not active, a removal of one active); otherwise nothing is delivered and
// the client asks for a resync.
func (c *Client) handleNotification(ev sseEvent) error {
	n, err := DecodeNotification([]byte(ev.data))
	if err != nil {
		return c.inconsistent(err.Error(), ev.data)
	}
	id, err := strconv.ParseUint(ev.id, 10, 64)
	switch {
	case !ev.hasID || err != nil:
		return c.inconsistent(fmt.Sprintf("event id %q is not a notification ID", ev.id), ev.data)
	case n.ID != id:
		return c.inconsistent(fmt.Sprintf("event id %d but notification id %d", id, n.ID), ev.data)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, active := c.view[n.SymbolicLinkName]
	var why string
	switch {
	case !c.synced:
		why = "a notification before the agent's starting set"
	case id <= c.pos:
		why = fmt.Sprintf("notification %d after %d: IDs repeated or out of order", id, c.pos)
	case n.IsArrival() && active:
		why = "arrival of an interface already active"
	case !n.IsArrival() && !active:
		why = "removal of an interface not active"
	case !n.IsArrival() && cur.ClassGUID != n.InterfaceClassGUID:
		why = "removal with another class than the active interface"
	}
	if why != "" {
		return c.inconsistentLocked(why, ev.data)
	}
	if n.IsArrival() {
		c.view[n.SymbolicLinkName] = n.Interface
	} else {
		delete(c.view, n.SymbolicLinkName)
	}
	c.pos = id
	c.publish(n)
	return nil
}

// handleResync reconciles the replica with the agent's active set: removals, then arrivals, to
// the registrations; the first one also starts the registrations made before it.
func (c *Client) handleResync(ev sseEvent) error {
	last, set, err := decodeResync([]byte(ev.data))
	if err != nil {
		return c.inconsistent(err.Error(), ev.data)
	}
	if ev.hasID && ev.id != strconv.FormatUint(last, 10) {
		return c.inconsistent(fmt.Sprintf("resync event id %q but last_id %d", ev.id, last), ev.data)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	next := make(map[string]notify.Interface, len(set))
	for _, i := range set {
		next[i.SymbolicLink] = i
	}
	notes := dispatch.Resync(c.spec, c.view, next, nil)
	arrivals := 0
	for _, n := range notes {
		if n.IsArrival() {
			arrivals++
		}
	}
	first := !c.synced
	if !first {
		c.stats.Resyncs++
	}
	for _, n := range notes {
		c.publish(n)
	}
	c.view = next
	c.pos, c.synced, c.resume = last, true, true
	started := 0
	for _, r := range c.regs.Registered() {
		r.mu.Lock()
		if r.pending && !r.box.Removed() {
			c.start(r)
			started++
		}
		r.mu.Unlock()
	}
	if first {
		c.log.Info("event stream synchronised", "last_event_id", last, "interfaces", len(set), "registrations", started)
	} else {
		c.log.Info("the agent resynchronised the client", "last_event_id", last, "interfaces", len(set),
			"removals", len(notes)-arrivals, "arrivals", arrivals)
	}
	return nil
}

// inconsistent records an event the client cannot apply; the next connection asks for a
// resync.
func (c *Client) inconsistent(why, data string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inconsistentLocked(why, data)
}

func (c *Client) inconsistentLocked(why, data string) error {
	c.stats.Inconsistencies++
	c.resume = false
	if len(data) > 300 {
		data = data[:300] + "..."
	}
	c.log.Warn("event stream inconsistent with the client's view; asking the agent for a resync", "reason", why, "data", data)
	return fmt.Errorf("%w: %s", errInconsistent, why)
}
