//go:build linux

package control

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// errConnRefused is what connecting to a socket file nobody listens on fails with.
var errConnRefused = syscall.ECONNREFUSED

// peerOf reads the credentials of c's peer (SO_PEERCRED): those of the process that connected,
// as the kernel recorded them at connect time.
func peerOf(c *net.UnixConn) (Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if credErr != nil {
		return Peer{}, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return Peer{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid)}, nil
}

func errnoName(e syscall.Errno) string { return unix.ErrnoName(e) }

// hungUp reports whether c's peer has closed its end (the kernel marks the socket shut down both
// ways: POLLHUP), rather than only shut down its sending side (POLLRDHUP alone). It does not
// block.
func hungUp(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return true
	}
	hup := true
	raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil {
			hup = n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return hup
}
