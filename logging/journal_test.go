//go:build linux

package logging

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/promslog"
	"golang.org/x/sys/unix"

	"github.com/hotplug-agent/hotplug-agent/callback"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// fakeJournal is a datagram socket in a test's directory that reads entries as journald does.
type fakeJournal struct {
	path string
	conn *net.UnixConn
}

func newFakeJournal(t *testing.T) *fakeJournal {
	t.Helper()
	path := filepath.Join(t.TempDir(), "socket")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fakeJournal{path: path, conn: conn}
}

// fields are a journal entry: each field's values.
type fields map[string][]string

// next returns the next entry sent, read from the datagram or, when the datagram is empty and
// carries a descriptor, from that sealed memfd.
func (j *fakeJournal) next(t *testing.T) fields {
	t.Helper()
	e, err := j.read()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// read is next for goroutines other than the test's: it returns what is wrong.
func (j *fakeJournal) read() (fields, error) {
	j.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf, oob := make([]byte, 1<<20), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := j.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("no journal entry: %w", err)
	}
	data := buf[:n]
	if oobn > 0 {
		if n != 0 {
			return nil, fmt.Errorf("a datagram of %d bytes with a descriptor; journald wants an empty one", n)
		}
		if data, err = readPassedFD(oob[:oobn]); err != nil {
			return nil, err
		}
	}
	e, err := parseEntry(data)
	if err != nil {
		return nil, fmt.Errorf("entry %q: %w", data, err)
	}
	return e, nil
}

// readPassedFD reads the memfd passed in oob, checking that it is sealed as journald requires.
func readPassedFD(oob []byte) ([]byte, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("control messages %v: %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("rights %v: %v", fds, err)
	}
	f := os.NewFile(uintptr(fds[0]), "passed")
	defer f.Close()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL; err != nil || seals&want != want {
		return nil, fmt.Errorf("seals %#x, %v; want %#x", seals, err, want)
	}
	// From the start, whatever the descriptor's offset, as journald reads it (mmap).
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.NewSectionReader(f, 0, fi.Size()))
}

// parseEntry parses the native protocol: NAME=value lines, and NAME, a 64-bit little-endian
// length, the value and a newline for binary-safe values.
func parseEntry(b []byte) (fields, error) {
	e := fields{}
	for len(b) > 0 {
		i := bytes.IndexAny(b, "=\n")
		if i <= 0 {
			return nil, fmt.Errorf("no field name in %q", b)
		}
		name := string(b[:i])
		for _, c := range name {
			if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') || name[0] == '_' {
				return nil, fmt.Errorf("field name %q: journald drops it", name)
			}
		}
		if b[i] == '=' {
			end := bytes.IndexByte(b[i+1:], '\n')
			if end < 0 {
				return nil, fmt.Errorf("%s: no newline", name)
			}
			e[name] = append(e[name], string(b[i+1:i+1+end]))
			b = b[i+1+end+1:]
			continue
		}
		b = b[i+1:]
		if len(b) < 8 {
			return nil, fmt.Errorf("%s: no length", name)
		}
		n := binary.LittleEndian.Uint64(b)
		b = b[8:]
		if uint64(len(b)) < n+1 || b[n] != '\n' {
			return nil, fmt.Errorf("%s: %d bytes and a newline do not follow", name, n)
		}
		e[name] = append(e[name], string(b[:n]))
		b = b[n+1:]
	}
	return e, nil
}

// newJournalLogger returns a logger at level that sends to j.
func newJournalLogger(t *testing.T, j *fakeJournal, level slog.Level, fallback slog.Handler) *slog.Logger {
	t.Helper()
	h, err := NewJournalHandler(JournalOptions{Socket: j.path, Identifier: "hotplug-agent", Level: level, Fallback: fallback})
	if err != nil {
		t.Fatal(err)
	}
	return slog.New(h)
}

