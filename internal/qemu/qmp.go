// Package qemu runs QEMU guests for end-to-end tests: a small QMP client, a VM runner that builds
// the qemu-system-x86_64 command line, an initramfs (cpio newc) writer, and helpers for CPU and
// memory hotplug (pc-dimm, virtio-mem). Everything that waits takes a context.
package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// Event is an asynchronous QMP event ({"event": ..., "data": ..., "timestamp": ...}).
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
	// Time is the event's timestamp as QEMU stamped it.
	Time time.Time `json:"-"`
}

func (e Event) String() string { return e.Name + " " + string(e.Data) }

// Error is a QMP error reply.
type Error struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc) }

// ErrClosed is returned by calls on a closed client or after QEMU closed the connection.
var ErrClosed = errors.New("qmp: connection closed")

// message is any message QEMU sends.
type message struct {
	QMP       json.RawMessage `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	ID        json.RawMessage `json:"id"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

type reply struct {
	ret json.RawMessage
	err *Error
}

// Client is a QMP connection in command mode. Commands may be issued from several goroutines at
// once; replies are matched to commands by id, and asynchronous events, which QEMU interleaves with
// replies, are kept in order for Subscriptions and passed to the OnEvent callback. Safe for
// concurrent use.
type Client struct {
	conn    net.Conn
	onEvent func(Event)

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan reply
	events  []Event
	changed chan struct{} // closed and replaced whenever events grows or the connection ends
	err     error         // why the connection ended; nil while it is up

	done chan struct{}
}

// DialOption configures Dial.
type DialOption func(*Client)

// WithEventHandler calls f for every event, in order, on the client's reader goroutine: f must
// not block.
func WithEventHandler(f func(Event)) DialOption { return func(c *Client) { c.onEvent = f } }

// Dial connects to the QMP unix socket at path, reads the greeting and negotiates capabilities
// (qmp_capabilities), retrying the connection until ctx ends: QEMU creates the socket a moment
// after it starts.
func Dial(ctx context.Context, path string, opts ...DialOption) (*Client, error) {
	var d net.Dialer
	var conn net.Conn
	for {
		var err error
		conn, err = d.DialContext(ctx, "unix", path)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp: connect %s: %w (last error: %v)", path, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return NewClient(ctx, conn, opts...)
}

// NewClient takes over conn, reads the greeting and sends qmp_capabilities. The client owns conn
// and closes it on Close or on error.
func NewClient(ctx context.Context, conn net.Conn, opts ...DialOption) (*Client, error) {
	c := &Client{conn: conn, pending: map[string]chan reply{}, changed: make(chan struct{}), done: make(chan struct{})}
	for _, o := range opts {
		o(c)
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	// The greeting, within ctx.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	line, err := r.ReadBytes('\n')
	stop()
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("qmp: read greeting: %w", err)
	}
	var g message
	if err := json.Unmarshal(line, &g); err != nil || g.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: not a QMP greeting: %.200q", line)
	}
	go c.read(r)
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) read(r *bufio.Reader) {
	defer close(c.done)
	var err error
	for {
		var line []byte
		line, err = r.ReadBytes('\n')
		if err != nil {
			break
		}
		var m message
		if jerr := json.Unmarshal(line, &m); jerr != nil {
			err = fmt.Errorf("qmp: bad message %.200q: %w", line, jerr)
			break
		}
		switch {
		case m.Event != "":
			e := Event{Name: m.Event, Data: m.Data}
			if m.Timestamp != nil {
				e.Time = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
			}
			if c.onEvent != nil {
				c.onEvent(e)
			}
			c.mu.Lock()
			c.events = append(c.events, e)
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
		case m.ID != nil:
			var id string
			if json.Unmarshal(m.ID, &id) != nil {
				id = string(m.ID)
			}
			c.mu.Lock()
			ch := c.pending[id]
			delete(c.pending, id)
			c.mu.Unlock()
			if ch != nil {
				ch <- reply{ret: m.Return, err: m.Error}
			}
		}
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		err = ErrClosed
	} else {
		err = fmt.Errorf("%w: %v", ErrClosed, err)
	}
	c.mu.Lock()
	c.err = err
	for id, ch := range c.pending {
		ch <- reply{err: &Error{Class: "Closed", Desc: err.Error()}}
		delete(c.pending, id)
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	c.conn.Close()
}

// Execute runs command with args (nil, or anything that marshals to a JSON object) and decodes
// the reply's "return" into out (when out is not nil). It waits for the reply until ctx ends. A
// QMP error reply is returned as *Error.
func (c *Client) Execute(ctx context.Context, command string, args, out any) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	c.nextID++
	id := "hp-" + strconv.FormatUint(c.nextID, 10)
	ch := make(chan reply, 1)
	c.pending[id] = ch
	c.mu.Unlock()

	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		c.forget(id)
		return fmt.Errorf("qmp %s: encode arguments: %w", command, err)
	}
	b = append(b, '\n')
	c.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	}
	_, err = c.conn.Write(b)
	c.conn.SetWriteDeadline(time.Time{})
	c.wmu.Unlock()
	if err != nil {
		c.forget(id)
		return fmt.Errorf("qmp %s: write: %w", command, err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			r.err.Command = command
			return r.err
		}
		if out != nil {
			if err := json.Unmarshal(r.ret, out); err != nil {
				return fmt.Errorf("qmp %s: decode reply %.200s: %w", command, r.ret, err)
			}
		}
		return nil
	case <-ctx.Done():
		c.forget(id)
		return fmt.Errorf("qmp %s: no reply: %w", command, ctx.Err())
	}
}

func (c *Client) forget(id string) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// Close closes the connection. Pending and later calls fail with ErrClosed.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// Done is closed when the connection has ended (QEMU exited, or Close).
func (c *Client) Done() <-chan struct{} { return c.done }

// Events returns a copy of every event received so far, in order.
func (c *Client) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

// Subscription reads the client's events in order from the moment it was made. Not safe for
// concurrent use; make one per reader.
type Subscription struct {
	c    *Client
	next int
}

// Subscribe returns a Subscription that starts with the next event QEMU sends: subscribe before
// the command whose events you wait for.
func (c *Client) Subscribe() *Subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &Subscription{c: c, next: len(c.events)}
}

// Next returns the next event, waiting until ctx ends. After the connection ends it returns the
// events already received, then the error.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	for {
		s.c.mu.Lock()
		if s.next < len(s.c.events) {
			e := s.c.events[s.next]
			s.next++
			s.c.mu.Unlock()
			return e, nil
		}
		err, changed := s.c.err, s.c.changed
		s.c.mu.Unlock()
		if err != nil {
			return Event{}, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// Wait returns the next event named name for which match (if not nil) returns true, skipping
// others, waiting until ctx ends. The error says what it waited for.
func (s *Subscription) Wait(ctx context.Context, name string, match func(Event) bool) (Event, error) {
	var skipped []string
	for {
		e, err := s.Next(ctx)
		if err != nil {
			return Event{}, fmt.Errorf("qmp: waiting for event %s: %w (events seen meanwhile: %v)", name, err, skipped)
		}
		if e.Name == name && (match == nil || match(e)) {
			return e, nil
		}
		if len(skipped) < 20 {
			skipped = append(skipped, e.String())
		}
	}
}
