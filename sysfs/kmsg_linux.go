//go:build linux

package sysfs

import (
	"errors"
	"strings"

	"golang.org/x/sys/unix"
)

// kernelLog reads the records the kernel logs from the moment it was opened: /dev/kmsg, opened
// non-blocking and positioned after the last record. A nil *kernelLog reads nothing.
type kernelLog struct {
	fd int
}

// openKernelLog opens the kernel log at path and skips what it holds; nil when path is "" or the
// log cannot be read (no such device, no CAP_SYSLOG under dmesg_restrict, systemd's
// ProtectKernelLogs=): the explanation then goes without the kernel's lines.
func openKernelLog(path string) *kernelLog {
	if path == "" {
		return nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	// On /dev/kmsg, SEEK_END moves past the last record; on a regular file, to its end.
	if _, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil {
		unix.Close(fd)
		return nil
	}
	return &kernelLog{fd: fd}
}

func (l *kernelLog) close() {
	if l != nil {
		unix.Close(l.fd)
	}
}

// Bounds of one read of the log after a refusal: the records of a burst that follows are not
// wanted.
const (
	maxKmsgRecords = 512
	kmsgRecordSize = 8192 // /dev/kmsg returns one record per read, at most a few KiB
)

// records returns the messages logged since the log was opened, oldest first: the text after
// the "priority,sequence,time,flags;" prefix of each record, without its continuation lines. It
// does not wait for more.
func (l *kernelLog) records() []string {
	if l == nil {
		return nil
	}
	var out []string
	buf := make([]byte, kmsgRecordSize)
	for len(out) < maxKmsgRecords {
		n, err := unix.Read(l.fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue // records were overwritten before they were read: go on with the next
		}
		if err != nil || n <= 0 {
			return out // EAGAIN: nothing more; 0: the end of a file
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if line == "" || line[0] == ' ' {
				continue // a continuation line (" SUBSYSTEM=...")
			}
			if _, msg, ok := strings.Cut(line, ";"); ok {
				out = append(out, msg)
			}
		}
	}
	return out
}
