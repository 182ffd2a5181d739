package client

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxLine bounds one line of the stream, and the data of one event, whatever its number of
// lines: a reader's memory is bounded by what it holds, not by what the peer sends. The largest
// event the agent sends is a resync, which carries the whole active set on one line: 1,024 CPUs
// and 8,192 memory blocks (1 TiB in 128 MiB blocks) take 2.4 MB, so this leaves room.
const maxLine = 64 << 20

// sseEvent is one event of a Server-Sent Events stream, as the WHATWG HTML standard parses it:
// the fields of the lines up to a blank line.
type sseEvent struct {
	typ     string // the event field; "" is the default type, "message"
	data    string // the data lines joined by "\n"
	hasData bool
	id      string
	hasID   bool
}

// sseReader parses a Server-Sent Events stream. It is not safe for concurrent use.
type sseReader struct {
	sc    *bufio.Scanner
	limit int // bounds a line and an event's data
	// onLine, when set, is called for every line read, comments included (the idle timer).
	onLine func()
}

func newSSEReader(r io.Reader) *sseReader { return newSSEReaderLimit(r, maxLine) }

// newSSEReaderLimit is newSSEReader with limit in place of maxLine (the errors still name
// maxLine, which is the client's limit).
func newSSEReaderLimit(r io.Reader, limit int) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), limit)
	sc.Split(scanSSELines)
	return &sseReader{sc: sc, limit: limit}
}

// errTruncated reports a stream that ended inside an event: the partial event is discarded,
// as the standard says.
var errTruncated = errors.New("stream ended inside an event")

// errEventTooLarge reports an event whose data lines, together, exceed maxLine.
var errEventTooLarge = fmt.Errorf("an event's data exceeds %d MiB", maxLine>>20)

// errLineTooLong reports a line longer than maxLine. It wraps bufio.ErrTooLong.
var errLineTooLong = fmt.Errorf("a line exceeds %d MiB: %w", maxLine>>20, bufio.ErrTooLong)

// next returns the next event that has a data field or an id field. At the end of the stream it
// returns io.EOF (between events) or errTruncated (inside one, which is dropped), or the read
// error. A line longer than maxLine is errLineTooLong, and an event whose data would exceed it is
// errEventTooLarge, as soon as the line that goes over it is read: the stream cannot be followed
// after either.
func (r *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	var data strings.Builder
	started := false
	for r.sc.Scan() {
		if r.onLine != nil {
			r.onLine()
		}
		line := r.sc.Bytes()
		if len(line) == 0 {
			if ev.hasData || ev.hasID {
				ev.data = data.String()
				return ev, nil
			}
			ev, started = sseEvent{}, false
			data.Reset()
			continue
		}
		if line[0] == ':' {
			continue // a comment: the opening line, keep-alives
		}
		started = true
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(field) {
		case "event":
			ev.typ = string(value)
		case "data":
			// The data lines joined by "\n" (the standard's buffer without its last LF).
			grow := len(value)
			if ev.hasData {
				grow++
			}
			if data.Len()+grow > r.limit {
				return sseEvent{}, errEventTooLarge
			}
			if ev.hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			ev.hasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				ev.id, ev.hasID = string(value), true
			}
		}
		// retry and unknown fields are ignored: the client has its own backoff.
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return sseEvent{}, errLineTooLong
		}
		return sseEvent{}, err
	}
	if started {
		return sseEvent{}, errTruncated
	}
	return sseEvent{}, io.EOF
}

// scanSSELines splits lines ended by CRLF, LF or CR, as the event stream format allows. A last
// line without an end is returned too: next discards it, since no blank line follows it.
func scanSSELines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	for i, b := range data {
		switch b {
		case '\n':
			return i + 1, data[:i], nil
		case '\r':
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			if atEOF {
				return i + 1, data[:i], nil
			}
			return 0, nil, nil // a CR at the end of the buffer: is an LF next?
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