// TestJournalEntries checks every field of the entries that records become.
func TestJournalEntries(t *testing.T) {
	j := newFakeJournal(t)
	log := newJournalLogger(t, j, slog.LevelDebug, nil)
	at := time.Date(2026, 11, 21, 23, 40, 1, 123456789, time.UTC)
	for _, tt := range []struct {
		name string
		log  func()
		want fields // besides SYSLOG_IDENTIFIER and the CODE_ fields
	}{
		{"debug", func() { log.Debug("uevent", "seqnum", 817) },
			fields{"PRIORITY": {"7"}, "MESSAGE": {"uevent seqnum=817"}, "HOTPLUG_SEQNUM": {"817"}}},
		{"info", func() { log.Info("agent ready", "listen", "127.0.0.1:19100") },
			fields{"PRIORITY": {"6"}, "MESSAGE": {"agent ready listen=127.0.0.1:19100"}, "HOTPLUG_LISTEN": {"127.0.0.1:19100"}}},
		{"between info and warn", func() { log.Log(context.Background(), slog.LevelInfo+2, "notice") },
			fields{"PRIORITY": {"6"}, "MESSAGE": {"notice"}}},
		{"warn", func() { log.Warn("state file unusable", "err", errors.New("truncated")) },
			fields{"PRIORITY": {"4"}, "MESSAGE": {"state file unusable err=truncated"}, "HOTPLUG_ERR": {"truncated"}}},
		{"error", func() { log.Error("online failed", "cpu", 3, "attempts", 4) },
			fields{"PRIORITY": {"3"}, "MESSAGE": {"online failed cpu=3 attempts=4"}, "HOTPLUG_CPU": {"3"}, "HOTPLUG_ATTEMPTS": {"4"}}},
		{"above error", func() { log.Log(context.Background(), slog.LevelError+4, "fatal") },
			fields{"PRIORITY": {"3"}, "MESSAGE": {"fatal"}}},
		{"value kinds", func() {
			log.Info("kinds", "ok", true, "ratio", 0.5, "wait", 2*time.Minute, "at", at, "n", uint64(1)<<63, "empty", "")
		}, fields{"PRIORITY": {"6"}, "MESSAGE": {`kinds ok=true ratio=0.5 wait=2m0s at=2026-11-21T23:40:01.123456789Z n=9223372036854775808 empty=""`},
			"HOTPLUG_OK": {"true"}, "HOTPLUG_RATIO": {"0.5"}, "HOTPLUG_WAIT": {"2m0s"}, "HOTPLUG_AT": {"2026-11-21T23:40:01.123456789Z"},
			"HOTPLUG_N": {"9223372036854775808"}, "HOTPLUG_EMPTY": {""}}},
		{"groups and With", func() {
			log.With("component", "web").WithGroup("req").Info("served", "path", "/events", slog.Group("tls", "version", "1.3"), slog.Group("none"))
		}, fields{"PRIORITY": {"6"}, "MESSAGE": {"served component=web req.path=/events req.tls.version=1.3"},
			"HOTPLUG_COMPONENT": {"web"}, "HOTPLUG_REQ_PATH": {"/events"}, "HOTPLUG_REQ_TLS_VERSION": {"1.3"}}},
		{"names the journal may not take", func() { log.Info("odd keys", "a-b.c d", 1, "ünï", 2, "message", "mine", "_under", 3) },
			fields{"PRIORITY": {"6"}, "MESSAGE": {"odd keys a-b.c d=1 ünï=2 message=mine _under=3"},
				"HOTPLUG_A_B_C_D": {"1"}, "HOTPLUG__N_": {"2"}, "HOTPLUG_MESSAGE": {"mine"}, "HOTPLUG__UNDER": {"3"}}},
		{"values with newlines and quotes", func() { log.Info("exec callback output", "stdout", "line 1\nline 2\n", "q", `say "hi"`) },
			fields{"PRIORITY": {"6"}, "MESSAGE": {`exec callback output stdout="line 1\nline 2\n" q="say \"hi\""`},
				"HOTPLUG_STDOUT": {"line 1\nline 2\n"}, "HOTPLUG_Q": {`say "hi"`}}},
		{"a message with a newline", func() { log.Info("two\nlines") },
			fields{"PRIORITY": {"6"}, "MESSAGE": {"two\nlines"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.log()
			got := j.next(t)
			if file := got["CODE_FILE"]; len(file) != 1 || filepath.Base(file[0]) != "journal_test.go" {
				t.Errorf("CODE_FILE %q; want this file", file)
			}
			if line := got["CODE_LINE"]; len(line) != 1 || line[0] == "" || line[0] == "0" {
				t.Errorf("CODE_LINE %q", line)
			}
			if fn := got["CODE_FUNC"]; len(fn) != 1 || !strings.Contains(fn[0], "TestJournalEntries") {
				t.Errorf("CODE_FUNC %q; want this test's function", fn)
			}
			delete(got, "CODE_FILE")
			delete(got, "CODE_LINE")
			delete(got, "CODE_FUNC")
			tt.want["SYSLOG_IDENTIFIER"] = []string{"hotplug-agent"}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

// TestJournalLevel checks that records below the level are not sent.
func TestJournalLevel(t *testing.T) {
	j := newFakeJournal(t)
	log := newJournalLogger(t, j, slog.LevelInfo, nil)
	log.Debug("hidden")
	log.Info("shown")
	if got := j.next(t)["MESSAGE"]; len(got) != 1 || got[0] != "shown" {
		t.Errorf("MESSAGE %q; want the info record only", got)
	}
}

// TestJournalNotificationFieldsAreExecEnvironment sends notifications through the log callback
// and checks that their journal fields are the exec callback's environment: same names, same
// values. The one variable the log line lacks is a memory block's HOTPLUG_MEMORY_DEVICE.
func TestJournalNotificationFieldsAreExecEnvironment(t *testing.T) {
	j := newFakeJournal(t)
	log := newJournalLogger(t, j, slog.LevelInfo, nil)
	readAt := time.Now()
	for _, tt := range []struct {
		name       string
		n          notify.Notification
		notLogged  []string // variables of the environment the log line does not carry
		wantFields fields   // when set, the HOTPLUG_ fields exactly
	}{
		{"processor", notify.NewNotification(notify.GUIDDeviceInterfaceArrival, notify.Interface{
			ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: "/sys/devices/system/cpu/cpu1", Number: 1, Node: 0, State: "online",
		}, 817, readAt, notify.CauseUevent), nil, fields{
			"HOTPLUG_EVENT":                {"arrival"},
			"HOTPLUG_EVENT_GUID":           {"cb3a4004-46f0-11d0-b08f-00609713053f"},
			"HOTPLUG_ID":                   {"0"},
			"HOTPLUG_INTERFACE_CLASS":      {"processor"},
			"HOTPLUG_INTERFACE_CLASS_GUID": {"97fadb10-4e33-40ae-359c-8bef029dbdd0"},
			"HOTPLUG_SYMBOLIC_LINK":        {"/sys/devices/system/cpu/cpu1"},
			"HOTPLUG_SEQNUM":               {"817"},
			"HOTPLUG_CAUSE":                {"uevent"},
			"HOTPLUG_CPU":                  {"1"},
			"HOTPLUG_NODE":                 {"0"},
		}},
		{"memory block", notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, notify.Interface{
			ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: "/sys/devices/system/memory/memory32", Number: 32, Node: -1,
			PhysStart: 0x100000000, Size: 128 << 20, Device: "PNP0C80:00",
		}, 0, readAt, notify.CauseResync), nil, nil},
		{"memory device", notify.NewNotification(notify.GUIDDeviceInterfaceArrival, notify.Interface{
			ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: "/sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04/PNP0C80:00", Number: 32, Node: 1,
			PhysStart: 0x100000000, Size: 512 << 20, Device: "PNP0C80:00", Blocks: "32-35",
		}, 0, readAt, notify.CauseStartup), nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := callback.Log(log)(context.Background(), tt.n, nil); err != nil {
				t.Fatal(err)
			}
			got := fields{}
			for name, v := range j.next(t) {
				if strings.HasPrefix(name, FieldPrefix) {
					got[name] = v
				}
			}
			env := fields{}
			for _, kv := range callback.Env(tt.n) {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = []string{v}
			}
			for _, name := range tt.notLogged {
				delete(env, name)
			}
			if diff := cmp.Diff(env, got); diff != "" {
				t.Errorf("journal fields against the exec environment (-env +journal):\n%s", diff)
			}
			if tt.wantFields != nil {
				if diff := cmp.Diff(tt.wantFields, got); diff != "" {
					t.Errorf("journal fields (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestJournalLargeEntry sends an fields larger than a datagram may be: it must arrive whole,
// through a sealed memfd.
func TestJournalLargeEntry(t *testing.T) {
	j := newFakeJournal(t)
	log := newJournalLogger(t, j, slog.LevelInfo, nil)
	big := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB, above any unix datagram's limit
	log.Info("large", "output", big)
	got := j.next(t)
	if v := got["HOTPLUG_OUTPUT"]; len(v) != 1 || v[0] != big {
		t.Errorf("HOTPLUG_OUTPUT: %d values, the first of %d bytes; want 1 of %d", len(v), len(firstOf(v)), len(big))
	}
	if v := got["PRIORITY"]; len(v) != 1 || v[0] != "6" {
		t.Errorf("PRIORITY %q", v)
	}
}

func firstOf(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// TestJournalFallback checks that records journald does not take go to the fallback handler
// as logfmt, after one line that says why.
func TestJournalFallback(t *testing.T) {
	var out bytes.Buffer
	fallback := slog.NewTextHandler(&out, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	h, err := NewJournalHandler(JournalOptions{Socket: filepath.Join(t.TempDir(), "none"), Level: slog.LevelInfo, Fallback: fallback})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h).With("component", "web")
	log.Info("first", "n", 1)
	log.Warn("second", "n", 2)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("fallback output %q; want the reason and two records", out.String())
	}
	if !strings.HasPrefix(lines[0], `level=ERROR msg="cannot log to the journal; logging to stderr instead" err="journal: send to `) ||
		!strings.Contains(lines[0], "no such file or directory") || strings.Contains(lines[0], "component") {
		t.Errorf("reason %q", lines[0])
	}
	if want := "level=INFO msg=first component=web n=1"; lines[1] != want {
		t.Errorf("first record %q; want %q", lines[1], want)
	}
	if want := "level=WARN msg=second component=web n=2"; lines[2] != want {
		t.Errorf("second record %q; want %q", lines[2], want)
	}
}

// TestJournalConcurrent logs from many goroutines at once (run with -race): every fields
// arrives whole.
func TestJournalConcurrent(t *testing.T) {
	j := newFakeJournal(t)
	log := newJournalLogger(t, j, slog.LevelInfo, nil).With("component", "test")
	const goroutines, each = 8, 50
	got, failed := make(chan fields, goroutines*each), make(chan error, 1)
	go func() {
		defer close(got)
		for range goroutines * each {
			e, err := j.read()
			if err != nil {
				failed <- err
				return
			}
			got <- e
		}
	}()
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				log.Info("record", "g", g, "i", i)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for e := range got {
		want := fmt.Sprintf("record component=test g=%s i=%s", firstOf(e["HOTPLUG_G"]), firstOf(e["HOTPLUG_I"]))
		if firstOf(e["MESSAGE"]) != want {
			t.Errorf("MESSAGE %q; want %q", e["MESSAGE"], want)
		}
		seen[want] = true
	}
	select {
	case err := <-failed:
		t.Fatal(err)
	default:
	}
	if len(seen) != goroutines*each {
		t.Errorf("%d distinct entries; want %d", len(seen), goroutines*each)
	}
}

// TestFieldName checks the journal field names of attribute keys.
func TestFieldName(t *testing.T) {
	for _, tt := range []struct {
		groups []string
		key    string
		want   string
	}{
		{nil, "symbolic_link", "HOTPLUG_SYMBOLIC_LINK"},
		{nil, "phys_start", "HOTPLUG_MEMORY_PHYS_START"},
		{nil, "size", "HOTPLUG_MEMORY_SIZE"},
		{[]string{"buf"}, "size", "HOTPLUG_BUF_SIZE"},
		{[]string{"a.b", "c"}, "d-e", "HOTPLUG_A_B_C_D_E"},
		{nil, "", "HOTPLUG_"},
		{nil, strings.Repeat("x", 100), "HOTPLUG_" + strings.Repeat("X", 56)},
	} {
		if got := FieldName(tt.groups, tt.key); got != tt.want {
			t.Errorf("FieldName(%q, %q) = %q; want %q", tt.groups, tt.key, got, tt.want)
		}
	}
}

// TestIsJournalStream checks systemd's detection of a journal stream: JOURNAL_STREAM names the
// device and inode of the file that is stderr.
func TestIsJournalStream(t *testing.T) {
	dir := t.TempDir()
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	other, err := os.Create(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	stream := devIno(t, stderr)
	for _, tt := range []struct {
		name    string
		f       *os.File
		env     string
		want    bool
		wantErr bool
	}{
		{"the stream", stderr, stream, true, false},
		{"another file", other, stream, false, false},
		{"no variable", stderr, "", false, false},
		{"no colon", stderr, "1234", false, true},
		{"not numbers", stderr, "a:b", false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := IsJournalStream(tt.f, tt.env)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("IsJournalStream(%s, %q) = %v, %v; want %v, error %v", tt.f.Name(), tt.env, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func devIno(t *testing.T, f *os.File) string {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// TestNewChoosesFormat checks which format New chooses: the one asked for, else the journal
// when stderr is the journal's stream, else logfmt; and that each writes where it should.
func TestNewChoosesFormat(t *testing.T) {
	j := newFakeJournal(t)
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	stream := devIno(t, stderr)
	var buf bytes.Buffer
	for _, tt := range []struct {
		name   string
		format Format
		w      io.Writer
		env    string
		want   Format
	}{
		{"stderr is the journal", "", stderr, stream, Journal},
		{"logfmt asked for", Logfmt, stderr, stream, Logfmt},
		{"json asked for", JSON, stderr, stream, JSON},
		{"journal asked for", Journal, &buf, "", Journal},
		{"stderr is another file", "", stderr, "1:1", Logfmt},
		{"stderr is not a file", "", &buf, stream, Logfmt},
		{"a bad variable", "", stderr, "junk", Logfmt},
	} {
		t.Run(tt.name, func(t *testing.T) {
			level := promslog.NewLevel()
			log, got, err := New(Config{Level: level, Format: tt.format, Stderr: tt.w, JournalStream: tt.env, JournalSocket: j.path})
			if err != nil || got != tt.want {
				t.Fatalf("New = %s, %v; want %s", got, err, tt.want)
			}
			stderr.Truncate(0)
			stderr.Seek(0, 0)
			buf.Reset()
			log.Info("hello", "k", "v")
			written, _ := os.ReadFile(stderr.Name())
			written = append(written, buf.Bytes()...)
			switch got {
			case Journal:
				if e := j.next(t); firstOf(e["MESSAGE"]) != "hello k=v" || firstOf(e["HOTPLUG_K"]) != "v" {
					t.Errorf("journal fields %v", e)
				}
				if len(written) != 0 {
					t.Errorf("stderr %q; want nothing", written)
				}
			case Logfmt:
				if !bytes.Contains(written, []byte(`level=INFO source=journal_test.go:`)) || !bytes.Contains(written, []byte(`msg=hello k=v`)) {
					t.Errorf("stderr %q; want a logfmt line", written)
				}
			case JSON:
				if !bytes.Contains(written, []byte(`"msg":"hello","k":"v"`)) {
					t.Errorf("stderr %q; want a JSON line", written)
				}
			}
		})
	}
}

// TestFormatValue checks --log.format's values.
func TestFormatValue(t *testing.T) {
	var f Format
	for _, s := range []string{"logfmt", "json", "journal"} {
		if err := f.Set(s); err != nil || f.String() != s {
			t.Errorf("Set(%q): %v, %q", s, err, f.String())
		}
	}
	for _, s := range []string{"", "text", "JSON", "syslog"} {
		if err := f.Set(s); err == nil {
			t.Errorf("Set(%q) accepted", s)
		}
	}
}

// TestNewJournalFallsBack checks the agent's journal logger where journald is not: its records
// go to stderr as promslog's logfmt lines, each with the source of the call that logged.
func TestNewJournalFallsBack(t *testing.T) {
	var out bytes.Buffer
	log, _, err := New(Config{Format: Journal, Stderr: &out, JournalSocket: filepath.Join(t.TempDir(), "none")})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("agent ready", "listen", ":19100")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("stderr %q; want the reason and the record", out.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, " source=journal_test.go:") {
			t.Errorf("line %q has not the source of the call that logged", l)
		}
	}
	if !strings.Contains(lines[0], `level=ERROR source=journal_test.go:`) || !strings.Contains(lines[0], `msg="cannot log to the journal; logging to stderr instead"`) {
		t.Errorf("reason %q", lines[0])
	}
	if !strings.Contains(lines[1], `level=INFO`) || !strings.Contains(lines[1], `msg="agent ready" listen=:19100`) {
		t.Errorf("record %q", lines[1])
	}
}
