//go:build linux

package statefile

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// nobody is the uid the tests give files of another user.
const nobody = 65534

// needRoot ends t through testenv.Unavailable unless it runs as root, which it needs to make
// device nodes or give files to another user.
func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "needs root: %s", why)
	}
}

// within runs f and fails t if it has not returned after d: a Load or Save that blocks (on a
// FIFO with no writer) must fail the test, not hang it.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s still blocked after %v", what, d)
	}
}

// snapshot describes the file at path without following a symbolic link or opening it: its
// type, mode and owner, its device numbers, its target or its contents.
func snapshot(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return err.Error()
	}
	s := fmt.Sprintf("mode %o uid %d rdev %d:%d", st.Mode, st.Uid, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		to, _ := os.Readlink(path)
		s += " -> " + to
	case unix.S_IFREG:
		b, _ := os.ReadFile(path)
		s += fmt.Sprintf(" %d bytes sha256 %.16x", len(b), sha256.Sum256(b))
	}
	return s
}

// writeValid writes a valid state file at path with mode perm.
func writeValid(t *testing.T, path string, perm fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(valid), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // past the umask
		t.Fatal(err)
	}
}

// TestPathRefused: Load and Save refuse, within a second and in one line that names the path and
// the problem, a state file path that is not a regular file of this process's user that only it
// may write, in a directory only it (or root) may change; and Save leaves such a path as it
// was: no device replaced by a file, no FIFO waited on, no symbolic link followed or replaced.
func TestPathRefused(t *testing.T) {
	tests := []struct {
		name string
		// make creates the path in dir (a fresh temporary directory) and returns it.
		make func(t *testing.T, dir string) string
		want string
		// loadOnly: Save is not tried (the path is not the test's own).
		loadOnly bool
	}{
		{"the real /dev/null", func(*testing.T, string) string { return "/dev/null" },
			"is a character device, not a regular file", true},
		{"a null device", func(t *testing.T, dir string) string {
			needRoot(t, "it makes a device node")
			p := filepath.Join(dir, "state.json")
			if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
				t.Fatal(err)
			}
			return p
		}, "is a character device, not a regular file", false},
		{"a block device", func(t *testing.T, dir string) string {
			needRoot(t, "it makes a device node")
			p := filepath.Join(dir, "state.json")
			// loop0's numbers: nothing is opened, so whether it exists does not matter.
			if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))); err != nil {
				t.Fatal(err)
			}
			return p
		}, "is a block device, not a regular file", false},
		{"a FIFO", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.json")
			if err := unix.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, "is a FIFO (named pipe), not a regular file", false},
		{"a socket", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.json")
			l, err := net.Listen("unix", p)
			if err != nil {
				t.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			t.Cleanup(func() { l.Close() })
			return p
		}, "is a socket, not a regular file", false},
		{"a directory", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.json")
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			return p
		}, "is a directory, not a regular file", false},
		{"a symbolic link to a valid state file", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.json")
			writeValid(t, filepath.Join(dir, "elsewhere.json"), 0o600)
			if err := os.Symlink("elsewhere.json", p); err != nil {
				t.Fatal(err)
			}
			return p
		}, `is a symbolic link (to "elsewhere.json"), not a regular file`, false},
		{"a symbolic link to a FIFO", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.json")
			if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("fifo", p); err != nil {
				t.Fatal(err)
			}
			return p
		}, `is a symbolic link (to "fifo"), not a regular file`, false},
		{"a file of another user", func(t *testing.T, dir string) string {
			needRoot(t, "it gives a file to another user")
			p := filepath.Join(dir, "state.json")
			writeValid(t, p, 0o600)
			if err := os.Chown(p, nobody, nobody); err != nil {
				t.Fatal(err)
			}
			return p
		}, fmt.Sprintf("owned by uid %d, not by uid %d that this process runs as", nobody, os.Geteuid()), false},
		{"a file anyone may write", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.json")
			writeValid(t, p, 0o666)
			return p
		}, "mode 0666 lets group or others write it", false},
		{"a file its group may write", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.json")
			writeValid(t, p, 0o620)
			return p
		}, "mode 0620 lets group or others write it", false},
		{"a directory anyone may write", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "state.json")
			writeValid(t, p, 0o600)
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			return p
		}, "has mode 0777: group or others could replace the state file in it", false},
		{"a directory of another user", func(t *testing.T, dir string) string {
			needRoot(t, "it gives a directory to another user")
			p := filepath.Join(dir, "state.json")
			writeValid(t, p, 0o600)
			if err := os.Chown(dir, nobody, nobody); err != nil {
				t.Fatal(err)
			}
			return p
		}, fmt.Sprintf("belongs to uid %d, not to uid %d that this process runs as, nor to root", nobody, os.Geteuid()), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top := t.TempDir()
			dir := filepath.Join(top, "state")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := tt.make(t, dir)
			before := snapshot(t, path)
			var err error
			within(t, 2*time.Second, "Load", func() { _, err = Load(path) })
			checkRefusal(t, "Load", err, path, tt.want)
			if tt.loadOnly {
				return
			}
			if !strings.HasPrefix(path, top) {
				t.Fatalf("%s is not the test's own: Save is not tried on it", path)
			}
			within(t, 2*time.Second, "Save", func() { err = Save(path, State{Interfaces: []notify.Interface{cpu(0)}}) })
			checkRefusal(t, "Save", err, path, tt.want)
			if err != nil && !strings.Contains(err.Error(), ": directory ") && !strings.HasSuffix(err.Error(), ": not replaced") {
				t.Errorf("Save error %q does not say that the path was not replaced", err)
			}
			if after := snapshot(t, path); after != before {
				t.Errorf("a refused Save changed %s: before %s, after %s", path, before, after)
			}
			names := dirNames(t, dir)
			if slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, tempPrefix("state.json")) }) {
				t.Errorf("a refused Save left a temporary file: %q", names)
			}
		})
	}
}

