//go:build linux

package udev

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// guard bounds how long a test waits for something that should happen at once; it only
// keeps a broken build from hanging, it is not a performance assertion.
const guard = 20 * time.Second

func listen(t *testing.T, opts Options) *Conn {
	t.Helper()
	c, err := Listen(opts)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func requireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "needs root to %s", why)
	}
}

// trigger writes to a device's uevent file, making the kernel send a synthetic uevent.
// "change <uuid>" (or any action followed by a UUID) gives SYNTH_UUID=<uuid>; the
// kernel accepts only alphanumeric SYNTH_ARG values, so no '=' can be injected here.
func trigger(t *testing.T, devpath, what string) {
	t.Helper()
	p := filepath.Join("/sys", devpath, "uevent")
	if err := os.WriteFile(p, []byte(what), 0); err != nil {
		t.Fatalf("trigger uevent: %v", err)
	}
}

// highestCPU returns the DEVPATH of the highest-numbered CPU.
func highestCPU(t *testing.T) string {
	return lastDevice(t, "/sys/devices/system/cpu", "cpu")
}

// memoryBlock returns the DEVPATH of the highest-numbered memory block.
func memoryBlock(t *testing.T) string {
	return lastDevice(t, "/sys/devices/system/memory", "memory")
}

func lastDevice(t *testing.T, dir, prefix string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		testenv.Unavailable(t, "no %s: %v", dir, err)
	}
	re := regexp.MustCompile("^" + prefix + "([0-9]+)$")
	best := -1
	for _, e := range entries {
		if m := re.FindStringSubmatch(e.Name()); m != nil {
			if n, _ := strconv.Atoi(m[1]); n > best {
				best = n
			}
		}
	}
	if best < 0 {
		testenv.Unavailable(t, "no %s%s[0-9]+ device", dir, "/"+prefix)
	}
	return strings.TrimPrefix(dir, "/sys") + "/" + prefix + strconv.Itoa(best)
}

// readUntil reads events until match accepts one, failing on any error. Other
// processes (other test packages too) may emit uevents at the same time: match on
// something the test chose, such as a SYNTH_UUID.
func readUntil(t *testing.T, c *Conn, match func(*Event) bool) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), guard)
	defer cancel()
	for {
		ev, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if match(&ev) {
			return ev
		}
	}
}

func hasUUID(id string) func(*Event) bool {
	return func(e *Event) bool {
		v, _ := e.Get("SYNTH_UUID")
		return v == id
	}
}

// readErr reads in a goroutine until Read fails and returns the error.
func readErr(c *Conn, ctx context.Context) <-chan error {
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := c.Read(ctx); err != nil {
				errc <- err
				return
			}
		}
	}()
	return errc
}

func TestCloseUnblocksRead(t *testing.T) {
	c := listen(t, Options{})
	errc := readErr(c, context.Background())
	time.Sleep(50 * time.Millisecond) // let Read block in the netpoller; not needed for correctness
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(guard):
		t.Fatal("Read still blocked after Close")
	}
	if _, err := c.Read(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read on a closed Conn = %v, want net.ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestCancelUnblocksRead(t *testing.T) {
	testenv.LockCPUs(t) // no other package's uevent storm while this one reads real events
	c := listen(t, Options{})

	ctx, cancel := context.WithCancel(context.Background())
	errc := readErr(c, ctx)
	time.Sleep(50 * time.Millisecond) // let Read block in the netpoller; not needed for correctness
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Read after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(guard):
		t.Fatal("Read still blocked after its context was cancelled")
	}

	expired, cancel2 := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel2()
	if err := <-readErr(c, expired); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read with a timed-out context = %v, want context.DeadlineExceeded", err)
	}

	// Cancel many Reads at arbitrary points, to hit the race where the cancellation
	// callback runs as Read returns: its deadline must not leak into a later Read.
	for range 200 {
		ctx, cancel := context.WithCancel(context.Background())
		go cancel()
		if _, err := c.Read(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Read with a context cancelled concurrently = %v, want nil or context.Canceled", err)
		}
	}

	requireRoot(t, "write a uevent file and prove a later Read still receives events")
	mem := memoryBlock(t)
	id := uuid.NewString()
	trigger(t, mem, "change "+id)
	if ev := readUntil(t, c, hasUUID(id)); ev.Action != "change" {
		t.Errorf("event after cancellations: Action = %q, want change", ev.Action)
	}

	// Now with an event ready each time, so that the cancellation often lands while
	// Read returns the event. The next, uncancelled Read then waits for an event that
	// comes a little later: a deadline leaking from the cancelled Read would end it.
	for range 100 {
		trigger(t, mem, "change "+uuid.NewString())
		ctx, cancel := context.WithCancel(context.Background())
		go cancel()
		if _, err := c.Read(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Read with a context cancelled concurrently = %v, want an event or context.Canceled", err)
		}
		next := uuid.NewString()
		errc := make(chan error, 1)
		go func() {
			time.Sleep(time.Millisecond)
			errc <- os.WriteFile(filepath.Join("/sys", mem, "uevent"), []byte("change "+next), 0)
		}()
		readUntil(t, c, hasUUID(next))
		if err := <-errc; err != nil {
			t.Fatalf("trigger uevent: %v", err)
		}
	}
}

