//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotplug-agent/hotplug-agent/bench"
)

// StormResult is the figure of the uevent storm.
type StormResult struct {
	Machine Machine `json:"machine"`
	Command string  `json:"command"`
	// Written is the number of uevents written: add and online, in turn, on each memory block.
	Written int `json:"written"`
	Blocks  int `json:"blocks"`
	// ReceiveBufferBytes is SO_RCVBUF as the agent's socket reports it (twice what was set).
	ReceiveBufferBytes int64 `json:"receive_buffer_bytes"`
	// WriteTime is from the first write to the return of the last.
	WriteTime time.Duration `json:"write_ns"`
	// QueueEmpty is from the return of the last write to the agent's socket queue being empty
	// (Rmem 0 in /proc/net/netlink), polled every 100 µs.
	QueueEmpty time.Duration `json:"queue_empty_ns"`
	// Counted is from the return of the last write to the agent's metrics counting every
	// uevent, polled every 5 ms after the queue is empty: an upper bound of the drain time.
	Counted time.Duration `json:"counted_ns"`
	// Received is the increase of hotplug_agent_uevents_total{subsystem="memory"}.
	Received int64 `json:"received"`
	// Overflows is the increase of hotplug_agent_netlink_overflows_total, Drops that of the
	// socket's drop counter in /proc/net/netlink.
	Overflows int64 `json:"overflows"`
	Drops     int64 `json:"drops"`
	// CPU is the agent's CPU time from just before the first write to its queue being empty.
	CPU time.Duration `json:"cpu_ns"`
	// RSSBefore is the agent's VmRSS before the storm; Peak its VmHWM after.
	RSSBefore int64 `json:"rss_before_bytes"`
	Peak      int64 `json:"peak_rss_bytes"`
	RSSAfter  int64 `json:"rss_after_bytes"`
	// Resyncs is the increase of hotplug_agent_resyncs_total{reason="overflow"}.
	Resyncs int64 `json:"resyncs"`
	// KernelDefault is the same storm into an agent run with --netlink.receive-buffer-bytes=0
	// (the kernel's rmem_default), for comparison.
	KernelDefault *StormResult `json:"kernel_default,omitempty"`
}