// TestSideFileRefused: the side file that Write writes is held to what the file is held to. One
// that is not a regular file of this process's user that only it may write makes Load, Save and
// Write refuse, within a second and in one line that names it, and leave it as it was.
func TestSideFileRefused(t *testing.T) {
	tests := []struct {
		name string
		make func(t *testing.T, side string)
		want string
	}{
		{"a FIFO", func(t *testing.T, side string) {
			if err := unix.Mkfifo(side, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "is a FIFO (named pipe), not a regular file"},
		{"a symbolic link to a valid state file", func(t *testing.T, side string) {
			writeValid(t, filepath.Join(filepath.Dir(side), "elsewhere.json"), 0o600)
			if err := os.Symlink("elsewhere.json", side); err != nil {
				t.Fatal(err)
			}
		}, `is a symbolic link (to "elsewhere.json"), not a regular file`},
		{"a file anyone may write", func(t *testing.T, side string) { writeValid(t, side, 0o666) },
			"mode 0666 lets group or others write it"},
		{"a file of another user", func(t *testing.T, side string) {
			needRoot(t, "it gives a file to another user")
			writeValid(t, side, 0o600)
			if err := os.Chown(side, nobody, nobody); err != nil {
				t.Fatal(err)
			}
		}, fmt.Sprintf("owned by uid %d, not by uid %d that this process runs as", nobody, os.Geteuid())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if err := Save(path, State{Interfaces: []notify.Interface{cpu(0)}}); err != nil {
				t.Fatal(err)
			}
			side := sidePath(path)
			tt.make(t, side)
			before, file := snapshot(t, side), snapshot(t, path)
			var err error
			within(t, 2*time.Second, "Load", func() { _, err = Load(path) })
			checkRefusal(t, "Load", err, side, tt.want)
			for op, f := range map[string]func(string, State) error{"Save": Save, "Write": Write} {
				within(t, 2*time.Second, op, func() { err = f(path, State{Interfaces: []notify.Interface{cpu(1)}}) })
				checkRefusal(t, "Save", err, side, tt.want)
			}
			if snapshot(t, side) != before || snapshot(t, path) != file {
				t.Errorf("a refused Save or Write changed the file or its side file")
			}
		})
	}
}

// checkRefusal checks that err refuses path as want says, in one line, wrapping ErrRefused.
func checkRefusal(t *testing.T, op string, err error, path, want string) {
	t.Helper()
	prefix := "statefile: " + strings.ToLower(op) + " " + path + ": "
	switch {
	case err == nil:
		t.Errorf("%s(%s) succeeded; want an error saying %q", op, path, want)
	case !errors.Is(err, ErrRefused):
		t.Errorf("%s(%s): %q does not wrap ErrRefused", op, path, err)
	case errors.Is(err, ErrCorrupt):
		t.Errorf("%s(%s): %q wraps ErrCorrupt: the file was not read", op, path, err)
	case !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), want):
		t.Errorf("%s(%s): %q; want %q... saying %q", op, path, err, prefix, want)
	case strings.ContainsAny(err.Error(), "\n\r"):
		t.Errorf("%s(%s): %q spans lines", op, path, err)
	}
}

