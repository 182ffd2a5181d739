//go:build linux

package agent

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/statefile"
)

// TestNewFailsCleanlyAfterRestoringState: when New fails after it restored a state file, it
// closes what it opened, as it does when it fails before.
func TestNewFailsCleanlyAfterRestoringState(t *testing.T) {
	dir := t.TempDir()
	statePath := filepath.Join(dir, "state.json")
	if err := statefile.Save(statePath, statefile.State{Clean: true}); err != nil {
		t.Fatal(err)
	}
	// A control socket path that is a regular file: New fails after the state file is read.
	control := filepath.Join(dir, "control.sock")
	if err := os.WriteFile(control, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	src := newFakeSource()
	_, err := New(Options{SysfsPath: fixture(t), StatePath: statePath, ControlSocket: control,
		ListenAddresses: []string{"127.0.0.1:0"}, Source: src})
	if err == nil {
		t.Fatal("New with a control socket path that is a regular file succeeded")
	}
	select {
	case <-src.closed:
	default:
		t.Errorf("New failed (%v) after restoring the state file, and left the uevent source open", err)
	}
}

// forged is a state file that announced a CPU the fixture does not have: believed, it makes the
// agent announce that CPU's removal at start.
const forged = `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "last_event_id": 7, "clean_shutdown": true, "interfaces": [
  {"class_guid": "97fadb10-4e33-40ae-359c-8bef029dbdd0", "symbolic_link": "/sys/devices/system/cpu/cpu63", "number": 63, "node": 0, "state": "online"}]}
`

// TestStatePathRefused: a --path.state that is not a regular file of the agent's user, only it
// may write, makes New fail at once with the state file's one-line error, before anything is
// announced, and the path is left as it was. A file of the agent's own whose contents are bad
// is, as before, reported and replaced.
func TestStatePathRefused(t *testing.T) {
	tests := []struct {
		name string
		make func(t *testing.T, path string)
		want string // "": New succeeds
	}{
		{"a FIFO", func(t *testing.T, path string) {
			if err := unix.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "is a FIFO (named pipe), not a regular file"},
		{"a null device", func(t *testing.T, path string) {
			if os.Geteuid() != 0 {
				testenv.Unavailable(t, "needs root: it makes a device node")
			}
			if err := unix.Mknod(path, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
				t.Fatal(err)
			}
		}, "is a character device, not a regular file"},
		{"a forged file of another user", func(t *testing.T, path string) {
			if os.Geteuid() != 0 {
				testenv.Unavailable(t, "needs root: it gives a file to another user")
			}
			if err := os.WriteFile(path, []byte(forged), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(path, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, fmt.Sprintf("owned by uid 65534, not by uid %d", os.Geteuid())},
		{"a forged file anyone may write", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(forged), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, 0o666); err != nil {
				t.Fatal(err)
			}
		}, "mode 0666 lets group or others write it"},
		{"a corrupt file of the agent's own", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(`{"version": 1, "interfaces": [{"class_guid": "trunc`), 0o600); err != nil {
				t.Fatal(err)
			}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			tt.make(t, path)
			var before unix.Stat_t
			unix.Lstat(path, &before)
			src := newFakeSource()
			logs := &testenv.Buffer{}
			var a *Agent
			var err error
			done := make(chan struct{})
			go func() {
				defer close(done)
				a, err = New(Options{SysfsPath: fixture(t), StatePath: path, ListenAddresses: []string{"127.0.0.1:0"}, Source: src,
					Logger: slog.New(slog.NewTextHandler(logs, nil))})
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("New still blocked after 5 s on a state file path that is %s", tt.name)
			}
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				a.close()
				if !strings.Contains(logs.String(), "state file unusable") {
					t.Errorf("a corrupt state file was not reported; log:\n%s", logs)
				}
				if _, err := statefile.Load(path); err != nil {
					t.Errorf("the corrupt state file was not replaced: %v", err)
				}
				return
			}
			switch {
			case err == nil:
				a.close()
				t.Fatalf("New succeeded; want it to fail saying %q", tt.want)
			case !errors.Is(err, statefile.ErrRefused) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want):
				t.Errorf("New: %q; want an error naming %s and saying %q", err, path, tt.want)
			case strings.ContainsAny(err.Error(), "\n\r"):
				t.Errorf("New: %q spans lines", err)
			}
			if l := logs.String(); strings.Contains(l, "cpu63") || strings.Contains(l, "state file unusable") {
				t.Errorf("the refused state file was read, or taken for one whose contents are bad; log:\n%s", l)
			}
			var after unix.Stat_t
			unix.Lstat(path, &after)
			if after.Mode != before.Mode || after.Ino != before.Ino || after.Uid != before.Uid {
				t.Errorf("New changed the refused path: mode %o inode %d uid %d, then mode %o inode %d uid %d",
					before.Mode, before.Ino, before.Uid, after.Mode, after.Ino, after.Uid)
			}
			select {
			case <-src.closed:
			default:
				t.Error("New failed and left the uevent source open")
			}
		})
	}
}