// TestReadQueuedAfterCancelledRead: a Read whose context ends leaves a read deadline in the past
// on the socket (that is how the context wakes it), also when the context ends just as Read
// returns an event, after which the agent drains the queue with ReadQueued. ReadQueued must not
// take that leftover deadline for a failed receive.
func TestReadQueuedAfterCancelledRead(t *testing.T) {
	c := listen(t, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel()
	if err := <-readErr(c, ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read with a timed-out context = %v, want context.DeadlineExceeded", err)
	}
	for range 3 { // other processes' uevents may be queued: it returns them, or ok=false
		if _, _, err := c.ReadQueued(); err != nil {
			t.Fatalf("ReadQueued after a Read whose context ended: %v; want no error", err)
		}
	}
	// The state a cancellation leaves when it lands as Read returns an event: the deadline set
	// by the context's callback, which Read waited for, and noted.
	if err := c.f.SetReadDeadline(time.Unix(0, 1)); err != nil {
		t.Fatal(err)
	}
	c.woken = true
	if _, _, err := c.ReadQueued(); err != nil {
		t.Fatalf("ReadQueued with a deadline left by a cancelled Read: %v; want no error", err)
	}
}

func TestAccept(t *testing.T) {
	kernel := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}
	buf := make([]byte, recvBufferSize)
	n := copy(buf, rawMemoryOnline)
	kcreds := unix.UnixCredentials(&unix.Ucred{Pid: 0, Uid: 0, Gid: 0})
	// What the kernel re-broadcasts for a process that sent it a uevent: port id 0, the
	// sender's pid and uid.
	injected := unix.UnixCredentials(&unix.Ucred{Pid: 4242, Uid: 0, Gid: 0})
	rights := unix.UnixRights(3)
	tests := []struct {
		name       string
		n, flags   int
		from       unix.Sockaddr
		oob        []byte
		wantReason string
	}{
		{"kernel", n, 0, kernel, kcreds, ""},
		{"kernel, credentials after another message", n, 0, kernel, append(slices.Clone(rights), kcreds...), ""},
		{"userspace sender", n, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1, Pid: 4242}, kcreds, "sender"},
		{"sent to the kernel and re-broadcast", n, 0, kernel, injected, "sender"},
		{"no credentials", n, 0, kernel, nil, "sender"},
		{"other control message only", n, 0, kernel, rights, "sender"},
		{"credentials cut short", n, 0, kernel, kcreds[:len(kcreds)-8], "sender"},
		{"no source address", n, 0, nil, kcreds, "sender"},
		{"not netlink", n, 0, &unix.SockaddrInet4{Port: 1}, kcreds, "sender"},
		{"MSG_TRUNC", n, unix.MSG_TRUNC, kernel, kcreds, "truncated"},
		{"malformed", n - 12, 0, kernel, kcreds, "malformed"}, // cut inside SEQNUM's key
		{"empty", 0, 0, kernel, kcreds, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, reason, err := accept(Parse, buf, tt.n, tt.flags, tt.from, tt.oob)
			if reason != tt.wantReason {
				t.Fatalf("accept reason = %q (err %v), want %q", reason, err, tt.wantReason)
			}
			if (err != nil) != (reason == "malformed") {
				t.Errorf("accept error = %v with reason %q", err, reason)
			}
			if reason == "" && ev.DevPath != "/devices/system/memory/memory40" {
				t.Errorf("accepted event DevPath = %q", ev.DevPath)
			}
		})
	}
}

