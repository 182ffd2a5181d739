//go:build linux

package udev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernelGroup is the multicast group of the kernel's own uevent broadcast. Group 2 is
// udevd's re-broadcast, which we do not want.
const kernelGroup = 1

// recvBufferSize is the size of the per-Conn datagram buffer. The kernel caps a
// uevent's environment at 2048 bytes (UEVENT_BUFFER_SIZE) plus the ACTION@DEVPATH
// header; anything larger is reported as truncated.
const recvBufferSize = 8 << 10

// credsSpace is the room SCM_CREDENTIALS takes in a control message buffer.
var credsSpace = unix.CmsgSpace(unix.SizeofUcred)

// Conn is a NETLINK_KOBJECT_UEVENT socket bound to the kernel's uevent group.
// Read must be called by one goroutine at a time; Close, ReceiveBufferBytes and Behind are safe
// for concurrent use, also with Read.
type Conn struct {
	f        *os.File        // the socket, registered with the runtime's netpoller
	rc       syscall.RawConn // f.SyscallConn()
	buf      []byte          // reused by every Read
	oob      []byte          // control messages (the sender's credentials), reused by every Read
	rcvbuf   int             // SO_RCVBUF as reported after setup
	log      *slog.Logger
	onReject func(string)
	parse    func([]byte) (Event, error) // Parse, or ParseCompact (Options.Compact)
	closed   atomic.Bool
	skipped  uint64 // kernel-numbered datagrams dropped since the last event returned (Read's)
	// woken: a cancelled Read left the deadline in the past that woke it; the next receive
	// clears it first. The reader's goroutine alone uses it.
	woken bool

	// emptyAt is the last moment (unix nanoseconds) the receive queue was known to be empty:
	// a receive found nothing (EAGAIN), or the datagram it got woke it from such a wait.
	// waiting is true from such an empty receive until the next datagram. Behind reads them.
	emptyAt atomic.Int64
	waiting atomic.Bool
}

// Listen opens a netlink socket for kernel uevents and joins multicast group 1.
// It does not block. See Options for the receive buffer. Errors name the failed
// operation.
func Listen(opts Options) (*Conn, error) {
	if opts.ReceiveBufferBytes < 0 {
		return nil, fmt.Errorf("udev: listen: negative receive buffer size %d", opts.ReceiveBufferBytes)
	}
	if opts.ReceiveBufferBytes > math.MaxInt32 {
		// The socket option is a C int: a larger size would reach the kernel cut to 32 bits.
		return nil, fmt.Errorf("udev: listen: receive buffer size %d: at most %d", opts.ReceiveBufferBytes, math.MaxInt32)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("udev: socket(AF_NETLINK, NETLINK_KOBJECT_UEVENT): %w", err)
	}
	fail := func(op string, err error) (*Conn, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("udev: %s: %w", op, err)
	}

	method := "kernel default"
	var forceErr error
	if n := opts.ReceiveBufferBytes; n > 0 {
		method = "SO_RCVBUFFORCE"
		if forceErr = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n); forceErr != nil {
			// Without CAP_NET_ADMIN: SO_RCVBUF, capped by net.core.rmem_max.
			method = "SO_RCVBUF"
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n); err != nil {
				return fail(fmt.Sprintf("setsockopt SO_RCVBUF %d", n), err)
			}
		}
	}
	// The sender's credentials come with every datagram: the kernel's own uevents carry pid 0,
	// while one that a process with CAP_SYS_ADMIN sent to the kernel (Linux 4.18 and later) is
	// re-broadcast from port id 0 too, but with that process's pid.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return fail("setsockopt SO_PASSCRED", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: kernelGroup}); err != nil {
		return fail("bind netlink group 1", err)
	}
	rcvbuf, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		return fail("getsockopt SO_RCVBUF", err)
	}

	// A non-blocking fd makes os.NewFile register it with the netpoller, which is what
	// lets deadlines and Close interrupt a pending read.
	f := os.NewFile(uintptr(fd), "netlink-uevent")
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("udev: register socket with the netpoller: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("udev: syscall conn: %w", err)
	}

	attrs := []any{
		slog.Int("requested_bytes", opts.ReceiveBufferBytes),
		slog.String("method", method),
		slog.Int("rcvbuf_bytes", rcvbuf),
	}
	if forceErr != nil {
		attrs = append(attrs, slog.String("rcvbufforce_error", forceErr.Error()))
	}
	log.Info("udev: listening for kernel uevents", attrs...)

	c := &Conn{
		f:        f,
		rc:       rc,
		buf:      make([]byte, recvBufferSize),
		oob:      make([]byte, credsSpace),
		rcvbuf:   rcvbuf,
		log:      log,
		onReject: opts.OnReject,
		parse:    Parse,
	}
	if opts.Compact {
		c.parse = ParseCompact
	}
	c.emptyAt.Store(time.Now().UnixNano())
	c.waiting.Store(true) // a new socket's queue is empty
	return c, nil
}

