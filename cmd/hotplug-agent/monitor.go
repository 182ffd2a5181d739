package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/hotplug-agent/hotplug-agent/client"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/udev"
)

// monitorFlags are the flags of `hotplug-agent monitor`.
type monitorFlags struct {
	url, class                     *string
	existing, json, kernel, device *bool
	retry                          *bool
	retries                        *int64
}

// addMonitorFlags defines the flags of monitor on cmd. --retries is an Int64, which parses
// integers, as run's numbers are: kingpin's Int parses a float, taking 0.5 for 0 (never give up).
func addMonitorFlags(cmd *kingpin.CmdClause) *monitorFlags {
	cmd.HelpLong("Follow a running agent's /events and print a line per notification, like udevadm monitor; " +
		"it reconnects when the stream breaks and resumes after the last notification it printed. " +
		"With --kernel, print the kernel's own CPU and memory uevents instead, with no agent.")
	return &monitorFlags{
		url:      cmd.Flag("url", "The agent's HTTP address.").Default("http://localhost" + DefaultListenAddress).String(),
		class:    cmd.Flag("class", "Only this interface class: processor, memory or a GUID.").PlaceHolder("CLASS").HintOptions("processor", "memory").String(),
		existing: cmd.Flag("include-existing", "First an arrival for every interface already active.").Bool(),
		json:     cmd.Flag("json", "Print each notification as the agent's JSON.").Bool(),
		kernel:   cmd.Flag("kernel", "Listen to the kernel's CPU and memory uevents directly (no agent).").Bool(),
		device:   cmd.Flag("memory-devices", "Follow whole memory devices (a DIMM, a virtio-mem plug) instead of CPUs and blocks.").Bool(),
		retry: cmd.Flag("retry", "Reconnect when the agent cannot be reached or the stream breaks; --no-retry exits 1 at the first failure (for scripts).").
			Default("true").Bool(),
		retries: cmd.Flag("retries", "Give up (exit 1) after this many failed attempts in a row; 0: never.").Default("0").PlaceHolder("N").Int64(),
	}
}

