//go:build linux

// Command memload is the workload of the QEMU guests that measure how much hot-added memory can
// be unplugged again (e2e/planner_test.go, bench/): it keeps a share of the guest's memory in use
// the way a service does, so that unplugging has pages to move and the kernel has unmovable
// pages to place.
//
//   - Anonymous memory (movable: the kernel can migrate it off a block it offlines), a share of
//     MemTotal (-fraction, default 0.5) re-read every 100 ms, so it grows as memory is hot-added,
//     touched page by page. GET /target?bytes=N fixes it at N bytes instead (before a shrink:
//     what stays must fit), /target?fraction=F returns to a share.
//   - Unmovable kernel memory beside it: pipes filled with data (pipe buffers are allocated
//     without __GFP_MOVABLE, from the kernel zones, ZONE_NORMAL first), -unmovable (default 5%)
//     of the most anonymous memory it has held, as page tables, slab and socket buffers are for
//     a real service: they grow with it and are not given back when it shrinks.
//
// GET /status answers {"anon": bytes, "pipes": bytes, "target": bytes, "memtotal": bytes}. The
// guest forwards its port (-listen, default :19101) to the host.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	chunk     = 2 << 20 // anonymous memory is mapped and released in chunks
	pipeBytes = 1 << 20 // each pipe holds this much (F_SETPIPE_SZ)
)

type load struct {
	mu       sync.Mutex
	fraction float64
	fixed    int64 // > 0: a target in bytes instead of a fraction
	unmov    float64
	chunks   [][]byte
	pipes    [][2]int
	memtotal int64
	target   int64
}

func main() {
	listen := flag.String("listen", ":19101", "HTTP address")
	fraction := flag.Float64("fraction", 0.5, "share of MemTotal kept as anonymous memory")
	unmovable := flag.Float64("unmovable", 0.05, "pipe buffers per byte of anonymous memory")
	flag.Parse()
	var rl unix.Rlimit
	rl.Cur, rl.Max = 1<<16, 1<<16
	_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	l := &load{fraction: *fraction, unmov: *unmovable}
	http.HandleFunc("/target", func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		if b, err := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64); err == nil {
			l.fixed = max(b, 1)
		}
		if f, err := strconv.ParseFloat(r.URL.Query().Get("fraction"), 64); err == nil {
			l.fraction, l.fixed = f, 0
		}
		l.mu.Unlock()
		l.adjust()
		l.status(w)
	})
	http.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) { l.status(w) })
	go func() {
		for {
			l.adjust()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	fmt.Fprintln(os.Stderr, "memload: serving", *listen)
	if err := http.ListenAndServe(*listen, nil); err != nil {
		fmt.Fprintln(os.Stderr, "memload:", err)
		os.Exit(1)
	}
}

func (l *load) status(w http.ResponseWriter) {
	l.mu.Lock()
	defer l.mu.Unlock()
	json.NewEncoder(w).Encode(map[string]int64{"anon": int64(len(l.chunks)) * chunk, "pipes": int64(len(l.pipes)) * pipeBytes,
		"target": l.target, "memtotal": l.memtotal})
}

// adjust maps or releases anonymous memory and pipes until they match the target.
func (l *load) adjust() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.memtotal = memTotal()
	l.target = l.fixed
	if l.target == 0 {
		l.target = int64(float64(l.memtotal) * l.fraction)
	}
	want := int(l.target / chunk)
	for len(l.chunks) > want {
		c := l.chunks[len(l.chunks)-1]
		l.chunks = l.chunks[:len(l.chunks)-1]
		_ = unix.Munmap(c)
	}
	for len(l.chunks) < want {
		c, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			break
		}
		for i := 0; i < len(c); i += 4096 {
			c[i] = 1
		}
		l.chunks = append(l.chunks, c)
	}
	wantPipes := int(float64(len(l.chunks)*chunk) * l.unmov / pipeBytes)
	buf := make([]byte, 64<<10)
	for len(l.pipes) < wantPipes {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
			break
		}
		_, _ = unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, pipeBytes)
		for n := 0; n < pipeBytes; {
			m, err := unix.Write(p[1], buf)
			if err != nil || m <= 0 {
				break
			}
			n += m
		}
		l.pipes = append(l.pipes, p)
	}
}

// memTotal returns MemTotal of /proc/meminfo in bytes.
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
