//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// sendToKernelGroup sends msg, as a userspace process, to multicast group 1 of
// NETLINK_KOBJECT_UEVENT: where the kernel broadcasts its uevents. Root may do this.
func sendToKernelGroup(t *testing.T, msg []byte) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatalf("socket(NETLINK_KOBJECT_UEVENT): %v", err)
	}
	defer unix.Close(fd)
	// Port id 0 in bind asks the kernel to choose one: a process cannot take the kernel's port id.
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatalf("bind netlink: %v", err)
	}
	err = unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1})
	// The datagram is broadcast to the group first; the unicast copy to the kernel's socket,
	// which takes no input, is then refused. The broadcast has happened all the same.
	if err != nil && !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("send to netlink uevent group 1: %v", err)
	}
}

func ueventSeqnum(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/sys/kernel/uevent_seqnum")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("/sys/kernel/uevent_seqnum: %v", err)
	}
	return n
}

// TestIntegrationForgedUevent is guarantee 3: a root process sends the kernel's uevent group a
// well-formed "online" of a CPU that is offline. The agent must announce nothing for it and count
// it as rejected (sender); the first notification must be the real arrival when the CPU then
// really comes online.
func TestIntegrationForgedUevent(t *testing.T) {
	testenv.RequireRoot(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	devpath := strings.TrimPrefix(link, "/sys")

	testenv.SetCPUOnline(t, cpu, false) // back online in cleanup whatever happens
	a := startAgent(t)
	events := a.subscribe(t, "class=processor")
	const rejected = `hotplug_agent_uevents_rejected_total{reason="sender"}`
	before := metric(t, a.get(t, "/metrics"), rejected)

	// The forgery looks like the kernel's next uevent: the SEQNUM it would use next, no SYNTH_UUID.
	forgedSeq := ueventSeqnum(t) + 1
	forged := fmt.Sprintf("online@%s\x00ACTION=online\x00DEVPATH=%s\x00SUBSYSTEM=cpu\x00DRIVER=processor\x00SEQNUM=%d\x00",
		devpath, devpath, forgedSeq)
	sendToKernelGroup(t, []byte(forged))
	// A real (synthetic, announcing nothing) uevent takes the SEQNUM the forgery claimed, so that
	// the real online below has a higher one.
	if err := testenv.Synthesize("/sys/devices/system/cpu/cpu0", "change"); err != nil {
		t.Fatal(err)
	}

	// The agent reads its socket in order: by the time it delivers the real arrival, it has seen
	// the forgery. Had it believed the forgery, the first notification would be the forged
	// arrival (seqnum forgedSeq), and the real online would announce nothing.
	testenv.SetCPUOnline(t, cpu, true)
	first := next(t, events, "the real arrival of "+link)
	if first.Event != "arrival" || first.SymbolicLink != link || first.Cause != "uevent" || first.Seqnum <= forgedSeq {
		t.Errorf("first notification after the forged online = %+v; want the real arrival of %s, cause uevent, seqnum above the forged %d",
			first, link, forgedSeq)
	}
	if after := metric(t, a.get(t, "/metrics"), rejected); after < before+1 {
		t.Errorf("%s went from %v to %v after a forged uevent; want it to rise", rejected, before, after)
	}
	a.stop(t)
}
