//go:build linux

// Command unplug-guest drives TestUnplugWithProgress from inside the QEMU guest, where there is
// no shell: the init starts it beside the agent. It says "UNPLUG ready" and waits for the test
// to hot-add three DIMMs (memory blocks 32-33, 34-37 and 38-39 of a guest of 512 MiB); onlines
// the first into ZONE_NORMAL and fills it with pipe pages, which the kernel cannot move; onlines
// the others into ZONE_MOVABLE; holds pages of the third in a pipe (vmsplice), so that the
// kernel retries their migration for ever; fills 192 MiB of the second; then runs `hotplug-agent offline memory-device` on
// each, as a user would, and prints each run as one line "UNPLUG result {json}". It ends with
// "UNPLUG done" (or "UNPLUG failed: why").
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	blockPages = 128 << 20 / 4096 // pages in a 128 MiB memory block
	normalPipe = 400              // pipes filled in ZONE_NORMAL
)

// run is one command's outcome, as the test reads it.
type run struct {
	Name   string   `json:"name"`
	Args   []string `json:"args"`
	Code   int      `json:"code"`
	Stdout string   `json:"stdout"`
	Stderr string   `json:"stderr"`
	// States are the blocks' states after the run, "32=online" ...
	States []string `json:"states"`
	// ElapsedMS is how long the command ran, on the guest's clock (a figure for the log).
	ElapsedMS int64 `json:"elapsed_ms"`
}

func say(format string, args ...any) {
	// One write per line: the kernel's console output must not cut it.
	os.Stdout.Write([]byte("UNPLUG " + fmt.Sprintf(format, args...) + "\n"))
}

func blockFile(n int) string { return fmt.Sprintf("/sys/devices/system/memory/memory%d/state", n) }

func states(from, to int) []string {
	var out []string
	for n := from; n <= to; n++ {
		b, _ := os.ReadFile(blockFile(n))
		out = append(out, fmt.Sprintf("%d=%s", n, strings.TrimSpace(string(b))))
	}
	return out
}

func main() {
	if err := drive(); err != nil {
		say("failed: %v", err)
	} else {
		say("done")
	}
	select {} // the init powers off when the agent exits, not this
}

func drive() error {
	say("ready")
	deadline := time.Now().Add(3 * time.Minute)
	for n := 32; n <= 39; n++ {
		for {
			if _, err := os.Stat(blockFile(n)); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("memory%d did not appear", n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The agent learns the blocks' devices from their add uevents: give it a moment.
	time.Sleep(2 * time.Second)
	online := func(zone string, blocks ...int) error {
		for _, n := range blocks {
			if err := os.WriteFile(blockFile(n), []byte(zone), 0); err != nil {
				return fmt.Errorf("memory%d: %s: %w", n, zone, err)
			}
		}
		return nil
	}
	if err := online("online_kernel", 32, 33); err != nil {
		return err
	}
	// ZONE_NORMAL was empty (the boot memory is all below 4 GiB): the kernel's allocations now
	// come from blocks 32-33 first. A pipe's pages are such allocations.
	for range normalPipe {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return fmt.Errorf("pipe: %w", err)
		}
		if _, err := unix.Write(p[1], make([]byte, 4096)); err != nil {
			return fmt.Errorf("fill a pipe: %w", err)
		}
	}
	// Movable allocations come from ZONE_MOVABLE first: while 38-39 are all of it, pages of a
	// fill land there.
	if err := online("online_movable", 38, 39); err != nil {
		return err
	}
	if err := holdPages(38, 39); err != nil {
		return err
	}
	if err := online("online_movable", 34, 35, 36, 37); err != nil {
		return err
	}
	// Memory in use where the offlines go: its pages are moved out first.
	fill, err := unix.Mmap(-1, 0, 192<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	for i := 0; i < len(fill); i += 4096 {
		fill[i] = 1
	}
	say("holding")

	offline := func(name string, args ...string) error {
		cmd := exec.Command("/bin/hotplug-agent", append([]string{"offline"}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			return err
		}
		if name == "cancel" {
			// The request cannot end by itself: the kernel retries the held pages for ever.
			time.Sleep(5 * time.Second)
			cmd.Process.Signal(os.Interrupt)
		}
		err := cmd.Wait()
		r := run{Name: name, Args: args, Stdout: stdout.String(), Stderr: stderr.String(), States: states(32, 39),
			ElapsedMS: time.Since(start).Milliseconds()}
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			r.Code = ee.ExitCode()
		} else if err != nil {
			return err
		}
		b, _ := json.Marshal(r)
		say("result %s", b)
		return nil
	}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"movable", []string{"memory-device", "PNP0C80:01"}},
		{"normal", []string{"memory-device", "PNP0C80:00"}},
		{"timeout", []string{"--timeout=10s", "memory-device", "PNP0C80:02"}},
		{"cancel", []string{"memory-device", "PNP0C80:02"}},
	} {
		if err := offline(c.name, c.args...); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	releasePages()
	return offline("released", "memory-device", "PNP0C80:02")
}

// held are the pipes that hold pages of the movable blocks.
var held [][2]int

// holdPages fills anonymous memory until some of its pages are in blocks first..last (movable
// allocations come from ZONE_MOVABLE first), and gives 16 of them to a pipe with vmsplice: the
// pipe keeps a reference, so the kernel can neither migrate them nor give up on them.
func holdPages(first, last int) error {
	pagemap, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return err
	}
	defer pagemap.Close()
	lo, hi := uint64(first*blockPages), uint64((last+1)*blockPages)
	seen := map[uint64]int{} // pages seen per block, for the error
	for range 16 {
		mem, err := unix.Mmap(-1, 0, 16<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return err
		}
		for i := 0; i < len(mem); i += 4096 {
			mem[i] = 1
		}
		base := uint64(uintptr(unsafe.Pointer(&mem[0])))
		entries := make([]byte, len(mem)/4096*8)
		if _, err := pagemap.ReadAt(entries, int64(base/4096*8)); err != nil {
			return fmt.Errorf("pagemap: %w", err)
		}
		var iov []unix.Iovec
		for i := 0; i < len(mem)/4096 && len(iov) < 16; i++ {
			e := binary.LittleEndian.Uint64(entries[i*8:])
			pfn := e & (1<<55 - 1)
			if e&(1<<63) != 0 {
				seen[pfn/blockPages]++
			}
			if e&(1<<63) != 0 && pfn >= lo && pfn < hi {
				v := unix.Iovec{Base: &mem[i*4096]}
				v.SetLen(4096)
				iov = append(iov, v)
			}
		}
		if len(iov) == 0 {
			continue // kept mapped: the next try finds other pages
		}
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return err
		}
		if _, err := unix.Vmsplice(p[1], iov, 0); err != nil {
			return fmt.Errorf("vmsplice: %w", err)
		}
		held = append(held, p)
		return nil
	}
	return fmt.Errorf("no page of 256 MiB of anonymous memory landed in memory%d-%d (pages per block: %v)", first, last, seen)
}

func releasePages() {
	for _, p := range held {
		syscall.Close(p[0])
		syscall.Close(p[1])
	}
	held = nil
}
