//go:build linux

package sysfs

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// On Linux the package reads sysfs with plain system calls rather than through *os.File. An
// *os.File registers a kernfs attribute (kernfs files support poll) with the runtime's network
// poller and sets it non-blocking, and undoes both on Close: five more system calls per file,
// more than half the cost of a memory block scan. Files are opened relative to their block's
// directory, which spares the kernel a path walk each.

// dir is an open directory whose entries and attributes can be read.
type dir struct{ fd int }

// openDir opens directory p. The caller must close it.
func openDir(p string) (dir, error) {
	for {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return dir{}, err
		}
		return dir{fd}, nil
	}
}

func (d dir) close() { unix.Close(d.fd) } // read-only: a close error cannot lose data

// names returns the entries of d, unsorted, without "." and "..". buf is scratch space of at
// least scratchSize bytes.
func (d dir) names(buf []byte) ([]string, error) {
	names := make([]string, 0, 16) // a memory block has about 10 entries
	for {
		n, err := unix.Getdents(d.fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// read reads the attribute name in d; see readAttr.
func (d dir) read(name string, buf []byte) ([]byte, error) {
	return readAttrAt(d.fd, name, buf)
}

// readAttr reads the attribute at p into buf (scratch space of at least scratchSize bytes)
// with one bounded read, and returns the content with surrounding white space trimmed: a
// subslice of buf, valid until its next use. One read is enough: sysfs returns a whole
// attribute on the first read. The errors carry no path, so callers can wrap them with one, and
// errors.Is with fs.ErrNotExist works.
func readAttr(p string, buf []byte) ([]byte, error) {
	return readAttrAt(unix.AT_FDCWD, p, buf)
}

func readAttrAt(dirfd int, name string, buf []byte) ([]byte, error) {
	var fd int
	var err error
	for {
		if fd, err = unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return readClose(fd, buf)
}

// attrFile is an attribute held open, read from its start by every read.
type attrFile struct{ fd int }

// openAttr opens the attribute at p. The caller must close it.
func openAttr(p string) (attrFile, error) {
	for {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return attrFile{fd}, err
		}
	}
}

// read reads the whole attribute again, as readAttr does, with one pread from offset 0.
func (a attrFile) read(buf []byte) ([]byte, error) {
	for {
		n, err := unix.Pread(a.fd, buf[:maxAttrSize+1], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		return checkAttr(buf[:n])
	}
}

func (a attrFile) close() error { return unix.Close(a.fd) }

// readClose reads the attribute open as fd into buf (see readAttr) and closes fd.
func readClose(fd int, buf []byte) ([]byte, error) {
	var n int
	var err error
	for {
		if n, err = unix.Read(fd, buf[:maxAttrSize+1]); err != unix.EINTR {
			break
		}
	}
	unix.Close(fd) // read-only: a close error cannot lose data
	if err != nil {
		return nil, err
	}
	return checkAttr(buf[:n])
}

// readAttrPath is readAttr for a path held in p, which it may extend by one byte (a NUL for the
// kernel): without the copy into a new C string that a string path costs, it allocates nothing.
func readAttrPath(p []byte, buf []byte) ([]byte, error) {
	z := append(p, 0)
	cwd := unix.AT_FDCWD // a variable: the constant is negative
	var fd uintptr
	var errno unix.Errno
	for {
		fd, _, errno = unix.Syscall6(unix.SYS_OPENAT, uintptr(cwd), uintptr(unsafe.Pointer(unsafe.SliceData(z))),
			uintptr(unix.O_RDONLY|unix.O_CLOEXEC), 0, 0, 0)
		if errno != unix.EINTR {
			break
		}
	}
	if errno != 0 {
		return nil, errno
	}
	return readClose(int(fd), buf)
}