// Behind returns how long the receive queue has held datagrams without a Read finding it
// empty: 0 while the reader waits for the next uevent, and a growing duration while uevents
// arrive faster than the reader takes them (or the reader is stuck). It does not block and is
// safe for concurrent use.
func (c *Conn) Behind(now time.Time) time.Duration {
	if c.waiting.Load() {
		return 0
	}
	return max(0, now.Sub(time.Unix(0, c.emptyAt.Load())))
}

// ReceiveBufferBytes returns the receive buffer size the kernel reported (SO_RCVBUF)
// after setup: twice what was set, or the kernel's minimum or maximum. It does not
// block and is safe for concurrent use.
func (c *Conn) ReceiveBufferBytes() int { return c.rcvbuf }

// Close closes the socket and makes a pending Read return at once with an error
// wrapping net.ErrClosed. It is idempotent and safe for concurrent use.
func (c *Conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := c.f.Close(); err != nil {
		return fmt.Errorf("udev: close: %w", err)
	}
	return nil
}

// Read blocks until a uevent sent by the kernel arrives and returns it, with ReadAt
// set to the time recvmsg returned.
//
// Datagrams not sent by the kernel, truncated or malformed are dropped (calling
// Options.OnReject) and Read keeps waiting. When the receive queue has overflowed,
// Read discards the datagrams still queued (the caller must rescan anyway, and an
// emptied queue is what makes the kernel report the next overflow too) and returns
// ErrOverflow. Read returns ctx.Err() once ctx is done, and an error wrapping
// net.ErrClosed after Close. Any other error is returned wrapped; the Conn stays
// usable after every error but the one for Close.
//
// Read is not safe for concurrent use: there must be one reader.
func (c *Conn) Read(ctx context.Context) (Event, error) {
	if err := ctx.Err(); err != nil {
		return Event{}, err
	}
	// Clear any deadline left by an earlier cancelled Read.
	if err := c.f.SetReadDeadline(time.Time{}); err != nil {
		return Event{}, c.wrap("set read deadline", err)
	}
	c.woken = false
	if ctx.Done() != nil {
		done := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			defer close(done)
			// A deadline in the past wakes the pending read. The only possible error
			// is that the Conn is closed, and then Read returns anyway.
			_ = c.f.SetReadDeadline(time.Unix(0, 1))
		})
		defer func() {
			// If the callback has started, let it finish, so that its deadline is
			// set before the next Read clears it rather than after.
			if !stop() {
				<-done
				c.woken = true
			}
		}()
	}

	ev, _, err := c.next(true)
	switch {
	case err == nil:
	case c.closed.Load():
		return Event{}, fmt.Errorf("udev: read: %w", net.ErrClosed)
	case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
		return Event{}, ctx.Err()
	}
	return ev, err
}

// ReadQueued returns the next uevent already in the socket's receive queue, without waiting:
// ok is false when the queue holds none, or when it dropped maxQueuedDrops datagrams in a row
// (the rest stay queued for the next call), so that a sender flooding the group cannot hold back
// the uevents the caller has read already. It is Read for a caller that drains the queue after a
// Read, to handle what came in a burst together; it drops and reports datagrams as Read does,
// and returns ErrOverflow as Read does. It is not safe for concurrent use with Read.
func (c *Conn) ReadQueued() (ev Event, ok bool, err error) {
	// Clear the deadline left by an earlier cancelled Read (its context may end just as it
	// returns an event): the netpoller would fail this receive with it before trying.
	if c.woken {
		if err := c.f.SetReadDeadline(time.Time{}); err != nil {
			return Event{}, false, c.wrap("set read deadline", err)
		}
		c.woken = false
	}
	if ev, ok, err = c.next(false); err != nil && c.closed.Load() {
		err = fmt.Errorf("udev: read: %w", net.ErrClosed)
	}
	return ev, ok, err
}

// maxQueuedDrops is how many datagrams ReadQueued drops at most before it returns ok=false.
const maxQueuedDrops = 64

// next returns the next uevent sent by the kernel, waiting for one when wait is set; without
// wait, ok=false says that the queue held none, or that maxQueuedDrops were dropped.
func (c *Conn) next(wait bool) (Event, bool, error) {
	for drops := 0; ; drops++ {
		if !wait && drops == maxQueuedDrops {
			return Event{}, false, nil
		}
		n, oobn, flags, from, at, err := c.recv(wait)
		if err != nil {
			switch {
			case !wait && err == unix.EAGAIN:
				return Event{}, false, nil
			case errors.Is(err, unix.ENOBUFS):
				c.drain()
				c.skipped = 0 // the caller rescans
				return Event{}, false, ErrOverflow
			}
			return Event{}, false, c.wrap("recvmsg", err)
		}
		ev, reason, perr := accept(c.parse, c.buf, n, flags, from, c.oob[:oobn])
		if reason != "" {
			if sa, ok := from.(*unix.SockaddrNetlink); ok && sa.Pid == 0 {
				// The kernel broadcast it, and numbered it: its SEQNUM is not a lost uevent.
				c.skipped++
			}
			c.reject(reason, n, from, perr)
			continue
		}
		ev.ReadAt = at
		ev.Skipped, c.skipped = c.skipped, 0
		return ev, true, nil
	}
}

