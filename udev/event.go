// Package udev receives Linux kernel uevents from the NETLINK_KOBJECT_UEVENT socket
// (multicast group 1, the kernel's own broadcast; no udevd needed) and parses them.
//
// Listen opens the socket, Conn.Read returns one event at a time and can be
// interrupted by cancelling its context or by Close. Datagrams that do not come from
// the kernel, are truncated or are malformed are dropped. A receive queue overflow is
// reported as ErrOverflow, after which the caller must rescan the state it tracks.
package udev

import (
	"iter"
	"strconv"
	"strings"
	"time"
)

// Event is one kernel uevent. It is a plain value: copies share the immutable payload
// and are safe for concurrent use.
type Event struct {
	Action    string // add, remove, change, move, online, offline, bind, unbind, ...
	DevPath   string // e.g. /devices/system/cpu/cpu1 (the DEVPATH key; equals the header's path)
	Subsystem string
	Seqnum    uint64
	ReadAt    time.Time // set by Conn.Read right after recvmsg returns; zero from Parse
	// Skipped is how many datagrams the kernel numbered that Conn.Read dropped since the event
	// before this one (each carried one SEQNUM between the two): uevents a process had the
	// kernel broadcast, or malformed ones. Zero from Parse.
	Skipped uint64

	// raw is the whole datagram as one string; keys are read from it on demand. Empty in an
	// event of ParseCompact.
	raw string
	// synthetic: Parse saw a SYNTH_UUID key (Synthetic is asked of every event).
	synthetic bool
}

// Get returns the value of key, with trailing newlines trimmed, scanning the stored
// payload. If the key occurs more than once, the first occurrence wins. An event of
// ParseCompact (or of a Conn with Options.Compact) stores none: Get finds nothing. It does not
// block and is safe for concurrent use.
func (e *Event) Get(key string) (string, bool) {
	rest := fields(e.raw)
	for rest != "" {
		var k, v string
		k, v, rest = nextField(rest)
		if k == key {
			return v, true
		}
	}
	return "", false
}

// All yields every KEY=VALUE of the event in datagram order (values trimmed as by Get),
// including ACTION, DEVPATH, SUBSYSTEM and SEQNUM; nothing for an event of ParseCompact. It
// does not block and is safe for concurrent use.
func (e *Event) All() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		rest := fields(e.raw)
		for rest != "" {
			var k, v string
			k, v, rest = nextField(rest)
			if !yield(k, v) {
				return
			}
		}
	}
}

// Synthetic reports whether the event carries SYNTH_UUID, that is whether it was
// caused by a write to a device's uevent file rather than by a change of the device.
// It does not block and is safe for concurrent use.
func (e *Event) Synthetic() bool { return e.synthetic }

// String returns a short form for logs, such as "online@/devices/system/cpu/cpu1 seq=815".
// It does not block and is safe for concurrent use.
func (e Event) String() string {
	return e.Action + "@" + e.DevPath + " seq=" + strconv.FormatUint(e.Seqnum, 10)
}

// fields returns the KEY=VALUE part of a datagram, after the header.
func fields(raw string) string {
	_, rest, _ := strings.Cut(raw, "\x00")
	return rest
}

// nextField splits the first KEY=VALUE off rest. It is only used on payloads that
// Parse accepted, so every field has a non-empty key and an '='.
func nextField(rest string) (key, value, next string) {
	field, next, _ := strings.Cut(rest, "\x00")
	key, value, _ = strings.Cut(field, "=")
	return key, trimValue(value), next
}

// trimValue removes trailing newlines: the kernel's CPU MODALIAS ends in a literal "\n".
func trimValue(v string) string {
	return strings.TrimRight(v, "\n")
}
