// Package logging builds the agent's logger: logfmt or JSON lines on stderr, as Prometheus and
// node_exporter write them (github.com/prometheus/common/promslog), or, when stderr is systemd's
// journal, entries sent to journald over its native protocol, with a priority that matches the
// level and every attribute as a journal field (see JournalHandler).
package logging

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/common/promslog"
)

// Identifier is the SYSLOG_IDENTIFIER of the agent's journal entries.
const Identifier = "hotplug-agent"

// Format is how the agent logs: logfmt, json or journal. A *Format is the value of the
// --log.format flag (it has the Set and String methods of flag.Value and kingpin.Value); it is
// not safe for concurrent use.
type Format string

// The formats.
const (
	Logfmt  Format = "logfmt"  // logfmt lines on stderr
	JSON    Format = "json"    // JSON lines on stderr
	Journal Format = "journal" // entries sent to journald's native socket
)

// Formats lists the formats, in the order help texts give them.
var Formats = []Format{Logfmt, JSON, Journal}

// Set sets f to s, one of Formats.
func (f *Format) Set(s string) error {
	for _, v := range Formats {
		if s == string(v) {
			*f = v
			return nil
		}
	}
	return errors.New("want logfmt, json or journal")
}

// String returns f's name.
func (f *Format) String() string { return string(*f) }

// Config says how to log.
type Config struct {
	// Level is the least level logged; nil logs info and above.
	Level *promslog.Level
	// Format is the format asked for. Empty chooses: Journal when Stderr is the journal's stream
	// (JournalStream names it), else Logfmt.
	Format Format
	// Stderr receives logfmt and JSON lines, and the journal's entries while journald cannot
	// take them.
	Stderr io.Writer
	// JournalStream is the value of the JOURNAL_STREAM environment variable: the device and
	// inode of the stream that systemd connected stderr to, when it did.
	JournalStream string
	// JournalSocket is journald's native socket; empty means DefaultJournalSocket.
	JournalSocket string
}

// New returns the logger c describes and the format it chose. It fails only when the journal
// was asked for where there is none to send to (not on Linux). The logger is safe for
// concurrent use.
func New(c Config) (*slog.Logger, Format, error) {
	if c.Level == nil {
		c.Level = promslog.NewLevel()
	}
	format := c.Format
	if format == "" {
		format = Logfmt
		if f, ok := c.Stderr.(*os.File); ok {
			// A JOURNAL_STREAM that cannot be read is not the journal's: log as elsewhere.
			if yes, _ := IsJournalStream(f, c.JournalStream); yes {
				format = Journal
			}
		}
	}
	lines := func(f Format) *slog.Logger {
		pf := promslog.NewFormat()
		if err := pf.Set(string(f)); err != nil {
			panic(err) // logfmt and json are promslog's own formats
		}
		return promslog.New(&promslog.Config{Level: c.Level, Format: pf, Writer: c.Stderr})
	}
	switch format {
	case Logfmt, JSON:
		return lines(format), format, nil
	case Journal:
		h, err := NewJournalHandler(JournalOptions{
			Socket:     c.JournalSocket,
			Identifier: Identifier,
			Level:      c.Level,
			Fallback:   lines(Logfmt).Handler(),
		})
		if err != nil {
			return nil, "", err
		}
		return slog.New(h), format, nil
	}
	return nil, "", fmt.Errorf("log format %q: want logfmt, json or journal", format)
}

// IsJournalStream reports whether f is the stream systemd connected to the journal, as
// journalStream (the JOURNAL_STREAM variable systemd sets for a service whose StandardError=
// or StandardOutput= is the journal: "DEVICE:INODE", in decimal) says: f's device and inode
// must be those. This is how systemd documents that a service should detect that it may
// upgrade to the native protocol; a child that inherited the variable but not the stream, or
// whose stderr was redirected, does not match. It does not block.
func IsJournalStream(f *os.File, journalStream string) (bool, error) {
	if journalStream == "" {
		return false, nil
	}
	dev, ino, ok := strings.Cut(journalStream, ":")
	if !ok {
		return false, fmt.Errorf("JOURNAL_STREAM=%q: want DEVICE:INODE", journalStream)
	}
	return sameFile(f, dev, ino)
}
