package logging

import (
	"context"
	"encoding/binary"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// DefaultJournalSocket is systemd-journald's native socket.
const DefaultJournalSocket = "/run/systemd/journal/socket"

// JournalOptions configure a JournalHandler.
type JournalOptions struct {
	// Socket is journald's native socket; empty means DefaultJournalSocket.
	Socket string
	// Identifier is each entry's SYSLOG_IDENTIFIER; empty sends none.
	Identifier string
	// Level is the least level sent; nil means info.
	Level slog.Leveler
	// Fallback receives a record journald did not take (its socket is missing, refuses it, or
	// the entry cannot be passed); nil drops it. The first such record is preceded by one
	// record saying why.
	Fallback slog.Handler
}

// JournalHandler is an slog.Handler that sends each record to systemd-journald as one entry,
// over its native protocol (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/):
//
//   - PRIORITY from the level: debug 7, info 6, warn 4, error 3 (levels between take the
//     priority of the level below them);
//   - MESSAGE: the message, then the attributes as logfmt (key=value, groups joined with "."),
//     so that journalctl's default output reads as the agent's logfmt lines do;
//   - SYSLOG_IDENTIFIER, and CODE_FILE, CODE_LINE and CODE_FUNC of the call that logged;
//   - each attribute as a field of its own (see FieldName): `journalctl -o json` and matches
//     like `journalctl HOTPLUG_CPU=3` see them.
//
// Values with a newline are sent in the protocol's binary-safe form; an entry too large for a
// datagram is passed in a sealed memfd, as sd_journal_send does. It is safe for concurrent use;
// Handle blocks while journald's socket queue is full, as a write to a stderr that journald
// reads would.
type JournalHandler struct {
	c        *journalConn
	level    slog.Leveler
	ident    string
	fallback slog.Handler
	groups   []string
	fields   []byte // fields of the attributes added by WithAttrs, encoded
	text     []byte // the same attributes as logfmt, each with a leading space
}

// journalConn is the socket, shared by a handler and those derived from it.
type journalConn struct {
	s        *socketSender
	fallback slog.Handler // the handler's own, without the attributes of WithAttrs
	failed   atomic.Bool  // a record went to the fallback: said once
}

// NewJournalHandler returns a handler that sends to the journal at opts.Socket. It does not
// connect: journald need not run yet, and a record it cannot take goes to opts.Fallback.
func NewJournalHandler(opts JournalOptions) (*JournalHandler, error) {
	path := opts.Socket
	if path == "" {
		path = DefaultJournalSocket
	}
	s, err := newSocketSender(path)
	if err != nil {
		return nil, err
	}
	level := opts.Level
	if level == nil {
		level = slog.LevelInfo
	}
	c := &journalConn{s: s, fallback: opts.Fallback}
	return &JournalHandler{c: c, level: level, ident: opts.Identifier, fallback: opts.Fallback}, nil
}

// Enabled reports whether records of level l are sent.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// WithAttrs returns a handler that adds attrs to every entry.
func (h *JournalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	h2 := *h
	h2.fields, h2.text = slices.Clip(h.fields), slices.Clip(h.text)
	for _, a := range attrs {
		h2.fields, h2.text = appendAttr(h2.fields, h2.text, h.groups, a)
	}
	if h.fallback != nil {
		h2.fallback = h.fallback.WithAttrs(attrs)
	}
	return &h2
}

// WithGroup returns a handler that puts the attributes that follow in group name.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.groups = append(slices.Clip(h.groups), name)
	if h.fallback != nil {
		h2.fallback = h.fallback.WithGroup(name)
	}
	return &h2
}

var entryPool = sync.Pool{New: func() any { return new(entry) }}

// entry is the encoding of one record: its fields, and its MESSAGE being built.
type entry struct{ fields, text []byte }

// Handle sends r to journald as one entry, or to the fallback handler when journald does not
// take it.
func (h *JournalHandler) Handle(ctx context.Context, r slog.Record) error {
	e := entryPool.Get().(*entry)
	defer func() {
		if cap(e.fields) <= 64<<10 { // keep no huge buffer alive
			e.fields, e.text = e.fields[:0], e.text[:0]
			entryPool.Put(e)
		}
	}()
	b := appendField(e.fields, "PRIORITY", strconv.Itoa(Priority(r.Level)))
	if h.ident != "" {
		b = appendField(b, "SYSLOG_IDENTIFIER", h.ident)
	}
	if r.PC != 0 {
		frame, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		if frame.File != "" {
			b = appendField(b, "CODE_FILE", frame.File)
			b = appendField(b, "CODE_LINE", strconv.Itoa(frame.Line))
		}
		if frame.Function != "" {
			b = appendField(b, "CODE_FUNC", frame.Function)
		}
	}
	b = append(b, h.fields...)
	text := append(append(e.text, r.Message...), h.text...)
	r.Attrs(func(a slog.Attr) bool {
		b, text = appendAttr(b, text, h.groups, a)
		return true
	})
	b = appendField(b, "MESSAGE", string(text))
	e.fields, e.text = b, text

	err := h.c.s.send(b)
	if err == nil || h.fallback == nil {
		return err
	}
	if !h.c.failed.Swap(true) {
		note := slog.NewRecord(time.Now(), slog.LevelError, "cannot log to the journal; logging to stderr instead", r.PC)
		note.AddAttrs(slog.Any("err", err))
		h.c.fallback.Handle(ctx, note)
	}
	return h.fallback.Handle(ctx, r)
}