func stormCmd(ctx context.Context, fs *flag.FlagSet, out *string) error {
	bin := fs.String("agent", "bin/hotplug-agent", "the agent binary (make build)")
	total := fs.Int("events", 16384, "uevents to write: what a 1 TiB hot-add in 128 MiB blocks produces (add and online of 8,192 blocks)")
	compare := fs.Bool("compare-default", true, "run the storm again into an agent at the kernel's default receive buffer")
	fs.Parse(os.Args[2:])
	if err := requireRoot(); err != nil {
		return err
	}
	unlock, err := lockCPUs(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	res, err := storm(ctx, *bin, *total)
	if err != nil {
		return err
	}
	res.Command = "hotplug-bench " + strings.Join(os.Args[1:], " ")
	if *compare {
		time.Sleep(time.Second)
		if res.KernelDefault, err = storm(ctx, *bin, *total, "--netlink.receive-buffer-bytes=0"); err != nil {
			return err
		}
		k := res.KernelDefault
		fmt.Printf("storm at the kernel's default buffer (%d bytes): received %d, overflows %d, resyncs %d, drops %d\n",
			k.ReceiveBufferBytes, k.Received, k.Overflows, k.Resyncs, k.Drops)
	}
	res.Machine.done()
	return save(*out, "storm", res)
}

// storm writes total uevents into a fresh agent started with args, and measures.
func storm(ctx context.Context, bin string, total int, args ...string) (*StormResult, error) {
	res := &StormResult{Machine: machine(), Written: total}
	blocks, err := memoryBlocks()
	if err != nil {
		return nil, err
	}
	res.Blocks = len(blocks)
	fds := make([]int, len(blocks))
	for i, b := range blocks {
		p := fmt.Sprintf("/sys/devices/system/memory/memory%d/uevent", b)
		if fds[i], err = unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0); err != nil {
			return nil, fmt.Errorf("open %s: %w", p, err)
		}
		defer unix.Close(fds[i])
	}

	dir, err := os.MkdirTemp("", "hotplug-bench-storm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// The agent as installed: default receive buffer (128 MiB, SO_RCVBUFFORCE as root), default
	// configuration (the log callback on; the storm's uevents announce nothing).
	a, err := startAgentProc(ctx, bin, filepath.Join(dir, "agent.log"), args...)
	if err != nil {
		return nil, err
	}
	defer a.stop()
	inodes, err := socketInodes(a.pid)
	if err != nil {
		return nil, err
	}
	q0, ok, err := readNetlink(inodes)
	if err != nil || !ok {
		return nil, fmt.Errorf("the agent's uevent socket is not in /proc/net/netlink: %v", err)
	}
	time.Sleep(time.Second) // let start-up settle
	m0, err := a.scrape()
	if err != nil {
		return nil, err
	}
	res.ReceiveBufferBytes = rcvbuf(a.log.Name())
	mem0, err := bench.ReadMemory(a.pid)
	if err != nil {
		return nil, err
	}
	res.RSSBefore = mem0.RSS
	cpu0, err := bench.CPUTime(a.pid)
	if err != nil {
		return nil, err
	}

	add, online := []byte("add"), []byte("online")
	start := time.Now()
	for i := range total {
		msg := add
		if i%2 == 1 {
			msg = online
		}
		if _, err := unix.Pwrite(fds[(i/2)%len(fds)], msg, 0); err != nil {
			return nil, fmt.Errorf("write uevent %d: %w", i, err)
		}
	}
	last := time.Now()
	res.WriteTime = last.Sub(start)

	// The drain: the socket's queue, from the outside, without touching the agent.
	for {
		q, _, err := readNetlink(inodes)
		if err != nil {
			return nil, err
		}
		if q.Rmem == 0 {
			res.QueueEmpty = time.Since(last)
			break
		}
		if time.Since(last) > 30*time.Second {
			return nil, errors.New("the agent's queue did not empty within 30 s")
		}
		time.Sleep(100 * time.Microsecond)
	}
	// The CPU time now, before any scrape adds to it.
	cpu1, err := bench.CPUTime(a.pid)
	if err != nil {
		return nil, err
	}
	res.CPU = cpu1 - cpu0
	// Then the agent's own count, every 5 ms (lost uevents never arrive: give up after 2 s).
	memory := map[string]string{"subsystem": "memory"}
	var m1 = m0
	for {
		if m1, err = a.scrape(); err != nil {
			return nil, err
		}
		got := int64(sum(m1, "hotplug_agent_uevents_total", memory) - sum(m0, "hotplug_agent_uevents_total", memory))
		if got >= int64(total) || time.Since(last) > res.QueueEmpty+2*time.Second {
			res.Counted = time.Since(last)
			res.Received = got
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mem1, err := bench.ReadMemory(a.pid)
	if err != nil {
		return nil, err
	}
	res.Peak, res.RSSAfter = mem1.Peak, mem1.RSS
	res.Overflows = int64(sum(m1, "hotplug_agent_netlink_overflows_total", nil) - sum(m0, "hotplug_agent_netlink_overflows_total", nil))
	overflow := map[string]string{"reason": "overflow"}
	res.Resyncs = int64(sum(m1, "hotplug_agent_resyncs_total", overflow) - sum(m0, "hotplug_agent_resyncs_total", overflow))
	q1, _, err := readNetlink(inodes)
	if err != nil {
		return nil, err
	}
	res.Drops = q1.Drops - q0.Drops
	if err := a.stop(); err != nil {
		return nil, fmt.Errorf("agent exit: %w", err)
	}
	res.Machine.done()
	fmt.Printf("storm: %d uevents written in %s; received %d, lost %d (overflows %d, drops %d); queue empty %s and counted %s after the last write; agent CPU %s; RSS %.1f MiB before, peak %.1f MiB (load %s -> %s)\n",
		res.Written, ms(res.WriteTime), res.Received, int64(res.Written)-res.Received, res.Overflows, res.Drops,
		ms(res.QueueEmpty), ms(res.Counted), ms(res.CPU), mib(res.RSSBefore), mib(res.Peak),
		res.Machine.LoadBefore, res.Machine.LoadAfter)
	return res, nil
}

// memoryBlocks lists the memory block numbers of this machine.
func memoryBlocks() ([]int, error) {
	ents, err := os.ReadDir("/sys/devices/system/memory")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		if s, ok := strings.CutPrefix(e.Name(), "memory"); ok {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no memory blocks in /sys/devices/system/memory")
	}
	slices.Sort(out)
	return out, nil
}

// rcvbuf reads the receive buffer the agent logged at start ("rcvbuf_bytes"); 0 if it did not.
func rcvbuf(logPath string) int64 {
	b, _ := os.ReadFile(logPath)
	for _, l := range strings.Split(string(b), "\n") {
		if _, v, ok := strings.Cut(l, `"receive_buffer_bytes":`); ok {
			v, _, _ = strings.Cut(v, ",")
			v, _, _ = strings.Cut(v, "}")
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