// TestLoadUnreadable: a state file that cannot be read gives an error that names the path and
// the reason in one line, and wraps neither ErrCorrupt (its contents were never seen, so it must
// not be replaced) nor ErrRefused nor fs.ErrNotExist.
func TestLoadUnreadable(t *testing.T) {
	tests := []struct {
		name string
		make func(t *testing.T) string
		want string
	}{
		// The process's own memory: a regular file of its user, whose read at offset 0 fails.
		{"a read that fails", func(*testing.T) string { return "/proc/self/mem" }, "input/output error"},
		{"a file of the process's own it may not read", func(t *testing.T) string {
			if os.Geteuid() == 0 {
				t.Skip("root reads a file of mode 0200")
			}
			p := filepath.Join(t.TempDir(), "state.json")
			writeValid(t, p, 0o200)
			return p
		}, "permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.make(t)
			_, err := Load(path)
			switch {
			case err == nil:
				t.Fatalf("Load(%s) succeeded; want an error saying %q", path, tt.want)
			case errors.Is(err, ErrCorrupt) || errors.Is(err, ErrRefused) || errors.Is(err, fs.ErrNotExist):
				t.Errorf("Load(%s): %q wraps ErrCorrupt, ErrRefused or fs.ErrNotExist; want none", path, err)
			case err.Error() != "statefile: load "+path+": "+tt.want:
				t.Errorf("Load(%s): %q; want %q", path, err, "statefile: load "+path+": "+tt.want)
			}
		})
	}
}

// TestPathAccepted: what looks unusual but is safe still loads and saves.
func TestPathAccepted(t *testing.T) {
	tests := []struct {
		name string
		make func(t *testing.T, top string) string
	}{
		{"a file others may read", func(t *testing.T, top string) string {
			p := filepath.Join(top, "state.json")
			writeValid(t, p, 0o644)
			return p
		}},
		{"a sticky directory anyone may write, as /tmp", func(t *testing.T, top string) string {
			dir := filepath.Join(top, "tmp")
			os.Mkdir(dir, 0o700)
			if err := os.Chmod(dir, 0o777|fs.ModeSticky); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "state.json")
			writeValid(t, p, 0o600)
			return p
		}},
		{"a symbolic link to the directory, as systemd's DynamicUser= makes", func(t *testing.T, top string) string {
			real := filepath.Join(top, "private", "agent")
			if err := os.MkdirAll(real, 0o700); err != nil {
				t.Fatal(err)
			}
			writeValid(t, filepath.Join(real, "state.json"), 0o600)
			if err := os.Symlink("private/agent", filepath.Join(top, "agent")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(top, "agent", "state.json")
		}},
		{"a directory of root", func(t *testing.T, top string) string {
			needRoot(t, "root's directory is that of the process")
			p := filepath.Join(top, "state.json")
			writeValid(t, p, 0o600)
			if err := os.Chown(top, 0, 0); err != nil {
				t.Fatal(err)
			}
			return p
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.make(t, t.TempDir())
			if _, err := Load(path); err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := State{Version: 1, Interfaces: []notify.Interface{cpu(3)}, SavedAt: savedAt}
			if err := Save(path, want); err != nil {
				t.Fatalf("Save: %v", err)
			}
			if got, err := Load(path); err != nil || !slices.Equal(got.Interfaces, want.Interfaces) {
				t.Errorf("Load after Save: %v, %v; want %v", got.Interfaces, err, want.Interfaces)
			}
		})
	}
}
