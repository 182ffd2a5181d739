package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Handler carries out one operation on one target for peer. It blocks until the change is made
// (or refused) and must be safe for concurrent use. ctx ends when the client cancels or goes
// away, when the request's deadline passes (context.Cause says which: ErrCancelled,
// ErrClientGone, a *TimeoutError, ErrStopping), or when the agent stops; the handler then stops
// as soon as it safely can and says so in the result. It calls progress (never nil, and cheap
// when the client did not ask for progress) for each block of a memory device it is done with.
type Handler func(ctx context.Context, op string, t Target, peer Peer, progress func(Progress)) Result

// Options configure a Server.
type Options struct {
	// Path is the socket's path; its directory is created (0755) when missing.
	Path string
	// Handler carries out the requests.
	Handler Handler
	// Logger receives one line per request, with the peer's uid and pid; nil discards.
	Logger *slog.Logger
	// Authorize decides whether a peer may make requests; nil is RootOnly.
	Authorize func(Peer) error
	// Observe, when set, is told each request's op and the response of each item ("denied" and
	// "bad-request" for requests refused as a whole).
	Observe func(op, response string)
	// Reload carries out a reload request: nil when the new configuration is in force, else why
	// it was refused (the running one stays). Nil: reload requests are answered that this agent
	// cannot reload. It may block and must be safe for concurrent use.
	Reload func(ctx context.Context, peer Peer) error
}

// readTimeout bounds the wait for a request once a client has connected.
const readTimeout = 10 * time.Second

// Server serves the control socket. Its methods are safe for concurrent use.
type Server struct {
	o   Options
	ln  *net.UnixListener
	log *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	// closing is closed by Close: it ends Serve's wait between failed accepts.
	closing chan struct{}
}

