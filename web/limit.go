package web

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxConnections is the connection limit when none is given: room for
// DefaultMaxStreamSubscribers subscribers and as many scrapes, API calls and status pages.
const DefaultMaxConnections = 2 * DefaultMaxStreamSubscribers

// RefusingConnections is how many refused connections a ConnLimit answers at once (each with a
// 503, for at most a second); more are closed at once. Their descriptors are part of what an
// agent keeps in reserve.
const RefusingConnections = 64

// refuseTimeout bounds the answer to one refused connection.
const refuseTimeout = time.Second

// ConnLimit bounds the HTTP connections open at once across the listeners it wraps. A connection
// beyond the limit is accepted and refused at once (a 503 Service Unavailable, then closed) and
// counted, so that neither the listen backlog nor the process's descriptors fill up. It is safe
// for concurrent use.
type ConnLimit struct {
	max       int64
	open      atomic.Int64
	refusing  chan struct{} // a slot per refused connection being answered
	onRefused func(reason string)
	response  string
}

// NewConnLimit returns a ConnLimit of n connections (at least 1) that calls onRefused (nil:
// nothing) with RefusedConnections for each connection it refuses.
func NewConnLimit(n int, onRefused func(reason string)) *ConnLimit {
	n = max(n, 1)
	if onRefused == nil {
		onRefused = func(string) {}
	}
	body := fmt.Sprintf("too many connections: this agent serves at most %d at once (hotplug-agent run --web.max-connections)\n", n)
	return &ConnLimit{
		max:       int64(n),
		refusing:  make(chan struct{}, RefusingConnections),
		onRefused: onRefused,
		response: "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
			"Retry-After: " + refusedRetryAfter + "\r\nConnection: close\r\n" +
			fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body,
	}
}

// Max returns the limit. It does not block.
func (c *ConnLimit) Max() int { return int(c.max) }

// Open returns the connections open now, of every listener. It does not block.
func (c *ConnLimit) Open() int { return int(c.open.Load()) }

// Listener wraps l. Its Accept blocks only as l's does: it refuses connections beyond the limit
// itself and goes on accepting, and never waits for one to close.
func (c *ConnLimit) Listener(l net.Listener) net.Listener {
	return &limitedListener{Listener: l, lim: c}
}

type limitedListener struct {
	net.Listener
	lim *ConnLimit
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.lim.open.Add(1) <= l.lim.max {
			return &limitedConn{Conn: conn, lim: l.lim}, nil
		}
		l.lim.open.Add(-1)
		l.lim.onRefused(RefusedConnections)
		select {
		case l.lim.refusing <- struct{}{}:
			go func() {
				defer func() { <-l.lim.refusing }()
				l.lim.refuse(conn)
			}()
		default:
			conn.Close() // a flood: no answer, and no goroutine, for each
		}
	}
}

// refuse answers conn with a 503 and closes it. The request is read first, so that closing does
// not reset the connection before the client reads the answer; a TLS client gets no plain-text
// answer, only the close.
func (c *ConnLimit) refuse(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(refuseTimeout))
	var b [512]byte
	n, _ := conn.Read(b[:])
	if n > 0 && b[0] == 0x16 { // a TLS handshake record
		return
	}
	if _, err := io.WriteString(conn, c.response); err != nil {
		return
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	for {
		if _, err := conn.Read(b[:]); err != nil {
			return
		}
	}
}

// limitedConn gives its place back when closed.
type limitedConn struct {
	net.Conn
	lim  *ConnLimit
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.lim.open.Add(-1) })
	return err
}

// CloseWrite lets the HTTP server half-close the connection as it would the TCP one.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
