//go:build linux

package testenv

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// SendToKernel makes the kernel itself broadcast payload as a uevent (Linux 4.18 and later): it
// sends payload, in a netlink request, to the kernel's NETLINK_KOBJECT_UEVENT socket, which
// appends its next SEQNUM and re-broadcasts it to group 1 from port id 0, with the sender's pid
// in SCM_CREDENTIALS. It needs CAP_SYS_ADMIN; the broadcast has happened when it returns.
func SendToKernel(t testing.TB, payload []byte) {
	t.Helper()
	fd := ueventSocket(t)
	defer unix.Close(fd)
	msg := make([]byte, unix.NLMSG_HDRLEN+len(payload))
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	// The kernel handles only requests of a type from NLMSG_MIN_TYPE up; lower ones are acks.
	binary.NativeEndian.PutUint16(msg[4:], unix.NLMSG_MIN_TYPE)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST)
	copy(msg[unix.NLMSG_HDRLEN:], payload)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatalf("send a uevent to the kernel: %v", err)
	}
}

// SendToGroup sends payload, as this process, to multicast group 1 of NETLINK_KOBJECT_UEVENT,
// where the kernel broadcasts its uevents: from this process's own port id. Root may do this.
func SendToGroup(t testing.TB, payload []byte) {
	t.Helper()
	fd := ueventSocket(t)
	defer unix.Close(fd)
	err := unix.Sendto(fd, payload, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1})
	// The datagram is broadcast to the group first; the unicast copy to the kernel's socket is
	// then refused. The broadcast has happened all the same.
	if err != nil && !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("send to netlink uevent group 1: %v", err)
	}
}

// ueventSocket opens a NETLINK_KOBJECT_UEVENT socket of this process to send from. Port id 0 in
// bind asks the kernel to choose one: a process cannot take the kernel's port id.
func ueventSocket(t testing.TB) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatalf("socket(NETLINK_KOBJECT_UEVENT): %v", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		t.Fatalf("bind netlink: %v", err)
	}
	return fd
}
