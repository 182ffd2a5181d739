package qemu

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// Initramfs writes a cpio archive in the "newc" format the kernel unpacks into its initial root
// file system (Documentation/driver-api/early-userspace/buffer-format.rst). Parent directories
// are created as needed; everything is owned by root. Not safe for concurrent use.
type Initramfs struct {
	w    *bufio.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

// NewInitramfs returns a writer of a newc archive to w. Call Close to write the trailer.
func NewInitramfs(w io.Writer) *Initramfs {
	return &Initramfs{w: bufio.NewWriterSize(w, 1<<20), ino: 300000, dirs: map[string]bool{"": true, ".": true}}
}

// Mode bits of cpio entries (as in stat's st_mode).
const (
	modeFmt  = 0o170000
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeLink = 0o120000
	modeChar = 0o020000
)

// clean turns an absolute or relative path into the archive's relative form ("bin/x").
func clean(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

func (a *Initramfs) header(name string, mode uint32, size int64, rmajor, rminor uint32) {
	if a.err != nil {
		return
	}
	if size > 0xffffffff {
		a.err = fmt.Errorf("initramfs: %s: %d bytes is too large for cpio newc", name, size)
		return
	}
	a.ino++
	nlink := uint32(1)
	if mode&modeFmt == modeDir {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
	// rdevminor, namesize (with the NUL), check.
	_, a.err = fmt.Fprintf(a.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		a.ino, mode, 0, 0, nlink, 0, uint32(size), 0, 0, rmajor, rminor, len(name)+1, 0)
	if a.err != nil {
		return
	}
	a.write([]byte(name + "\x00"))
	a.pad(110 + len(name) + 1)
}

func (a *Initramfs) write(b []byte) {
	if a.err == nil {
		_, a.err = a.w.Write(b)
	}
}

// pad writes NULs up to the next multiple of 4 after n bytes.
func (a *Initramfs) pad(n int) {
	if r := n % 4; r != 0 {
		a.write(make([]byte, 4-r))
	}
}

func (a *Initramfs) parents(p string) {
	dir := path.Dir(p)
	if a.dirs[dir] {
		return
	}
	a.parents(dir)
	a.header(dir, modeDir|0o755, 0, 0, 0)
	a.dirs[dir] = true
}

// Dir adds a directory (and its parents) with permission bits perm.
func (a *Initramfs) Dir(p string, perm os.FileMode) {
	p = clean(p)
	if a.dirs[p] {
		return
	}
	a.parents(p)
	a.header(p, modeDir|uint32(perm.Perm()), 0, 0, 0)
	a.dirs[p] = true
}

// File adds a regular file with the contents b.
func (a *Initramfs) File(p string, perm os.FileMode, b []byte) {
	p = clean(p)
	a.parents(p)
	a.header(p, modeReg|uint32(perm.Perm()), int64(len(b)), 0, 0)
	a.write(b)
	a.pad(len(b))
}

// CopyFile adds a regular file with the contents of the host file src.
func (a *Initramfs) CopyFile(p string, perm os.FileMode, src string) {
	if a.err != nil {
		return
	}
	f, err := os.Open(src)
	if err != nil {
		a.err = fmt.Errorf("initramfs: %w", err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		a.err = fmt.Errorf("initramfs: %w", err)
		return
	}
	p = clean(p)
	a.parents(p)
	a.header(p, modeReg|uint32(perm.Perm()), st.Size(), 0, 0)
	if a.err != nil {
		return
	}
	n, err := io.Copy(a.w, f)
	if err != nil {
		a.err = fmt.Errorf("initramfs: copy %s: %w", src, err)
		return
	}
	if n != st.Size() {
		a.err = fmt.Errorf("initramfs: %s changed size while copied", src)
		return
	}
	a.pad(int(n % 4))
}

// Symlink adds a symbolic link at p pointing to target.
func (a *Initramfs) Symlink(p, target string) {
	p = clean(p)
	a.parents(p)
	a.header(p, modeLink|0o777, int64(len(target)), 0, 0)
	a.write([]byte(target))
	a.pad(len(target))
}

// CharDev adds a character device node (the kernel needs /dev/console in the initramfs to give
// /init a console before devtmpfs is mounted).
func (a *Initramfs) CharDev(p string, perm os.FileMode, major, minor uint32) {
	p = clean(p)
	a.parents(p)
	a.header(p, modeChar|uint32(perm.Perm()), 0, major, minor)
}

// Close writes the trailer and flushes. It returns the first error of any call.
func (a *Initramfs) Close() error {
	a.header("TRAILER!!!", 0, 0, 0, 0)
	if a.err == nil {
		a.err = a.w.Flush()
	}
	return a.err
}