// Priority returns the syslog priority of level l: debug 7, info 6, warn 4, error 3. A level
// between two of those takes the priority of the one below it.
func Priority(l slog.Level) int {
	switch {
	case l < slog.LevelInfo:
		return 7 // LOG_DEBUG
	case l < slog.LevelWarn:
		return 6 // LOG_INFO
	case l < slog.LevelError:
		return 4 // LOG_WARNING
	}
	return 3 // LOG_ERR
}

// FieldPrefix begins the journal field of every attribute: it keeps them apart from the
// journal's own fields (MESSAGE, PRIORITY, CODE_FILE, ...) whatever their names, and makes
// the notification's fields those of an exec callback's environment (HOTPLUG_EVENT,
// HOTPLUG_SYMBOLIC_LINK, ...).
const FieldPrefix = "HOTPLUG_"

// renamed maps attribute keys, at the top level, whose journal field is not simply the key in
// capitals: the log callback's memory attributes, whose exec environment variables say
// MEMORY_ (HOTPLUG_MEMORY_PHYS_START, HOTPLUG_MEMORY_SIZE).
var renamed = map[string]string{
	"phys_start": "MEMORY_PHYS_START",
	"size":       "MEMORY_SIZE",
}

// maxFieldName is the longest field name journald accepts.
const maxFieldName = 64

// FieldName returns the journal field of the attribute key inside groups: FieldPrefix, then
// the groups and the key joined with "_", in capitals, every character but A-Z, 0-9 and "_"
// replaced with "_", cut to the 64 bytes journald accepts. The log callback's attributes
// become the names of the exec environment: symbolic_link is HOTPLUG_SYMBOLIC_LINK, and
// phys_start and size are HOTPLUG_MEMORY_PHYS_START and HOTPLUG_MEMORY_SIZE.
func FieldName(groups []string, key string) string {
	var b strings.Builder
	b.WriteString(FieldPrefix)
	if r, ok := renamed[key]; ok && len(groups) == 0 {
		b.WriteString(r)
		return b.String()
	}
	for _, part := range append(slices.Clip(groups), key) {
		if b.Len() > len(FieldPrefix) {
			b.WriteByte('_')
		}
		for _, c := range part {
			switch {
			case 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_':
			case 'a' <= c && c <= 'z':
				c -= 'a' - 'A'
			default:
				c = '_'
			}
			b.WriteRune(c)
		}
	}
	s := b.String()
	if len(s) > maxFieldName {
		s = s[:maxFieldName]
	}
	return s
}

// appendAttr appends a's fields to b and its logfmt to text.
func appendAttr(b, text []byte, groups []string, a slog.Attr) ([]byte, []byte) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return b, text
	}
	if a.Value.Kind() == slog.KindGroup {
		attrs := a.Value.Group()
		if len(attrs) == 0 {
			return b, text
		}
		if a.Key != "" {
			groups = append(slices.Clip(groups), a.Key)
		}
		for _, ga := range attrs {
			b, text = appendAttr(b, text, groups, ga)
		}
		return b, text
	}
	v := valueString(a.Value)
	b = appendField(b, FieldName(groups, a.Key), v)
	text = append(text, ' ')
	for _, g := range groups {
		text = append(append(text, g...), '.')
	}
	text = append(append(text, a.Key...), '=')
	if needsQuoting(v) {
		return b, strconv.AppendQuote(text, v)
	}
	return b, append(text, v...)
}

// valueString is v as the journal field's value.
func valueString(v slog.Value) string {
	switch v.Kind() {
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return err.Error()
		}
	}
	return v.String()
}

// needsQuoting reports whether s must be quoted in logfmt, as slog's text handler decides it:
// when it is empty or has a space, "=", a quote, or a byte that is not printable UTF-8.
func needsQuoting(s string) bool {
	if s == "" {
		return true
	}
	for _, r := range s {
		if r == ' ' || r == '=' || r == '"' || r == utf8.RuneError || r < 0x21 || r == 0x7f {
			return true
		}
	}
	return false
}

// appendField appends the field name=value to b in the native protocol: "NAME=value\n", or,
// when the value has a newline, "NAME\n", its length as a 64-bit little-endian integer, the
// value and "\n".
func appendField(b []byte, name, value string) []byte {
	if !strings.Contains(value, "\n") {
		b = append(append(append(b, name...), '='), value...)
		return append(b, '\n')
	}
	b = append(append(b, name...), '\n')
	b = binary.LittleEndian.AppendUint64(b, uint64(len(value)))
	return append(append(b, value...), '\n')
}
