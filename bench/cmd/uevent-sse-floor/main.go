//go:build linux

// Command uevent-sse-floor is the floor of the QEMU benchmark (hotplug-bench qemu): the least a
// program can do to turn a kernel uevent into a line on an HTTP event stream. It reads the raw
// kernel broadcast (NETLINK_KOBJECT_UEVENT, group 1) with a blocking recvmsg on a thread of its
// own and, for each uevent the kernel sent, writes one Server-Sent Events line to every
// subscriber of /events and flushes it, from that same thread: no sysfs read, no queue, no
// goroutine hand-off, no JSON library.
//
//	uevent-sse-floor [-listen :19101]
//
// Each line is
//
//	data: {"action":"online","devpath":"/devices/system/cpu/cpu1","seqnum":1234,"read_at":"<RFC 3339>"}
//
// with read_at the wall-clock time just after recvmsg returned. /healthz answers 200 once the
// socket is bound. In the guest it is started by hotplug-guest-init as a helper, without
// arguments, beside the agent.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// DefaultListen is the address served when -listen is not given.
const DefaultListen = ":19101"

func main() {
	listen := flag.String("listen", DefaultListen, "HTTP address of /events and /healthz")
	flag.Parse()
	fd, err := openSocket()
	if err != nil {
		log.Fatalf("uevent-sse-floor: %v", err)
	}
	s := &server{subs: map[*subscriber]struct{}{}}
	go s.read(fd)
	mux := http.NewServeMux()
	mux.HandleFunc("/events", s.events)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	fmt.Fprintf(os.Stderr, "uevent-sse-floor: listening on %s\n", *listen)
	log.Fatal(http.ListenAndServe(*listen, mux))
}

// openSocket opens a blocking uevent socket on the kernel's broadcast group, with a 16 MiB
// buffer (forced where allowed) so that a burst of memory blocks is not lost.
func openSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<20)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
	}
	return fd, nil
}

type server struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

// subscriber is one /events stream; its writer is used only under server.mu while the handler
// waits for the request to end.
type subscriber struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	dead bool
}

// read is the loop: recvmsg, note the time, write the line to every subscriber, flush.
func (s *server) read(fd int) {
	runtime.LockOSThread()
	buf := make([]byte, 16<<10)
	var line []byte
	for {
		n, _, _, from, err := unix.Recvmsg(fd, buf, nil, 0)
		at := time.Now()
		if err != nil {
			continue // EINTR, or ENOBUFS: the floor reports what it reads
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not the kernel
		}
		line = appendLine(line[:0], buf[:n], at)
		s.mu.Lock()
		for sub := range s.subs {
			if sub.dead {
				continue
			}
			if _, err := sub.w.Write(line); err != nil {
				sub.dead = true
				continue
			}
			if sub.rc.Flush() != nil {
				sub.dead = true
			}
		}
		s.mu.Unlock()
	}
}

// appendLine appends the SSE line of the uevent datagram b, read at at.
func appendLine(line, b []byte, at time.Time) []byte {
	var action, devpath, seqnum []byte
	for _, f := range bytes.Split(b, []byte{0}) {
		k, v, ok := bytes.Cut(f, []byte("="))
		if !ok {
			continue
		}
		switch string(k) {
		case "ACTION":
			action = v
		case "DEVPATH":
			devpath = v
		case "SEQNUM":
			seqnum = v
		}
	}
	seq, _ := strconv.ParseUint(string(seqnum), 10, 64) // 0 when absent or malformed
	line = append(line, `data: {"action":`...)
	line = appendString(line, action)
	line = append(line, `,"devpath":`...)
	line = appendString(line, devpath)
	line = append(line, `,"seqnum":`...)
	line = strconv.AppendUint(line, seq, 10)
	line = append(line, `,"read_at":"`...)
	line = at.AppendFormat(line, time.RFC3339Nano)
	return append(line, "\"}\n\n"...)
}

// appendString appends s as a JSON string: quotes, backslashes and control characters escaped,
// invalid UTF-8 replaced by U+FFFD.
func appendString(line, s []byte) []byte {
	const hex = "0123456789abcdef"
	line = append(line, '"')
	for len(s) > 0 {
		r, n := utf8.DecodeRune(s)
		switch {
		case r == utf8.RuneError && n == 1:
			line = append(line, `\ufffd`...)
		case r == '"' || r == '\\':
			line = append(line, '\\', byte(r))
		case r < 0x20:
			line = append(line, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		default:
			line = append(line, s[:n]...)
		}
		s = s[n:]
	}
	return append(line, '"')
}

// events serves one stream until the client goes away.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	sub := &subscriber{w: w, rc: http.NewResponseController(w)}
	if err := sub.rc.Flush(); err != nil {
		return
	}
	s.mu.Lock()
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	<-r.Context().Done()
	s.mu.Lock()
	delete(s.subs, sub)
	s.mu.Unlock()
}