func TestIntegrationRejectsForgedSender(t *testing.T) {
	testenv.LockCPUs(t) // no other package's uevent storm while this one reads real events
	requireRoot(t, "send to the uevent multicast group (CAP_NET_ADMIN) and write a uevent file")
	var reasons []string // OnReject runs on the reading goroutine: this one
	c := listen(t, Options{OnReject: func(r string) { reasons = append(reasons, r) }})

	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	defer unix.Close(s)
	cpu := highestCPU(t)
	forgedID, realID := uuid.NewString(), uuid.NewString()
	forged := "online@" + cpu + "\x00ACTION=online\x00DEVPATH=" + cpu + "\x00SUBSYSTEM=cpu\x00SYNTH_UUID=" + forgedID + "\x00SEQNUM=1\x00"
	if _, err := Parse([]byte(forged)); err != nil {
		t.Fatalf("the forged datagram must be well-formed: %v", err)
	}
	if err := unix.Sendto(s, []byte(forged), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		t.Fatalf("send forged uevent: %v", err)
	}
	// The forged datagram is queued before sendto returns, so before the real one.
	trigger(t, cpu, "online "+realID)

	ev := readUntil(t, c, func(e *Event) bool {
		if hasUUID(forgedID)(e) {
			t.Fatalf("Read returned the forged event %v", e)
		}
		return hasUUID(realID)(e)
	})
	if ev.DevPath != cpu || ev.Action != "online" {
		t.Errorf("real event = %v, want online@%s", ev, cpu)
	}
	if ev.Skipped != 0 {
		t.Errorf("real event Skipped = %d; want 0: the forgery came from a process's port, not numbered by the kernel", ev.Skipped)
	}
	if !slices.Contains(reasons, "sender") {
		t.Errorf("OnReject reasons = %q, want one \"sender\"", reasons)
	}
}

// TestIntegrationRejectsUeventSentThroughKernel: a root process has the kernel itself broadcast a
// well-formed online of a CPU. The datagram comes from port id 0 like the kernel's own, with the
// process's pid in its credentials: Read drops it as "sender" and returns the kernel's next uevent.
func TestIntegrationRejectsUeventSentThroughKernel(t *testing.T) {
	testenv.LockCPUs(t)
	requireRoot(t, "send a uevent to the kernel (CAP_SYS_ADMIN) and write a uevent file")
	var reasons []string // OnReject runs on the reading goroutine: this one
	c := listen(t, Options{OnReject: func(r string) { reasons = append(reasons, r) }})
	cpu := highestCPU(t)
	forgedID, realID := uuid.NewString(), uuid.NewString()
	// The kernel appends its own SEQNUM after the forged one; the sender check refuses the datagram.
	forged := "online@" + cpu + "\x00ACTION=online\x00DEVPATH=" + cpu + "\x00SUBSYSTEM=cpu\x00SYNTH_UUID=" + forgedID + "\x00SEQNUM=18446744073709551615\x00"
	testenv.SendToKernel(t, []byte(forged))
	trigger(t, cpu, "online "+realID)
	ev := readUntil(t, c, func(e *Event) bool {
		if hasUUID(forgedID)(e) {
			t.Fatalf("Read returned the uevent sent through the kernel: %v", e)
		}
		return hasUUID(realID)(e)
	})
	if ev.DevPath != cpu || ev.Action != "online" || ev.Seqnum == 1<<64-1 {
		t.Errorf("real event = %v, want online@%s with the kernel's SEQNUM", ev, cpu)
	}
	// The kernel numbered the dropped datagram: the real event says so, so that its SEQNUM, one
	// further on, is not taken for a lost uevent.
	if ev.Skipped != 1 {
		t.Errorf("real event Skipped = %d; want 1 (the uevent sent through the kernel)", ev.Skipped)
	}
	if !slices.Contains(reasons, "sender") {
		t.Errorf("OnReject reasons = %q, want one \"sender\"", reasons)
	}
}