// Listen creates the socket at o.Path with mode 0600: a stale socket file left by an agent that
// died is replaced, but a live one (another agent answers on it) or a file that is not a socket
// is an error. It does not block.
func Listen(o Options) (*Server, error) {
	if o.Path == "" {
		return nil, errors.New("control: empty socket path")
	}
	if o.Handler == nil {
		return nil, errors.New("control: nil handler")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Authorize == nil {
		o.Authorize = RootOnly
	}
	if err := os.MkdirAll(filepath.Dir(o.Path), 0o755); err != nil {
		return nil, fmt.Errorf("control: socket directory: %w", err)
	}
	switch st, err := os.Lstat(o.Path); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("control: %w", err)
	case st.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("control: %s exists and is not a socket", o.Path)
	default:
		if c, err := net.DialTimeout("unix", o.Path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control: %s: another agent is listening on it", o.Path)
		}
		if err := os.Remove(o.Path); err != nil {
			return nil, fmt.Errorf("control: remove the stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: o.Path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control: listen on %s: %w", o.Path, err)
	}
	ln.SetUnlinkOnClose(true)
	// Created 0777 minus the umask; nobody but root may connect.
	if err := os.Chmod(o.Path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control: %w", err)
	}
	return &Server{o: o, ln: ln, log: o.Logger.With("component", "control"), conns: make(map[net.Conn]struct{}),
		closing: make(chan struct{})}, nil
}

// Path returns the socket's path. It does not block.
func (s *Server) Path() string { return s.o.Path }

// Serve accepts connections and answers their requests until ctx ends or Close is called, then
// closes the socket (removing its file), cancels the requests in progress and waits for them. A
// failed accept that may pass (descriptors or memory short: EMFILE, ENFILE, ENOMEM, ENOBUFS) is
// logged and tried again, after a wait that doubles from 5 ms to 1 s while it lasts; any other
// ends Serve, which returns it. It blocks until then; call it once.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	s.log.Info("control socket ready", "path", s.o.Path)
	var err error
	var backoff time.Duration // the wait before the next accept; 0 while accepting works
	failures, since := 0, time.Time{}
	for {
		var c *net.UnixConn
		c, err = s.ln.AcceptUnix()
		if err != nil && acceptMayPass(err) && !s.isClosed() {
			if backoff == 0 {
				backoff, since = minAcceptBackoff, time.Now()
				s.log.Warn("control socket: accept failed; trying again until it works", "err", err)
			} else {
				backoff = min(2*backoff, maxAcceptBackoff)
			}
			failures++
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.closing:
				t.Stop()
			}
			continue
		}
		if err != nil {
			break
		}
		if backoff != 0 {
			s.log.Info("control socket: accepting again", "failed_accepts", failures, "after", time.Since(since).Round(time.Millisecond))
			backoff, failures = 0, 0
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			break
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serve(ctx, c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
	// Whether the loop ended because the server was closed, or because accepting failed: asked
	// before the Close below, which would make it so.
	closed := s.isClosed()
	cancel()
	s.Close()
	s.wg.Wait()
	if closed {
		return nil
	}
	return fmt.Errorf("control: accept: %w", err)
}

// The wait between accepts that failed for a reason that may pass doubles from
// minAcceptBackoff to maxAcceptBackoff, as net/http's Server waits.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// acceptMayPass reports whether a failed accept may work when tried again: the process or the
// system is short of descriptors or memory for the moment (as under memory pressure during an
// unplug). The connection waits in the socket's queue meanwhile.
func acceptMayPass(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.ENOBUFS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops accepting, closes the socket and removes its file. Requests in progress are
// cancelled by Serve. It does not block and may be called more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	return s.ln.Close()
}

// serve answers the one request of c.
func (s *Server) serve(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	peer, err := peerOf(c)
	if err != nil {
		s.log.Warn("control connection refused: no peer credentials", "err", err)
		s.observe("", "denied")
		writeResponse(c, Response{Error: "peer credentials: " + err.Error()})
		return
	}
	if err := s.o.Authorize(peer); err != nil {
		s.log.Warn("control request refused", "uid", peer.UID, "pid", peer.PID, "err", err)
		s.observe("", "denied")
		writeResponse(c, Response{Error: err.Error()})
		return
	}
	c.SetReadDeadline(time.Now().Add(readTimeout))
	var req Request
	dec := json.NewDecoder(bufio.NewReader(io.LimitReader(c, maxRequestBytes)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.log.Warn("control request unreadable", "uid", peer.UID, "pid", peer.PID, "err", err)
		s.observe("", "bad-request")
		writeResponse(c, Response{Error: "bad request: " + err.Error()})
		return
	}
	if err := req.Validate(); err != nil {
		s.log.Warn("control request invalid", "uid", peer.UID, "pid", peer.PID, "op", req.Op, "err", err)
		op := req.Op
		if op != OpOnline && op != OpOffline && op != OpReload {
			op = "" // never a label value taken from the wire
		}
		s.observe(op, "bad-request")
		writeResponse(c, Response{Error: "bad request: " + err.Error()})
		return
	}
	c.SetReadDeadline(time.Time{})
	if req.Op == OpReload {
		s.reload(ctx, c, peer)
		return
	}
	s.log.Info("control request", "uid", peer.UID, "pid", peer.PID, "op", req.Op, "targets", targetList(req.Targets),
		"progress", req.Progress, "timeout", req.Timeout())

	// The request's context: cancelled by the client, its going away, the deadline, or the
	// agent stopping, each with its cause.
	rctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(nil)
	stopping := context.AfterFunc(ctx, func() { cancel(ErrStopping) })
	defer stopping()
	if d := req.Timeout(); d > 0 {
		var stop context.CancelFunc
		rctx, stop = context.WithTimeoutCause(rctx, d, &TimeoutError{After: d})
		defer stop()
	}
	watching := s.watch(c, dec, cancel, peer)
	stopWatching := sync.OnceFunc(func() {
		c.SetReadDeadline(time.Unix(0, 1)) // ends the watch's read
		<-watching
	})
	defer stopWatching()
	progress := func(Progress) {}
	if req.Progress {
		progress = func(p Progress) {
			if err := writeLine(c, Response{Progress: &p}); err != nil {
				s.log.Warn("control request: the client does not take its progress", "uid", peer.UID, "pid", peer.PID, "err", err)
				cancel(ErrClientGone)
			}
		}
	}

	resp := Response{Results: make([]Result, 0, len(req.Targets))}
	for _, t := range req.Targets {
		var r Result
		if rctx.Err() != nil {
			r = NewResult(t, Failed, fmt.Errorf("not begun: %w", context.Cause(rctx)))
		} else {
			r = s.o.Handler(rctx, req.Op, t, peer, progress)
		}
		r.Kind, r.ID = t.Kind, t.ID
		if r.Response != Success && rctx.Err() != nil {
			r.Stopped = stoppedBy(context.Cause(rctx))
		}
		resp.Results = append(resp.Results, r)
		resp.FreedBytes += r.FreedBytes
		s.observe(req.Op, r.Response)
		level := slog.LevelInfo
		if r.Response != Success {
			level = slog.LevelWarn
		}
		s.log.Log(ctx, level, "control request result", "uid", peer.UID, "pid", peer.PID, "op", req.Op,
			"target", t.String(), "response", r.Response, "freed_bytes", r.FreedBytes, "err", r.Error)
	}
	// Before the answer: a client that reads it and closes is not cancelling anything.
	stopWatching()
	writeResponse(c, resp)
}

// watch reads what the client sends after its request, until the read deadline set when the
// request is answered: a CancelMessage cancels the request (ErrCancelled); the client's closing
// its connection cancels it (ErrClientGone). A client that shut down only its sending side, as
// socat does once it has sent the request, still waits for the answer: it is not watched any
// more. The returned channel is closed once watch has stopped.
func (s *Server) watch(c *net.UnixConn, dec *json.Decoder, cancel context.CancelCauseFunc, peer Peer) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			var m CancelMessage
			err := dec.Decode(&m)
			var readErr *net.OpError
			switch {
			case err == nil && m.Cancel:
				s.log.Info("control request cancelled by the client", "uid", peer.UID, "pid", peer.PID)
				cancel(ErrCancelled)
				return
			case err == nil:
				continue
			case errors.Is(err, os.ErrDeadlineExceeded):
				return // answered
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				if hungUp(c) {
					s.log.Info("control request cancelled: the client went away", "uid", peer.UID, "pid", peer.PID)
					cancel(ErrClientGone)
				}
				return
			case errors.As(err, &readErr): // the connection is broken (ECONNRESET)
				s.log.Info("control request cancelled: the client went away", "uid", peer.UID, "pid", peer.PID, "err", err)
				cancel(ErrClientGone)
				return
			default: // not JSON, or not a cancel: what follows cannot be trusted to be either
				s.log.Debug("control request: the client sent what is not a cancel; not read any further", "uid", peer.UID, "pid", peer.PID, "err", err)
				return
			}
		}
	}()
	return done
}

