//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/logging"
)

// TestRunLogFormat checks where `run` logs, by its flags and its stderr: to the journal when
// --log.format is not given and stderr is the journal's stream (JOURNAL_STREAM names it), or
// when --log.format=journal; as logfmt or JSON on stderr otherwise, under systemd too when
// asked for.
func TestRunLogFormat(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "journal.socket")
	journal, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close()
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	fi, err := stderr.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	stream := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	var buf bytes.Buffer

	for _, tt := range []struct {
		name   string
		args   []string
		w      io.Writer
		env    string
		want   logging.Format
		output string // in the journal entry's MESSAGE, or on stderr
	}{
		{"under systemd", nil, stderr, stream, logging.Journal, "MESSAGE=agent ready listen=:19100\n"},
		{"under systemd, at warn", []string{"--log.level=warn"}, stderr, stream, logging.Journal, "MESSAGE=not running as root\n"},
		{"under systemd, logfmt asked for", []string{"--log.format=logfmt"}, stderr, stream, logging.Logfmt, `msg="agent ready" listen=:19100`},
		{"under systemd, json asked for", []string{"--log.format=json"}, stderr, stream, logging.JSON, `"msg":"agent ready","listen":":19100"`},
		{"stderr is another file", nil, stderr, "1:2", logging.Logfmt, `msg="agent ready" listen=:19100`},
		{"no systemd", nil, stderr, "", logging.Logfmt, `msg="agent ready" listen=:19100`},
		{"journal asked for", []string{"--log.format=journal"}, &buf, "", logging.Journal, "MESSAGE=agent ready listen=:19100\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(io.Discard, io.Discard, func(code int) { t.Fatalf("kingpin ended with %d", code) })
			if _, err := c.app.Parse(append([]string{"run"}, tt.args...)); err != nil {
				t.Fatal(err)
			}
			stderr.Truncate(0)
			stderr.Seek(0, io.SeekStart)
			buf.Reset()
			log, format, err := c.run.logger(tt.w, tt.env, socket)
			if err != nil || format != tt.want {
				t.Fatalf("logger: %s, %v; want %s", format, err, tt.want)
			}
			log.Info("agent ready", "listen", ":19100")
			log.Warn("not running as root")
			written, _ := os.ReadFile(stderr.Name())
			written = append(written, buf.Bytes()...)
			if format != logging.Journal {
				if !strings.Contains(string(written), tt.output) {
					t.Errorf("stderr %q; want %q in it", written, tt.output)
				}
				return
			}
			if len(written) != 0 {
				t.Errorf("stderr %q; want nothing, the entries went to the journal", written)
			}
			// Read up to the warning, the last record.
			var entries []string
			for len(entries) == 0 || !strings.Contains(entries[len(entries)-1], "MESSAGE=not running as root\n") {
				journal.SetReadDeadline(time.Now().Add(10 * time.Second))
				b := make([]byte, 64<<10)
				n, err := journal.Read(b)
				if err != nil {
					t.Fatalf("no journal entry after %q: %v", entries, err)
				}
				entries = append(entries, string(b[:n]))
			}
			if all := strings.Join(entries, ""); !strings.Contains(entries[0], tt.output) || !strings.Contains(all, "SYSLOG_IDENTIFIER=hotplug-agent\n") {
				t.Errorf("journal entries %q; want %q in the first", entries, tt.output)
			}
		})
	}
}
