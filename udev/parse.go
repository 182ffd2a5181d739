package udev

import (
	"bytes"
	"strconv"
	"strings"
	"unsafe"
)

// ParseError describes why Parse rejected a datagram.
type ParseError struct {
	Offset int    // byte offset in the datagram of the offending field (its length when a key is missing)
	Reason string // what is wrong, for people
}

// Error returns "udev: malformed uevent at byte N: reason".
func (e *ParseError) Error() string {
	return "udev: malformed uevent at byte " + strconv.Itoa(e.Offset) + ": " + e.Reason
}

// Parse parses one kernel uevent datagram, `ACTION@DEVPATH\0KEY=VALUE\0...`.
//
// A field is split at its first '=', so values may contain '='; trailing newlines are
// trimmed from values; the final NUL may be missing. ACTION, DEVPATH, SUBSYSTEM and
// SEQNUM (a decimal uint64) are required, each once, and the header's action and path must
// equal the ACTION and DEVPATH keys; of other keys the first occurrence counts. Parse rejects
// udevd's re-broadcast format (a "libudev" header), empty fields, fields without '='
// and empty keys. It returns a *ParseError on bad input and never panics.
//
// The event keeps a copy of b as one string (its only allocation); b may be reused
// afterwards. Parse does not block and is safe for concurrent use.
func Parse(b []byte) (Event, error) { return parse(b, true) }

// ParseCompact is Parse for a reader that wants no field but those Event holds: it checks b
// as Parse does and returns the same Event, but keeps no copy of b's fields, so that Get and All
// find none. Its one allocation is a copy of the header (ACTION@DEVPATH), where Parse's is of the
// whole datagram: a CPU's uevent is mostly its MODALIAS, which the agent never reads. b may be
// reused afterwards. It does not block and is safe for concurrent use.
func ParseCompact(b []byte) (Event, error) { return parse(b, false) }

// parse is Parse, keeping the fields when keep is set.
func parse(b []byte, keep bool) (Event, error) {
	if len(b) == 0 {
		return Event{}, &ParseError{Offset: 0, Reason: "empty datagram"}
	}
	if bytes.HasPrefix(b, []byte("libudev")) {
		return Event{}, &ParseError{Offset: 0, Reason: `udevd re-broadcast ("libudev" header), not a kernel uevent`}
	}
	var raw string
	if keep {
		raw = string(b)
	} else {
		// b itself, read only until parse returns: what the event keeps is copied below.
		raw = unsafe.String(unsafe.SliceData(b), len(b))
	}
	header, rest, _ := strings.Cut(raw, "\x00")
	action, devpath, ok := strings.Cut(header, "@")
	if !ok || action == "" || devpath == "" {
		return Event{}, &ParseError{Offset: 0, Reason: "header is not ACTION@DEVPATH"}
	}

	var ev Event
	var haveAction, haveDevPath, haveSubsystem, haveSeq bool
	off := len(header) + 1
	for rest != "" {
		field, next, _ := strings.Cut(rest, "\x00")
		key, value, ok := strings.Cut(field, "=")
		switch {
		case field == "":
			return Event{}, &ParseError{Offset: off, Reason: "empty field"}
		case !ok:
			return Event{}, &ParseError{Offset: off, Reason: "field without '='"}
		case key == "":
			return Event{}, &ParseError{Offset: off, Reason: "empty key"}
		}
		value = trimValue(value)
		switch {
		case key == "ACTION" && haveAction, key == "DEVPATH" && haveDevPath,
			key == "SUBSYSTEM" && haveSubsystem, key == "SEQNUM" && haveSeq:
			// The kernel never sends these twice; a uevent that a process sent to the kernel
			// is re-broadcast with the kernel's SEQNUM appended after the sender's.
			return Event{}, &ParseError{Offset: off, Reason: "duplicate " + key}
		case key == "ACTION":
			if value != action {
				return Event{}, &ParseError{Offset: off, Reason: "ACTION does not match the header"}
			}
			ev.Action, haveAction = value, true
		case key == "DEVPATH":
			if value != devpath {
				return Event{}, &ParseError{Offset: off, Reason: "DEVPATH does not match the header"}
			}
			ev.DevPath, haveDevPath = value, true
		case key == "SUBSYSTEM":
			if value == "" {
				return Event{}, &ParseError{Offset: off, Reason: "empty SUBSYSTEM"}
			}
			ev.Subsystem, haveSubsystem = value, true
		case key == "SEQNUM":
			n, err := strconv.ParseUint(value, 10, 64)
			if err != nil {
				return Event{}, &ParseError{Offset: off, Reason: "SEQNUM is not a decimal uint64"}
			}
			ev.Seqnum, haveSeq = n, true
		case key == "SYNTH_UUID":
			ev.synthetic = true
		}
		off += len(field) + 1
		rest = next
	}

	switch {
	case !haveAction:
		return Event{}, &ParseError{Offset: len(b), Reason: "missing ACTION"}
	case !haveDevPath:
		return Event{}, &ParseError{Offset: len(b), Reason: "missing DEVPATH"}
	case !haveSubsystem:
		return Event{}, &ParseError{Offset: len(b), Reason: "missing SUBSYSTEM"}
	case !haveSeq:
		return Event{}, &ParseError{Offset: len(b), Reason: "missing SEQNUM"}
	}
	if keep {
		ev.raw = raw
		return ev, nil
	}
	h := strings.Clone(header) // ACTION and DEVPATH equal the header's action and path
	ev.Action, ev.DevPath = h[:len(action)], h[len(action)+1:]
	switch ev.Subsystem {
	case "cpu":
		ev.Subsystem = "cpu"
	case "memory":
		ev.Subsystem = "memory"
	default:
		ev.Subsystem = strings.Clone(ev.Subsystem)
	}
	return ev, nil
}