// TestIntegrationBehind: Behind is 0 while the reader waits, grows while uevents stay queued
// unread, and is 0 again once a Read has emptied the queue.
func TestIntegrationBehind(t *testing.T) {
	testenv.LockCPUs(t)
	requireRoot(t, "write a uevent file")
	c := listen(t, Options{})
	if d := c.Behind(time.Now()); d != 0 {
		t.Fatalf("Behind on a new socket = %v, want 0", d)
	}
	mem := memoryBlock(t)
	first, second := uuid.NewString(), uuid.NewString()
	trigger(t, mem, "change "+first)
	readUntil(t, c, hasUUID(first)) // the reader has taken a datagram: not waiting now
	trigger(t, mem, "change "+second)
	time.Sleep(50 * time.Millisecond)
	if d := c.Behind(time.Now()); d < 50*time.Millisecond {
		t.Errorf("Behind with a uevent queued unread for 50ms = %v, want at least 50ms", d)
	}
	readUntil(t, c, hasUUID(second))
	// Nothing else is queued (other packages' uevents wait for the CPU lock): the next Read
	// finds the queue empty and waits.
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	for {
		if _, err := c.Read(ctx); err != nil {
			break
		}
	}
	if d := c.Behind(time.Now()); d != 0 {
		t.Errorf("Behind after a Read waited on an empty queue = %v, want 0", d)
	}
}

