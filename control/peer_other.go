//go:build !linux

package control

import (
	"errors"
	"net"
	"syscall"
)

var errConnRefused = syscall.ECONNREFUSED

// peerOf fails: only Linux tells a socket's peer credentials the way the agent checks them.
func peerOf(*net.UnixConn) (Peer, error) {
	return Peer{}, errors.New("SO_PEERCRED: not supported on this system")
}

func errnoName(syscall.Errno) string { return "" }

// hungUp reports true: elsewhere the end of what the client sends is taken for its going away.
func hungUp(*net.UnixConn) bool { return true }
