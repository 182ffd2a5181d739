package udev

import (
	"errors"
	"log/slog"
)

// ErrOverflow is returned by Read when the socket's receive queue overflowed (ENOBUFS):
// events were lost and the caller must rescan. The Conn remains usable.
var ErrOverflow = errors.New("udev: netlink receive queue overflowed (ENOBUFS); events were lost")

// Options configures Listen. The zero value is valid.
type Options struct {
	// ReceiveBufferBytes is the receive buffer to ask for. 0 leaves the kernel default
	// (net.core.rmem_default). Otherwise Listen uses SO_RCVBUFFORCE (needs
	// CAP_NET_ADMIN), falling back to SO_RCVBUF (capped by net.core.rmem_max), and logs
	// at Info what the kernel reports; the kernel doubles the value for its bookkeeping. At most
	// math.MaxInt32: the socket option is a C int.
	ReceiveBufferBytes int

	// Logger receives the socket setup at Info and dropped datagrams at Debug/Warn.
	// nil discards.
	Logger *slog.Logger

	// OnReject, if not nil, is called on the reading goroutine for each datagram that
	// Read drops, with reason "sender" (not sent by the kernel), "malformed" (Parse
	// failed) or "truncated" (larger than the receive buffer).
	OnReject func(reason string)

	// Compact makes Read and ReadQueued parse with ParseCompact: their events hold their
	// Action, DevPath, Subsystem, Seqnum and Synthetic, and no other field (Event.Get and
	// Event.All find none), which spares a copy of each datagram.
	Compact bool
}

// Reasons passed to Options.OnReject.
const (
	rejectSender    = "sender"
	rejectMalformed = "malformed"
	rejectTruncated = "truncated"
)
