// Command workerpool keeps one worker per processor that hotplug-agent reports online: it
// registers for processors with the existing ones included, starts a worker at each arrival and
// stops one at each removal, so that a hot-added CPU is put to work and a CPU taken away leaves no
// worker competing for the others. It also sets GOMAXPROCS to the pool's size.
//
//	go run ./examples/workerpool [-n COUNT] [URL]
//
// URL is the agent's address (default http://localhost:19100); -n stops after COUNT
// notifications beyond the existing processors (default: until SIGINT or SIGTERM). Each resize is
// one line on standard output:
//
//	removal cpu1 (uevent): 2 -> 1 workers
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hotplug-agent/hotplug-agent/client"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// Pool runs jobs on a number of workers that Resize changes. Its methods are safe for concurrent
// use.
type Pool struct {
	jobs chan func()
	done atomic.Int64

	mu      sync.Mutex
	workers []chan struct{} // each worker's stop channel
	wg      sync.WaitGroup
}

// NewPool returns a pool with no workers.
func NewPool() *Pool { return &Pool{jobs: make(chan func())} }

// Size returns the number of workers.
func (p *Pool) Size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.workers)
}

// Resize starts or stops workers until there are n, and returns how many there were. A worker
// stopped finishes its job first. It does not block.
func (p *Pool) Resize(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := len(p.workers)
	for len(p.workers) < n {
		stop := make(chan struct{})
		p.workers = append(p.workers, stop)
		p.wg.Add(1)
		go p.work(stop)
	}
	for len(p.workers) > n {
		last := len(p.workers) - 1
		close(p.workers[last])
		p.workers = p.workers[:last]
	}
	return was
}

func (p *Pool) work(stop <-chan struct{}) {
	defer p.wg.Done()
	for {
		select {
		case <-stop:
			return
		case job := <-p.jobs:
			job()
			p.done.Add(1)
		}
	}
}

// Submit hands job to a worker; it blocks until one takes it or ctx ends.
func (p *Pool) Submit(ctx context.Context, job func()) bool {
	select {
	case p.jobs <- job:
		return true
	case <-ctx.Done():
		return false
	}
}

// Close stops every worker and waits for them.
func (p *Pool) Close() {
	p.Resize(0)
	p.wg.Wait()
}

func main() {
	limit := flag.Int("n", 0, "stop after this many notifications beyond the existing processors (0: never)")
	flag.Parse()
	url := "http://localhost:19100"
	switch flag.NArg() {
	case 0:
	case 1:
		url = flag.Arg(0)
	default:
		fmt.Fprintln(os.Stderr, "usage: workerpool [-n COUNT] [URL]")
		os.Exit(2)
	}
	log.SetFlags(0)
	log.SetPrefix("workerpool: ")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := client.New(url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	pool := NewPool()
	online := map[int]bool{} // touched only by the callback: one registration's calls never overlap
	var seen atomic.Int64
	finished := make(chan struct{})
	reg, err := c.Register(client.Filter{Class: notify.GUIDDeviceProcessor}, notify.FlagIncludeExistingInterfaces,
		func(ctx context.Context, n notify.Notification) error {
			cpu := n.Interface.Number
			if n.Event == notify.GUIDDeviceInterfaceArrival {
				online[cpu] = true
			} else {
				delete(online, cpu)
			}
			was := pool.Resize(len(online))
			runtime.GOMAXPROCS(max(len(online), 1))
			fmt.Printf("%s cpu%d (%s): %d -> %d workers\n", notify.EventName(n.Event), cpu, n.Cause, was, len(online))
			if n.Cause != notify.CauseExisting && *limit > 0 && seen.Add(1) == int64(*limit) {
				close(finished)
			}
			return nil
		})
	if err != nil {
		log.Fatal(err)
	}
	if err := reg.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}
	log.Printf("registered for processor at %s", url)

	// The work: hashing, as many jobs at a time as there are workers.
	go func() {
		buf := make([]byte, 64<<10)
		for pool.Submit(ctx, func() { sha256.Sum256(buf) }) {
		}
	}()
	select {
	case <-ctx.Done():
	case <-finished:
	}
	stop()
	// When UnregisterEx returns, no callback runs any more: the pool is ours alone.
	if err := c.UnregisterEx(context.Background(), reg); err != nil {
		log.Print(err)
	}
	size := pool.Size()
	pool.Close()
	log.Printf("unregistered after %d notifications; %d workers ran %d jobs", seen.Load(), size, pool.done.Load())
}
