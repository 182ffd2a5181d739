//go:build unix

package statefile

import (
	"io/fs"
	"os"
	"syscall"
)

// openFlags are added to O_RDONLY to open a state file for reading: a symbolic link put there
// after the Lstat is not followed, a FIFO put there does not block the open (with no writer,
// it would block for ever), and a terminal does not become the controlling one. O_CLOEXEC is
// os.OpenFile's own.
const openFlags = syscall.O_NOFOLLOW | syscall.O_NONBLOCK | syscall.O_NOCTTY

// dirFlags open the directory to sync it: if it was replaced by something else after its
// check, the open fails instead of opening (and perhaps blocking on) that.
const dirFlags = syscall.O_DIRECTORY | syscall.O_NONBLOCK

// owner returns the uid that owns the file fi describes.
func owner(fi fs.FileInfo) (uid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// openFile opens the state file at path for reading with openFlags.
func openFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|openFlags, 0)
}