// TestStateFileUnreadable: a state file the agent cannot read makes New fail at once with the
// state file's one-line error, before anything is announced. What it holds was never seen, so it
// is neither believed nor taken for a file whose contents are bad, and it is left as it was.
func TestStateFileUnreadable(t *testing.T) {
	tests := []struct {
		name string
		make func(t *testing.T) string
		want string
	}{
		// The agent's own memory: a regular file of its user, whose read at offset 0 fails.
		{"a read that fails", func(*testing.T) string { return "/proc/self/mem" }, "input/output error"},
		{"a file of the agent's own it may not read", func(t *testing.T) string {
			if os.Geteuid() == 0 {
				t.Skip("root reads a file of mode 0200")
			}
			path := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(path, []byte(forged), 0o200); err != nil {
				t.Fatal(err)
			}
			return path
		}, "permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.make(t)
			var before unix.Stat_t
			unix.Lstat(path, &before)
			src := newFakeSource()
			logs := &testenv.Buffer{}
			a, err := New(Options{SysfsPath: fixture(t), StatePath: path, ListenAddresses: []string{"127.0.0.1:0"}, Source: src,
				Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err == nil {
				a.close()
				t.Fatalf("New succeeded with a state file it cannot read; want it to fail saying %q", tt.want)
			}
			if want := "statefile: load " + path + ": " + tt.want; err.Error() != want {
				t.Errorf("New: %q; want %q", err, want)
			}
			if l := logs.String(); strings.Contains(l, "state file unusable") || strings.Contains(l, "cpu63") {
				t.Errorf("the unreadable state file was taken for one whose contents are bad, or believed; log:\n%s", l)
			}
			var after unix.Stat_t
			unix.Lstat(path, &after)
			if after.Ino != before.Ino || after.Mode != before.Mode || after.Size != before.Size || after.Mtim != before.Mtim {
				t.Errorf("New changed the state file it could not read")
			}
			select {
			case <-src.closed:
			default:
				t.Error("New failed and left the uevent source open")
			}
		})
	}
}

// TestNextIDs: the ID the agent continues from is the saved one after a clean shutdown, beyond
// it and the clock otherwise, and never one from which counting could wrap to 0: an ID above
// statefile.MaxEventID (no state file Load accepts has one) starts numbering from the clock.
func TestNextIDs(t *testing.T) {
	const clock = ^uint64(0) // stands for "the microseconds since 1970"
	tests := []struct {
		last  uint64
		clean bool
		want  uint64
	}{
		{0, true, 0},
		{0, false, clock},
		{818, true, 818},
		{818, false, clock},
		{statefile.MaxEventID, true, statefile.MaxEventID},
		{statefile.MaxEventID, false, statefile.MaxEventID + idJump},
		{statefile.MaxEventID + 1, true, clock},
		{statefile.MaxEventID + 1, false, clock},
		{math.MaxUint64 - idJump + 1, false, clock},
		{math.MaxUint64, true, clock},
		{math.MaxUint64, false, clock},
	}
	for _, tt := range tests {
		before := uint64(time.Now().UnixMicro())
		got := nextIDs(tt.last, tt.clean)
		after := uint64(time.Now().UnixMicro())
		if tt.want == clock && (got < before || got > after) || tt.want != clock && got != tt.want {
			want := fmt.Sprint(tt.want)
			if tt.want == clock {
				want = fmt.Sprintf("the clock, %d-%d", before, after)
			}
			t.Errorf("nextIDs(%d, clean %v) = %d; want %s", tt.last, tt.clean, got, want)
		}
		if got > math.MaxUint64-(1<<62) {
			t.Errorf("nextIDs(%d, clean %v) = %d: counting on from it could wrap to 0", tt.last, tt.clean, got)
		}
	}
}

// TestEventIDsNeverWrap starts the agent from a state file whose last event ID is the uint64
// maximum, saved at a clean shutdown: believed, the next notification would get ID 0, which
// /events drops. The agent must refuse the file, say why, and number from the clock.
func TestEventIDsNeverWrap(t *testing.T) {
	root := fixture(t)
	path := filepath.Join(t.TempDir(), "state.json")
	state := `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "last_event_id": 18446744073709551615, "clean_shutdown": true, "interfaces": []}`
	if err := os.WriteFile(path, []byte(state), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.Buffer{}
	began := uint64(time.Now().UnixMicro())
	a, src, _, _ := runAgent(t, Options{SysfsPath: root, StatePath: path, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if !strings.Contains(logs.String(), "last_event_id 18446744073709551615 is above") {
		t.Errorf("the state file's last event ID was not reported; log:\n%s", logs)
	}

	resp, err := http.Get("http://" + a.Addrs()[0].String() + "/events?class=processor")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ids := make(chan uint64, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
				id, _ := strconv.ParseUint(v, 10, 64)
				ids <- id
				return
			}
		}
	}()
	writeAttr(t, root, "devices/system/cpu/cpu1/online", "0")
	src.send(t, "offline", "/devices/system/cpu/cpu1", "cpu", 1)
	select {
	case id := <-ids:
		if id < began {
			t.Errorf("the first notification's ID is %d; want one from the clock, at least %d", id, began)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no notification on /events within 10 s of cpu1 going offline (last ID given: %d)", a.Registry().LastID())
	}
}

// While the agent runs, the state file follows its changes: each burst of notifications is saved
// (a change coming after a save is saved again, however many came before it), without waiting
// for a shutdown.
func TestStateSavedWhileRunning(t *testing.T) {
	root := fixture(t)
	statePath := filepath.Join(t.TempDir(), "state.json")
	a, src, _, _ := runAgent(t, Options{SysfsPath: root, StatePath: statePath})
	seq := uint64(100)
	online := true
	// burst changes cpu1 n times, and waits until the state file holds the last notification.
	burst := func(n int) {
		t.Helper()
		for range n {
			online = !online
			state, action := "0", "offline"
			if online {
				state, action = "1", "online"
			}
			writeAttr(t, root, "devices/system/cpu/cpu1/online", state)
			seq++
			src.send(t, action, "/devices/system/cpu/cpu1", "cpu", seq)
		}
		var s statefile.State
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if s, err = statefile.Load(statePath); err == nil && s.LastEventID == a.Registry().LastID() && s.LastEventID != 0 {
				return
			}
		}
		t.Fatalf("10 s after %d changes of cpu1 the state file holds ID %d (%v); the last notification is %d",
			n, s.LastEventID, err, a.Registry().LastID())
	}
	burst(1)
	burst(1)
	burst(15)
	burst(1)
}