// runMonitor prints one line per notification of a running agent, like `udevadm monitor`; with
// --kernel it prints the kernel's cpu and memory uevents instead, with no agent.
func runMonitor(f *monitorFlags, stdout, stderr io.Writer) error {
	base, class, existing, asJSON, kernel, devices := f.url, f.class, f.existing, f.json, f.kernel, f.device
	if *class != "" {
		c, err := notify.ParseClass(*class)
		if err != nil {
			return usageError{fmt.Errorf("--class: %w", err)}
		}
		if *devices && c != notify.GUIDDeviceMemory {
			return usageError{fmt.Errorf("--class %s: --memory-devices are of class memory", *class)}
		}
	}
	if *f.retries < 0 {
		return usageError{fmt.Errorf("--retries: %d is negative", *f.retries)}
	}
	if *devices && *kernel {
		return usageError{fmt.Errorf("--memory-devices: the kernel's uevents are per block; not with --kernel")}
	}
	// The flags that shape what the agent sends change nothing in the kernel's uevents: given
	// with --kernel, they would be ignored without a word.
	if *kernel {
		for _, f := range []struct {
			set        bool
			flag, what string
		}{
			{*asJSON, "--json", "the kernel's uevents are printed as text"},
			{*class != "", "--class", "the kernel's uevents are not filtered by class"},
			{*existing, "--include-existing", "the kernel sends nothing for what is already online"},
		} {
			if f.set {
				return usageError{fmt.Errorf("%s: %s; not with --kernel", f.flag, f.what)}
			}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Once ctx is done the handler goes: a second signal ends the process at once, even when
	// shutting down is stuck writing to a stdout nobody reads.
	context.AfterFunc(ctx, stop)
	if *kernel {
		return monitorKernel(ctx, stdout, stderr)
	}
	filter, _ := client.ParseFilter(*class) // checked above
	var flags notify.Flags
	if *existing {
		flags |= notify.FlagIncludeExistingInterfaces
	}
	limit := int(*f.retries)
	if !*f.retry {
		limit = 1
	}
	return monitorAgent(ctx, *base, filter, flags, *devices, *asJSON, limit, stdout, stderr)
}

// hintNotRunning is the hint given when nothing answers at the agent's address.
const hintNotRunning = "is hotplug-agent run running?"

// connectHint says why an attempt failed, with a hint when nothing listens at the address (the
// agent is not running, or at another --url). base is shown as given: pass it without a password.
// What the server said is shown through printable.
func connectHint(base string, err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return fmt.Sprintf("cannot connect to %s (%v): %s", base, op.Err, hintNotRunning)
	}
	return printable(err.Error()) // it may quote the server: an answer's body, an error event
}

// monitorAgent follows the agent with the Go client, which reconnects with backoff, resumes
// after the last notification it printed and reconciles after an agent restart (those lines say
// cause "resync"), until ctx ends, or until limit attempts in a row failed (0: no limit). It
// blocks.
func monitorAgent(ctx context.Context, base string, filter client.Filter, flags notify.Flags, devices, asJSON bool, limit int, stdout, stderr io.Writer) error {
	// Only what the state changes below do not say already: inconsistencies, cut-offs.
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	shown := base // a URL that does not parse is refused by client.New, which does not show it
	if u, err := url.Parse(base); err == nil {
		shown = u.Redacted() // the password, if any, is not printed
	}
	following := strings.TrimSuffix(shown, "/") + "/events (class " + filter.String() + ")"
	if devices {
		following = strings.TrimSuffix(shown, "/") + "/events (memory devices)"
	}
	paint := colours(stdout)
	// OnStateChange runs on the client's goroutine and must not block or close the client:
	// giving up is handed to this goroutine.
	giveUp := make(chan error, 1)
	failed := 0
	c, err := client.New(base, client.Options{
		MemoryDevices: devices,
		Logger:        logger,
		OnStateChange: func(s client.StateChange) {
			switch s.State {
			case client.Connected:
				fmt.Fprintf(stderr, "hotplug-agent monitor: following %s\n", following)
			case client.Backoff:
				// A connection counts as a success once it delivered something: a server
				// that accepts and hangs up at once is a failure every time.
				if s.Received {
					failed = 0
				}
				failed++
				if limit > 0 && failed >= limit {
					select {
					case giveUp <- giveUpError(limit, failed, connectHint(shown, s.Err)):
					default:
					}
					return
				}
				fmt.Fprintf(stderr, "hotplug-agent monitor: %s; reconnecting in %s\n", connectHint(shown, s.Err), s.Delay.Round(time.Millisecond))
			}
		},
	})
	if err != nil {
		return usageError{fmt.Errorf("--url: %w", err)}
	}
	_, err = c.Register(filter, flags, func(_ context.Context, n notify.Notification) error {
		if asJSON {
			b, err := json.Marshal(n)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s\n", b)
			return err
		}
		_, err := fmt.Fprintln(stdout, paint.event(monitorLine(time.Now(), n), n.IsArrival()))
		return err
	})
	if err != nil {
		c.Close()
		return err
	}
	select {
	case <-ctx.Done():
		shutdown(c)
		return nil
	case err := <-giveUp:
		c.Close()
		return err
	}
}

// shutdownGrace is how long an interrupted monitor waits for the client to stop: a line being
// written to a stdout nobody reads (a full pipe, a terminal paused with Ctrl-S) never ends.
const shutdownGrace = 2 * time.Second

// shutdown stops c, waiting up to shutdownGrace. It says nothing: stderr may be blocked as well,
// and the client's own goroutine may be stuck writing a state change to it, so even Shutdown's
// deadline is not relied on.
func shutdown(c *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Shutdown(ctx)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// giveUpError says why monitor stops trying.
func giveUpError(limit, failed int, why string) error {
	if limit == 1 {
		return fmt.Errorf("%s (not retrying: --no-retry or --retries=1)", why)
	}
	return fmt.Errorf("%s (gave up after %d failed attempts in a row, --retries=%d)", why, failed, limit)
}

// monitorLine is one notification as `monitor` prints it. The agent's strings go through
// printable: a server's escape sequences must not reach the terminal.
func monitorLine(now time.Time, n notify.Notification) string {
	i := n.Interface
	detail := ""
	switch n.InterfaceClassGUID {
	case notify.GUIDDeviceProcessor:
		detail = fmt.Sprintf("cpu %d", i.Number)
	case notify.GUIDDeviceMemory:
		if i.IsMemoryDevice() {
			detail = fmt.Sprintf("device %s, blocks %s, %d MiB from 0x%x", printable(i.Device), printable(i.Blocks), i.Size>>20, i.PhysStart)
		} else {
			detail = fmt.Sprintf("block %d, 0x%x-0x%x", i.Number, i.PhysStart, i.PhysStart+i.Size-1)
		}
	}
	if i.Node >= 0 {
		detail += fmt.Sprintf(", node %d", i.Node)
	}
	return fmt.Sprintf("%s %-8s %-9s %s (%s) seq=%d %s", now.Format("15:04:05.000000"),
		strings.ToUpper(notify.EventName(n.Event)), notify.ClassName(n.InterfaceClassGUID), printable(n.SymbolicLinkName),
		detail, n.Seqnum, printable(string(n.Cause)))
}

// monitorKernel prints the kernel's cpu and memory uevents as they come. It asks for the agent's
// receive buffer (DefaultReceiveBufferBytes, SO_RCVBUFFORCE as root), as udevadm monitor asks for
// 128 MiB: with the kernel's default (208 KiB) a burst of a few hundred uevents overflows it
// while the lines are written.
func monitorKernel(ctx context.Context, stdout, stderr io.Writer) error {
	conn, err := udev.Listen(udev.Options{ReceiveBufferBytes: DefaultReceiveBufferBytes})
	if err != nil {
		return err
	}
	defer conn.Close()
	fmt.Fprintf(stderr, "hotplug-agent monitor: listening to the kernel's cpu and memory uevents (receive buffer %d bytes)\n", conn.ReceiveBufferBytes())
	for {
		ev, err := conn.Read(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, udev.ErrOverflow):
			fmt.Fprintln(stdout, "KERNEL overflow: uevents were lost")
			continue
		case err != nil:
			return err
		}
		if kind, _ := state.Classify(ev.Subsystem, ev.DevPath); kind == state.KindNone {
			continue
		}
		synth := ""
		if ev.Synthetic() {
			synth = " (synthetic)"
		}
		fmt.Fprintf(stdout, "KERNEL[%s] %-8s %s (%s) seq=%d%s\n", ev.ReadAt.Format("15:04:05.000000"),
			printable(ev.Action), ev.DevPath, ev.Subsystem, ev.Seqnum, synth)
	}
}

// printable returns s if it is printable ASCII, else s quoted: a uevent's value, or a string the
// agent sent, must not write control sequences to a terminal. (The DEVPATH and SUBSYSTEM printed are those Classify
// accepted.)
func printable(s string) string {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return strconv.Quote(s)
		}
	}
	return s
}