func TestIntegrationSyntheticUevents(t *testing.T) {
	testenv.LockCPUs(t) // no other package's uevent storm while this one reads real events
	requireRoot(t, "write uevent files in /sys")
	c := listen(t, Options{})
	cpu, mem := highestCPU(t), memoryBlock(t)
	memID := uuid.NewString()

	before := time.Now()
	trigger(t, cpu, "online") // SYNTH_UUID=0
	trigger(t, mem, "online "+memID)

	type got struct {
		Action, DevPath, Subsystem, SynthUUID string
		Synthetic                             bool
	}
	summarize := func(e *Event) got {
		id, _ := e.Get("SYNTH_UUID")
		return got{e.Action, e.DevPath, e.Subsystem, id, e.Synthetic()}
	}

	cpuEv := readUntil(t, c, func(e *Event) bool {
		id, _ := e.Get("SYNTH_UUID")
		return e.DevPath == cpu && e.Action == "online" && id == "0"
	})
	memEv := readUntil(t, c, hasUUID(memID))

	if diff := cmp.Diff(got{"online", cpu, "cpu", "0", true}, summarize(&cpuEv)); diff != "" {
		t.Errorf("cpu event (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(got{"online", mem, "memory", memID, true}, summarize(&memEv)); diff != "" {
		t.Errorf("memory event (-want +got):\n%s", diff)
	}
	if m, _ := cpuEv.Get("MODALIAS"); !strings.HasPrefix(m, "cpu:type:") || strings.HasSuffix(m, "\n") {
		t.Errorf("cpu MODALIAS = %q, want cpu:type:... without the trailing newline", m)
	}
	if cpuEv.Seqnum == 0 || memEv.Seqnum <= cpuEv.Seqnum {
		t.Errorf("Seqnum cpu=%d memory=%d, want > 0 and increasing", cpuEv.Seqnum, memEv.Seqnum)
	}
	for _, e := range []Event{cpuEv, memEv} {
		if e.ReadAt.Before(before) {
			t.Errorf("%v: ReadAt = %v, want set, after the write at %v", e, e.ReadAt, before)
		}
	}
	if memEv.ReadAt.Before(cpuEv.ReadAt) {
		t.Errorf("memory ReadAt %v before cpu ReadAt %v", memEv.ReadAt, cpuEv.ReadAt)
	}
}

func TestIntegrationReceiveBuffer(t *testing.T) {
	testenv.LockCPUs(t) // no other package's uevent storm while this one reads real events
	rmemDefault := readProcInt(t, "/proc/sys/net/core/rmem_default")
	rmemMax := readProcInt(t, "/proc/sys/net/core/rmem_max")
	// Twice rmem_max: only SO_RCVBUFFORCE can get it.
	big := 2 * rmemMax
	wantBig, wantMethod := 2*big, "SO_RCVBUFFORCE"
	if os.Geteuid() != 0 {
		wantBig, wantMethod = 2*rmemMax, "SO_RCVBUF"
	}
	tests := []struct {
		name       string
		requested  int
		want       int
		wantMethod string
	}{
		{"kernel default", 0, rmemDefault, "kernel default"},
		{"above rmem_max", big, wantBig, wantMethod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			c := listen(t, Options{ReceiveBufferBytes: tt.requested, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			if got := c.ReceiveBufferBytes(); got != tt.want {
				t.Errorf("ReceiveBufferBytes() = %d, want %d", got, tt.want)
			}
			type record struct {
				Level       string `json:"level"`
				Method      string `json:"method"`
				RcvbufBytes int    `json:"rcvbuf_bytes"`
			}
			var got record
			if err := json.Unmarshal(logs.Bytes(), &got); err != nil {
				t.Fatalf("log %q: %v", logs.String(), err)
			}
			if diff := cmp.Diff(record{"INFO", tt.wantMethod, tt.want}, got); diff != "" {
				t.Errorf("setup log (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := Listen(Options{ReceiveBufferBytes: -1}); err == nil {
		t.Error("Listen with a negative buffer size succeeded")
	}
	// 4 GiB + 1 MiB would reach the kernel cut to its low 32 bits, 1 MiB (where an int holds it).
	if huge := uint64(1<<32 + 1<<20); uint64(int(huge)) == huge {
		if c, err := Listen(Options{ReceiveBufferBytes: int(huge)}); err == nil {
			c.Close()
			t.Error("Listen with a buffer size above the socket option's C int succeeded")
		}
	}
}

func readProcInt(t *testing.T, p string) int {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		testenv.Unavailable(t, "cannot read %s: %v", p, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return n
}

func TestIntegrationOverflow(t *testing.T) {
	testenv.LockCPUs(t) // no other package's uevent storm while this one reads real events
	requireRoot(t, "force a tiny receive buffer and write uevent files")
	var rejects []string
	c := listen(t, Options{ReceiveBufferBytes: 1024, OnReject: func(r string) { rejects = append(rejects, r) }})
	rcvbuf := c.ReceiveBufferBytes()
	t.Logf("asked for 1024 bytes, kernel reports SO_RCVBUF = %d", rcvbuf)
	if rcvbuf > 16<<10 {
		t.Fatalf("ReceiveBufferBytes() = %d, want a tiny buffer", rcvbuf)
	}
	mem := memoryBlock(t)
	// Each queued uevent costs several hundred bytes of socket memory, so this many
	// overflow the queue many times over. Kept small on purpose: every listener on the
	// host receives them, and other test packages may be listening with default buffers.
	flood := rcvbuf/64 + 32

	// overflow writes a flood of synthetic events without reading, then reads until
	// ErrOverflow. Reading every flooded event instead means the loss went unreported.
	overflow := func(round string) {
		t.Helper()
		id := uuid.NewString()
		for range flood {
			trigger(t, mem, "change "+id)
		}
		ctx, cancel := context.WithTimeout(t.Context(), guard)
		defer cancel()
		seen := 0
		for {
			ev, err := c.Read(ctx)
			if errors.Is(err, ErrOverflow) {
				t.Logf("%s: ErrOverflow after reading %d of %d flooded events", round, seen, flood)
				return
			}
			if err != nil {
				t.Fatalf("%s: Read = %v, want ErrOverflow", round, err)
			}
			if hasUUID(id)(&ev) {
				if seen++; seen == flood {
					t.Fatalf("%s: read all %d flooded events without ErrOverflow", round, flood)
				}
			}
		}
	}
	overflow("first flood")
	// The kernel reports ENOBUFS once per congestion and only ends the congestion
	// when the queue is empty: this second overflow is reported only because Read
	// emptied the queue when it returned ErrOverflow.
	overflow("second flood")

	// The Conn keeps working. Another process's burst of uevents may overflow the tiny
	// queue again: then send another marker.
	for attempt := 1; ; attempt++ {
		id := uuid.NewString()
		trigger(t, mem, "change "+id)
		ctx, cancel := context.WithTimeout(t.Context(), guard)
		var err error
		for {
			var ev Event
			if ev, err = c.Read(ctx); err != nil || hasUUID(id)(&ev) {
				break
			}
		}
		cancel()
		if err == nil {
			break
		}
		if !errors.Is(err, ErrOverflow) || attempt == 5 {
			t.Fatalf("Read after overflow = %v, want the marker event", err)
		}
	}
	if len(rejects) != 0 {
		t.Errorf("OnReject called with %q, want no rejects", rejects)
	}
}

// ReadQueued returns what the queue holds without waiting, then ok=false; a queue that
// overflowed is ErrOverflow, as from Read.
// readQueued calls c.ReadQueued until it returns no event (1,000 times at most) and returns how
// many of the events it returned carry SYNTH_UUID id (other processes' uevents may come between).
func readQueued(t *testing.T, c *Conn, id string) int {
	t.Helper()
	n := 0
	for range 1000 {
		ev, ok, err := c.ReadQueued()
		if err != nil {
			t.Fatalf("ReadQueued: %v", err)
		}
		if !ok {
			break
		}
		if hasUUID(id)(&ev) {
			n++
		}
	}
	return n
}

// TestIntegrationReadQueuedFlood: a sender flooding the uevent group cannot keep ReadQueued from
// returning: after maxQueuedDrops dropped datagrams it returns ok=false, the rest stay queued,
// and the kernel's uevent after them is still read.
func TestIntegrationReadQueuedFlood(t *testing.T) {
	testenv.LockCPUs(t) // no other package's uevent storm while this one reads real events
	requireRoot(t, "send to the uevent multicast group (CAP_NET_ADMIN) and write a uevent file")
	var drops int // OnReject runs on the reading goroutine: this one
	c := listen(t, Options{OnReject: func(string) { drops++ }})
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	defer unix.Close(s)
	mem := memoryBlock(t)
	forged := []byte("change@" + mem + "\x00ACTION=change\x00DEVPATH=" + mem + "\x00SUBSYSTEM=memory\x00SEQNUM=1\x00")
	const flood = 3 * maxQueuedDrops
	for range flood {
		if err := unix.Sendto(s, forged, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
			t.Fatalf("send forged uevent: %v", err)
		}
	}
	id := uuid.NewString()
	trigger(t, mem, "change "+id) // queued after the flood
	if readQueued(t, c, id) != 0 {
		t.Fatalf("ReadQueued dropped the whole flood (%d datagrams) in one call; want it to return after %d", drops, maxQueuedDrops)
	}
	if drops >= flood {
		t.Fatalf("ReadQueued returned no event after dropping all %d forged datagrams; want it to stop after %d", drops, maxQueuedDrops)
	}
	readUntil(t, c, hasUUID(id))
	if drops < flood {
		t.Errorf("%d datagrams dropped before the kernel's uevent; want the %d forged ones", drops, flood)
	}
}

func TestIntegrationReadQueued(t *testing.T) {
	testenv.LockCPUs(t) // no other package's uevent storm while this one reads real events
	requireRoot(t, "write uevent files in /sys")
	c := listen(t, Options{})
	mem := memoryBlock(t)
	id := uuid.NewString()
	for range 3 {
		trigger(t, mem, "change "+id) // sent before the write returns
	}
	readUntil(t, c, hasUUID(id))
	if queued := readQueued(t, c, id); queued != 2 {
		t.Errorf("ReadQueued returned %d of the 2 uevents queued after the one Read returned", queued)
	}
	if _, ok, err := c.ReadQueued(); ok || err != nil {
		t.Errorf("ReadQueued of an empty queue: ok=%v, %v; want neither an event nor an error", ok, err)
	}

	small := listen(t, Options{ReceiveBufferBytes: 1024})
	id = uuid.NewString()
	for range small.ReceiveBufferBytes()/64 + 32 {
		trigger(t, mem, "change "+id)
	}
	for {
		_, ok, err := small.ReadQueued()
		if errors.Is(err, ErrOverflow) {
			break
		}
		if err != nil || !ok {
			t.Fatalf("ReadQueued of an overflowed queue: ok=%v, %v; want ErrOverflow before the queue is empty", ok, err)
		}
	}
	c.Close()
	if _, _, err := c.ReadQueued(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadQueued after Close: %v; want an error wrapping net.ErrClosed", err)
	}
}

// A Conn with Options.Compact returns the kernel's uevents as one without it does, but for their
// fields: the same broadcast, read by both, differs in nothing else.
func TestIntegrationCompact(t *testing.T) {
	testenv.LockCPUs(t) // no other package's uevent storm while this one reads real events
	requireRoot(t, "write uevent files in /sys")
	full, compact := listen(t, Options{}), listen(t, Options{Compact: true})
	mem := memoryBlock(t)
	id := uuid.NewString()
	trigger(t, mem, "change "+id)
	want := readUntil(t, full, hasUUID(id))
	got := readUntil(t, compact, func(e *Event) bool { return e.Seqnum == want.Seqnum })
	wantView := view(&want)
	if len(wantView.Fields) == 0 {
		t.Fatalf("the uevent read without Compact has no fields: %v", want)
	}
	wantView.Fields = nil
	if diff := cmp.Diff(wantView, view(&got)); diff != "" {
		t.Errorf("compact event (-without Compact +with):\n%s", diff)
	}
	if v, ok := got.Get("SYNTH_UUID"); ok {
		t.Errorf("compact event: Get(SYNTH_UUID) = %q; want nothing kept", v)
	}
}