// recv receives one datagram into c.buf, its control messages into c.oob, waiting for one when
// wait is set; without wait, an empty queue is the error EAGAIN.
func (c *Conn) recv(wait bool) (n, oobn, flags int, from unix.Sockaddr, at time.Time, err error) {
	var opErr error
	err = c.rc.Read(func(fd uintptr) bool {
		for {
			n, oobn, flags, from, opErr = unix.Recvmsg(int(fd), c.buf, c.oob, 0)
			if opErr != unix.EINTR {
				break
			}
		}
		if opErr == unix.EAGAIN {
			if !c.waiting.Load() {
				c.emptyAt.Store(time.Now().UnixNano())
				c.waiting.Store(true)
			}
			return !wait // wait for the netpoller, or return EAGAIN
		}
		at = time.Now()
		if c.waiting.Load() {
			// The queue was empty until this datagram arrived.
			c.emptyAt.Store(at.UnixNano())
			c.waiting.Store(false)
		}
		return true
	})
	if err == nil {
		err = opErr
	}
	return n, oobn, flags, from, at, err
}

// drain discards the datagrams queued on the socket, without waiting. The kernel
// reports ENOBUFS only once per congestion: losses that happen afterwards while the
// queue is still not empty go unreported. Emptying the queue ends the congestion, so
// that the next loss is reported again.
func (c *Conn) drain() {
	// Bound the loop in case datagrams arrive as fast as they are read: a queue of
	// rcvbuf bytes holds fewer than rcvbuf/256 datagrams (each costs more than 256
	// bytes of socket memory).
	limit := c.rcvbuf/256 + 16
	discarded := 0
	_ = c.rc.Control(func(fd uintptr) {
		for range limit {
			_, _, err := unix.Recvfrom(int(fd), c.buf, unix.MSG_DONTWAIT)
			switch err {
			case nil:
				discarded++
			case unix.EINTR, unix.ENOBUFS: // ENOBUFS: more losses, covered by the same rescan
			default: // EAGAIN: the queue is empty
				return
			}
		}
	})
	c.log.Debug("udev: discarded queued datagrams after overflow", slog.Int("discarded", discarded))
}

// reject logs a dropped datagram and reports it to OnReject.
func (c *Conn) reject(reason string, n int, from unix.Sockaddr, perr error) {
	attrs := []any{slog.String("reason", reason), slog.Int("bytes", n)}
	if sa, ok := from.(*unix.SockaddrNetlink); ok {
		attrs = append(attrs, slog.Uint64("sender_port_id", uint64(sa.Pid)))
	}
	level := slog.LevelWarn
	switch reason {
	case rejectSender:
		// Anyone with CAP_NET_ADMIN can send to the group; do not let them flood the log.
		level = slog.LevelDebug
	case rejectMalformed:
		attrs = append(attrs, slog.String("error", perr.Error()))
	}
	c.log.Log(context.Background(), level, "udev: dropped datagram", attrs...)
	if c.onReject != nil {
		c.onReject(reason)
	}
}

// accept checks one received datagram (n bytes in buf, recvmsg flags, source address,
// control messages) and parses it with parse. It returns the event, or the reason it must be
// dropped (and, for "malformed", the parse error).
func accept(parse func([]byte) (Event, error), buf []byte, n, flags int, from unix.Sockaddr, oob []byte) (Event, string, error) {
	// Only the kernel sends from port id 0; any process with CAP_NET_ADMIN can send
	// to the group from its own port.
	if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
		return Event{}, rejectSender, nil
	}
	// A uevent that a process sent to the kernel is re-broadcast from port id 0 as well, but
	// its credentials name that process; the kernel's own carry pid 0. No credentials at all
	// (SO_PASSCRED not in force) proves nothing, so it is refused too.
	if pid, ok := senderPID(oob); !ok || pid != 0 {
		return Event{}, rejectSender, nil
	}
	if flags&unix.MSG_TRUNC != 0 || n > len(buf) {
		return Event{}, rejectTruncated, nil
	}
	ev, err := parse(buf[:n])
	if err != nil {
		return Event{}, rejectMalformed, err
	}
	return ev, "", nil
}

// senderPID returns the pid of the SCM_CREDENTIALS control message in oob, without allocating.
func senderPID(oob []byte) (int32, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if uint64(h.Len) < unix.SizeofCmsghdr || uint64(h.Len) > uint64(len(oob)) {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_CREDENTIALS && uint64(h.Len) >= uint64(unix.CmsgLen(unix.SizeofUcred)) {
			var u unix.Ucred
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&u)), unix.SizeofUcred), oob[unix.CmsgLen(0):])
			return u.Pid, true
		}
		next := unix.CmsgSpace(int(h.Len) - unix.CmsgLen(0))
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return 0, false
}

// wrap names the operation in err, and reports a closed Conn as net.ErrClosed.
func (c *Conn) wrap(op string, err error) error {
	if c.closed.Load() || errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("udev: %s: %w", op, net.ErrClosed)
	}
	return fmt.Errorf("udev: %s: %w", op, err)
}
