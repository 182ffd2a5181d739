//go:build linux

package sysfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// interruptEvery is how often the writing thread is signalled once the context has ended, until
// its write returns: a signal sent just before the thread enters the kernel is handled before
// the write begins and interrupts nothing, so one signal is not enough.
const interruptEvery = 20 * time.Millisecond

// writeInterruptible writes v to the attribute p in one write(2) on a thread of its own, and
// when ctx ends before the kernel is done, sends that thread SIGURG (which the Go runtime
// handles and ignores) until the write returns: a kernel loop that checks signal_pending, such as
// offline_pages's, then gives up with EINTR. An EINTR while ctx is live (a signal not ours) is
// retried. It blocks until the write returns.
func writeInterruptible(ctx context.Context, p, v string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("sysfs: write %q to %s: not begun: %w", v, p, context.Cause(ctx))
	}
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sysfs: write %s: %w", p, err)
	}
	defer unix.Close(fd)

	// The thread must stay this goroutine's until the signaller has stopped: the signals are
	// for this write only.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid, tid := os.Getpid(), unix.Gettid()
	written := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-written:
			return
		case <-ctx.Done():
		}
		t := time.NewTicker(interruptEvery)
		defer t.Stop()
		for {
			unix.Tgkill(pid, tid, unix.SIGURG)
			select {
			case <-written:
				return
			case <-t.C:
			}
		}
	}()
	for {
		_, err = unix.Write(fd, []byte(v))
		if !errors.Is(err, unix.EINTR) || ctx.Err() != nil {
			break
		}
	}
	close(written)
	<-stopped
	switch {
	case errors.Is(err, unix.EINTR):
		return fmt.Errorf("sysfs: write %q to %s: stopped: %w (%w)", v, p, context.Cause(ctx), err)
	case err != nil:
		return fmt.Errorf("sysfs: write %q to %s: %w", v, p, err)
	}
	return nil
}
