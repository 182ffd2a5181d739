package statefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrRefused is wrapped by the errors of Load and Save that refuse the path itself, whatever
// it holds: something other than a regular file (a device, a FIFO, a socket, a directory, a
// symbolic link), a file owned by another user than the one the process runs as or writable by
// group or others, or a directory in which another user could replace the file. Such a path
// cannot be trusted, and writing over it could destroy what is there (--path.state=/dev/null
// would replace /dev/null), so it is left as it is: the operator must fix the path.
var ErrRefused = errors.New("state file path refused")

// ErrCorrupt is wrapped by the errors of Load for a file it read whose contents it does not
// accept: empty, truncated, not JSON, of another format version, too large, or holding what the
// agent cannot have written. Nothing in such a file can be used, and it may be replaced. An error
// of Load that wraps none of ErrCorrupt, ErrRefused and fs.ErrNotExist is one of opening or
// reading the file (permission denied, an I/O error, too many open files, no memory): what the
// file holds is not known, and it must not be replaced.
var ErrCorrupt = errors.New("state file contents unusable")

// corruption is an error that wraps ErrCorrupt, saying what is wrong in its own words.
type corruption struct{ err error }

func (c corruption) Error() string        { return c.err.Error() }
func (c corruption) Unwrap() error        { return c.err }
func (c corruption) Is(target error) bool { return target == ErrCorrupt }

// refusal is an error that wraps ErrRefused, saying why in its own words.
type refusal string

func (r refusal) Error() string        { return string(r) }
func (r refusal) Is(target error) bool { return target == ErrRefused }

func refusef(format string, args ...any) error { return refusal(fmt.Sprintf(format, args...)) }

// kind names what a file of mode m is, in an operator's words.
func kind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m.IsDir():
		return "a directory"
	}
	return fmt.Sprintf("a special file (%v)", m.Type())
}

// checkDir refuses dir, the directory of the state file at path, when a user other than the
// one this process runs as (or root) could replace the file in it: dir belongs to another user,
// or is writable by group or others without the sticky bit (with it, as in /tmp, others cannot
// remove or rename a file they do not own). A symbolic link to a directory is followed: systemd
// makes /var/lib/NAME one with DynamicUser=. Only dir itself is checked, not its parents.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return bare(err)
	}
	if !fi.IsDir() {
		return refusef("%s is %s, not a directory", dir, kind(fi.Mode()))
	}
	if uid, ok := owner(fi); ok && uid != os.Geteuid() && uid != 0 {
		return refusef("directory %s belongs to uid %d, not to uid %d that this process runs as, nor to root: its owner could replace the state file",
			dir, uid, os.Geteuid())
	}
	if m := fi.Mode(); m.Perm()&0o022 != 0 && m&fs.ModeSticky == 0 {
		return refusef("directory %s has mode %04o: group or others could replace the state file in it (want it writable by its owner only, or sticky)",
			dir, m.Perm())
	}
	return nil
}

// checkFile refuses the state file at path, of which fi is the Lstat or the Stat of the open
// file, when it is not a regular file, belongs to another user than the one this process runs
// as, or is writable by group or others.
func checkFile(path string, fi fs.FileInfo) error {
	m := fi.Mode()
	if m&fs.ModeSymlink != 0 {
		if to, err := os.Readlink(path); err == nil {
			return refusef("is a symbolic link (to %.200q), not a regular file", to)
		}
	}
	if !m.IsRegular() {
		return refusef("is %s, not a regular file", kind(m))
	}
	if uid, ok := owner(fi); ok && uid != os.Geteuid() {
		return refusef("owned by uid %d, not by uid %d that this process runs as", uid, os.Geteuid())
	}
	if m.Perm()&0o022 != 0 {
		return refusef("mode %04o lets group or others write it (want 0600)", m.Perm())
	}
	return nil
}

// bare returns the error inside a *fs.PathError, whose path the caller names already:
// "no such file or directory", not "lstat /var/lib/...: no such file or directory".
func bare(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
