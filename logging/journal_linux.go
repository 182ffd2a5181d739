//go:build linux

package logging

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// socketSender sends entries to journald's socket; it is safe for concurrent use. It sends
// from an unconnected datagram socket, as sd_journal_send does: each entry is addressed to the
// path, so a journald restarted since the last entry gets the next one.
type socketSender struct {
	addr *net.UnixAddr
	conn *net.UnixConn
}

func newSocketSender(path string) (*socketSender, error) {
	// An empty local name autobinds to an abstract address: the socket can send, and needs no
	// path of its own.
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("journal: socket: %w", err)
	}
	return &socketSender{addr: &net.UnixAddr{Name: path, Net: "unixgram"}, conn: conn}, nil
}

// send sends entry in one datagram, or, when it is larger than the socket takes, in a sealed
// memfd passed with SCM_RIGHTS (an empty datagram carrying it), which journald reads instead.
func (s *socketSender) send(entry []byte) error {
	_, _, err := s.conn.WriteMsgUnix(entry, nil, s.addr)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EMSGSIZE) && !errors.Is(err, unix.ENOBUFS) {
		return sendError(s.addr.Name, err)
	}
	fd, err := unix.MemfdCreate("journal-entry", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return sendError(s.addr.Name, fmt.Errorf("memfd_create: %w", err))
	}
	f := os.NewFile(uintptr(fd), "journal-entry")
	defer f.Close()
	if _, err := f.Write(entry); err != nil {
		return sendError(s.addr.Name, fmt.Errorf("write memfd: %w", err))
	}
	// journald takes a memfd only sealed: nobody can change the entry once it is sent.
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		return sendError(s.addr.Name, fmt.Errorf("seal memfd: %w", err))
	}
	if _, _, err := s.conn.WriteMsgUnix(nil, unix.UnixRights(fd), s.addr); err != nil {
		return sendError(s.addr.Name, err)
	}
	return nil
}

// sameFile reports whether f's device and inode are dev and ino, in decimal.
func sameFile(f *os.File, dev, ino string) (bool, error) {
	d, err1 := strconv.ParseUint(dev, 10, 64)
	i, err2 := strconv.ParseUint(ino, 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return false, fmt.Errorf("JOURNAL_STREAM=%s:%s: want DEVICE:INODE in decimal", dev, ino)
	}
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Dev == d && st.Ino == i, nil
}

// sendError says which socket refused an entry.
func sendError(path string, err error) error {
	return fmt.Errorf("journal: send to %s: %w", path, err)
}