// reload carries out a reload request and answers it.
func (s *Server) reload(ctx context.Context, c net.Conn, peer Peer) {
	s.log.Info("control request", "uid", peer.UID, "pid", peer.PID, "op", OpReload)
	err := errors.New("this agent cannot reload its configuration")
	if s.o.Reload != nil {
		err = s.o.Reload(ctx, peer)
	}
	if err != nil {
		s.observe(OpReload, Failed)
		writeResponse(c, Response{Error: err.Error()})
		return
	}
	s.observe(OpReload, Success)
	writeResponse(c, Response{})
}

func (s *Server) observe(op, response string) {
	if s.o.Observe != nil {
		s.o.Observe(op, response)
	}
}

func writeResponse(c net.Conn, r Response) {
	writeLine(c, r) // a client that went away has no one to tell
}

// writeLine writes r as one line, waiting at most readTimeout for the client to take it.
func writeLine(c net.Conn, r Response) error {
	c.SetWriteDeadline(time.Now().Add(readTimeout))
	return json.NewEncoder(c).Encode(r)
}

func targetList(ts []Target) string {
	const show = 16
	out := ""
	for i, t := range ts {
		if i == show {
			return out + fmt.Sprintf(" ... (%d in all)", len(ts))
		}
		if i > 0 {
			out += ", "
		}
		out += t.String()
	}
	return out
}

