// Package sysfs reads the truth about a machine's CPUs and memory blocks from a sysfs tree under
// a configurable root (normally /sys).
//
// Every read goes through an [FS] made by [NewFS], which checks the root once; nothing reads /sys
// through a global, so tests run in parallel on fixture trees. A missing optional attribute is
// data, not failure (cpu0 often has no online file; older kernels have no valid_zones). Errors name
// the operation and the path and wrap the cause, so errors.Is(err, fs.ErrNotExist) tells that a
// CPU or memory block does not exist.
package sysfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Paths of the two hotplug subsystems, relative to the root.
const (
	cpuDir    = "devices/system/cpu"
	memoryDir = "devices/system/memory"
)

// maxAttrSize bounds one attribute read. The kernel formats a sysfs attribute into one page
// (4 KiB on x86), and the attributes read here are a few bytes long; anything larger is not the
// file this package expects.
const maxAttrSize = 4096

// FS is a sysfs tree under a root (normally /sys). It is a small value, cheap to copy, and safe
// for concurrent use: it holds only the root, the memory block size read by [NewFS] and the path
// of the kernel log ([FS.WithKernelLog]). The zero FS is not usable; call NewFS.
type FS struct {
	root      string
	blockSize uint64 // memory/block_size_bytes; 0 when the tree has no memory directory
	kmsg      string // the kernel log OfflineMemoryBlock reads; "" for none
}

// NewFS returns the sysfs tree under root after checking once that it is one:
// root/devices/system/cpu must exist and hold a readable, well-formed present or possible CPU
// list. If root/devices/system/memory exists (a kernel without memory hotplug support has none)
// NewFS also reads the memory block size from its block_size_bytes, which must be a non-zero hex
// number.
//
// The error says what is wrong, e.g. "sysfs: /tmp/x is not a sysfs tree:
// /tmp/x/devices/system/cpu: no such file or directory", and wraps the cause, so errors.Is with
// fs.ErrNotExist or syscall.ENOTDIR works. NewFS blocks on a few small file reads; it is safe for
// concurrent use.
func NewFS(root string) (FS, error) {
	if root == "" {
		return FS{}, errors.New("sysfs: empty root")
	}
	fsys := FS{root: filepath.Clean(root)}
	if fsys.root == "/sys" {
		fsys.kmsg = DefaultKernelLog
	}
	notSysfs := func(p string, err error) error {
		return fmt.Errorf("sysfs: %s is not a sysfs tree: %s: %w", root, p, err)
	}

	dir := fsys.Path(cpuDir)
	switch st, err := os.Stat(dir); {
	case err != nil:
		return FS{}, notSysfs(dir, unwrapPath(err))
	case !st.IsDir():
		return FS{}, notSysfs(dir, syscall.ENOTDIR)
	}
	// One well-formed list is proof enough. When neither is, report what is wrong with a list
	// that exists, else that possible is missing.
	var listErr error
	for _, name := range []string{"present", "possible"} {
		p := dir + "/" + name
		s, err := readString(p)
		if err == nil {
			_, err = parseCPUList(s)
		}
		if err == nil {
			listErr = nil
			break
		}
		if listErr == nil || errors.Is(listErr, fs.ErrNotExist) {
			listErr = notSysfs(p, err)
		}
	}
	if listErr != nil {
		return FS{}, listErr
	}

	dir = fsys.Path(memoryDir)
	switch st, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		return fsys, nil // no memory hotplug support: HasMemory reports false
	case err != nil:
		return FS{}, fmt.Errorf("sysfs: stat %s: %w", dir, unwrapPath(err))
	case !st.IsDir():
		return FS{}, fmt.Errorf("sysfs: stat %s: %w", dir, syscall.ENOTDIR)
	}
	p := dir + "/block_size_bytes"
	s, err := readString(p)
	if err != nil {
		return FS{}, fmt.Errorf("sysfs: read %s: %w", p, err)
	}
	size, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return FS{}, fmt.Errorf("sysfs: parse %s: %w", p, err)
	}
	if size == 0 {
		return FS{}, fmt.Errorf("sysfs: parse %s: block size is 0", p)
	}
	fsys.blockSize = size
	return fsys, nil
}

// DefaultKernelLog is the kernel log that an FS rooted at /sys reads to explain a refused
// offline (see OfflineMemoryBlock). Reading it needs CAP_SYSLOG where dmesg_restrict is set.
const DefaultKernelLog = "/dev/kmsg"

// WithKernelLog returns a copy of fsys that reads the kernel log at path (a /dev/kmsg device, or
// a file of its records for tests) to explain a refused offline; "" reads none. An FS made by
// NewFS reads DefaultKernelLog when its root is /sys, else none. It does not block and is safe
// for concurrent use.
func (fsys FS) WithKernelLog(path string) FS {
	fsys.kmsg = path
	return fsys
}