// Do sends req to the agent listening at path and returns its response. An error means the
// request did not get an answer (no agent, not allowed to connect, ctx ended); a refused request
// is a Response with Error set. It blocks until the agent answers or ctx ends. With
// req.Progress set, the progress lines are read and dropped: DoWith passes them on.
func Do(ctx context.Context, path string, req Request) (Response, error) {
	return DoWith(ctx, path, req, CallOptions{})
}

// CallOptions are the optional parts of DoWith.
type CallOptions struct {
	// Progress, when set, asks for progress (Request.Progress) and is called with each progress
	// line, in order, on DoWith's goroutine.
	Progress func(Progress)
	// Cancel, once closed, asks the agent to cancel the request (a CancelMessage); DoWith goes
	// on reading, for the answer that says what the agent undid, until ctx ends.
	Cancel <-chan struct{}
}

// DoWith is Do with progress and cancellation. To an agent older than Request.Progress and
// TimeoutMS, which refuses them as unknown, the request is sent again without them: no progress
// lines, and no deadline on the agent's side. It blocks until the agent answers or ctx ends.
func DoWith(ctx context.Context, path string, req Request, o CallOptions) (Response, error) {
	if o.Progress != nil {
		req.Progress = true
	}
	resp, err := call(ctx, path, req, o)
	if err == nil && (req.Progress || req.TimeoutMS != 0) &&
		(strings.HasPrefix(resp.Error, `bad request: json: unknown field "progress"`) ||
			strings.HasPrefix(resp.Error, `bad request: json: unknown field "timeout_ms"`)) {
		req.Progress, req.TimeoutMS = false, 0
		return call(ctx, path, req, o)
	}
	return resp, err
}

// call makes one connection for req (see DoWith).
func call(ctx context.Context, path string, req Request, o CallOptions) (Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, errConnRefused):
			return Response{}, fmt.Errorf("no agent is listening on %s (is `hotplug-agent run` running? --control.socket gives the path)", path)
		case errors.Is(err, fs.ErrPermission):
			return Response{}, fmt.Errorf("%s: permission denied: the control socket is for root", path)
		}
		return Response{}, fmt.Errorf("connect to %s: %w", path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	// An agent that refuses the peer answers without reading the request: the write may fail,
	// and the answer is there to read all the same.
	sendErr := json.NewEncoder(c).Encode(req)
	if o.Cancel != nil && sendErr == nil {
		answered := make(chan struct{})
		defer close(answered)
		go func() {
			select {
			case <-o.Cancel:
				json.NewEncoder(c).Encode(CancelMessage{Cancel: true}) // an agent gone has nothing to cancel
			case <-answered:
			}
		}()
	}
	dec := json.NewDecoder(bufio.NewReader(c))
	for {
		var resp Response
		if err := dec.Decode(&resp); err != nil {
			switch {
			case ctx.Err() != nil:
				return Response{}, fmt.Errorf("waiting for the agent's answer: %w", ctx.Err())
			case sendErr != nil:
				return Response{}, fmt.Errorf("send the request to %s: %w", path, sendErr)
			}
			return Response{}, fmt.Errorf("read the answer from %s: %w", path, err)
		}
		if resp.Progress != nil && resp.Error == "" && resp.Results == nil {
			if o.Progress != nil {
				o.Progress(*resp.Progress)
			}
			continue
		}
		return resp, nil
	}
}