// Root returns the root the tree was opened at, cleaned. It does not block and is safe for
// concurrent use.
func (fsys FS) Root() string { return fsys.root }

// Path returns filepath.Join(root, elem...). It does not block and is safe for concurrent use.
func (fsys FS) Path(elem ...string) string {
	return filepath.Join(append([]string{fsys.root}, elem...)...)
}

// CPUPath returns the directory of CPU n, <root>/devices/system/cpu/cpuN, whether or not it
// exists. It does not block and is safe for concurrent use.
func (fsys FS) CPUPath(n int) string {
	return filepath.Join(fsys.root, cpuDir, "cpu"+strconv.Itoa(n))
}

// MemoryBlockPath returns the directory of memory block n,
// <root>/devices/system/memory/memoryN, whether or not it exists. It does not block and is safe
// for concurrent use.
func (fsys FS) MemoryBlockPath(n int) string {
	return filepath.Join(fsys.root, memoryDir, "memory"+strconv.Itoa(n))
}

// scratchSize is the size of the scratch buffers the readers take: room for one attribute read
// (maxAttrSize and one byte to tell a larger file) and for a good batch of directory entries.
const scratchSize = 8192

// readString reads the attribute at p (see readAttr) and returns it as a string.
func readString(p string) (string, error) {
	var buf [scratchSize]byte
	b, err := readAttr(p, buf[:])
	return string(b), err
}

// checkAttr checks the size of an attribute read into a buffer of maxAttrSize+1 bytes and trims
// surrounding white space without allocating.
func checkAttr(b []byte) ([]byte, error) {
	if len(b) > maxAttrSize {
		return nil, fmt.Errorf("larger than %d bytes", maxAttrSize)
	}
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }

// readDirNames returns the names in directory p, unsorted, using buf as scratch space of
// scratchSize bytes.
func readDirNames(p string, buf []byte) ([]string, error) {
	d, err := openDir(p)
	if err != nil {
		return nil, err
	}
	defer d.close()
	return d.names(buf)
}

// unwrapPath returns the cause of an *fs.PathError, so that messages name the path once.
func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// numbered returns N when name is prefix followed by decimal digits only ("cpu12" -> 12), so
// that "cpufreq", "cpu", "cpu+1" and "memory_failure" are not taken for devices.
func numbered(name, prefix string) (int, bool) {
	digits, ok := strings.CutPrefix(name, prefix)
	if !ok || digits == "" || len(digits) > 9 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// nodeOf returns M for the lowest-numbered entry named nodeM among names, or -1 when there is
// none. Only names count: the kernel makes symbolic links, a fixture may hold directories.
func nodeOf(names []string) int {
	node := -1
	for _, name := range names {
		if m, ok := numbered(name, "node"); ok && (node < 0 || m < node) {
			node = m
		}
	}
	return node
}

// has reports whether names holds name.
func has(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// vanished reports whether err comes from dir having been removed while it was read (a
// hot-remove racing the read): the read failed with ENOENT (or ENODEV, which kernfs returns on an
// open file whose node is gone) and dir no longer exists.
func vanished(err error, dir string) bool {
	if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENODEV) {
		return false
	}
	_, err = os.Lstat(dir)
	return errors.Is(err, fs.ErrNotExist)
}

// notExistIfVanished returns err, from a read in dir, made to wrap fs.ErrNotExist as well when
// dir vanished under the read (kernfs fails a read of an open file whose node is gone with
// ENODEV), so that callers can tell a CPU or block that is gone by errors.Is alone.
func notExistIfVanished(err error, dir string) error {
	if err == nil || errors.Is(err, fs.ErrNotExist) || !vanished(err, dir) {
		return err
	}
	return fmt.Errorf("%w (%s was removed: %w)", err, dir, fs.ErrNotExist)
}

// parseBool parses a sysfs boolean, which the kernel prints as 0 or 1.
func parseBool(b []byte) (bool, error) {
	switch string(b) {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, fmt.Errorf("%q is not 0 or 1", truncate(string(b)))
}

// truncate shortens s for an error message.
func truncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// UeventSeqnum returns kernel/uevent_seqnum: the SEQNUM of the last uevent the kernel sent. The
// error wraps fs.ErrNotExist when the file is absent (as in a fixture tree). It blocks on one
// small file read and is safe for concurrent use.
func (fsys FS) UeventSeqnum() (uint64, error) {
	p := fsys.Path("kernel", "uevent_seqnum")
	s, err := readString(p)
	if err != nil {
		return 0, fmt.Errorf("sysfs: read %s: %w", p, err)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("sysfs: parse %s: %w", p, err)
	}
	return n, nil
}
