package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/udev"
)

// runMonitor prints one line per notification of a running agent, like `udevadm monitor`; with
// --kernel it prints the kernel's cpu and memory uevents instead, with no agent.
func runMonitor(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("monitor", flag.ContinueOnError)
	base := fs.String("url", "http://localhost"+DefaultListenAddress, "the agent's HTTP address")
	class := fs.String("class", "", "only this interface class: processor, memory or a GUID")
	existing := fs.Bool("include-existing", false, "first an arrival for every interface already active")
	asJSON := fs.Bool("json", false, "print each notification as the agent's JSON")
	kernel := fs.Bool("kernel", false, "listen to the kernel's cpu and memory uevents directly (no agent)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *class != "" {
		if _, err := notify.ParseClass(*class); err != nil {
			return usageError{fmt.Errorf("--class: %w", err)}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *kernel {
		return monitorKernel(ctx, stdout, stderr)
	}
	u, err := url.Parse(*base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{fmt.Errorf("--url %q: want http://host:port", *base)}
	}
	u = u.JoinPath("events")
	q := url.Values{}
	if *class != "" {
		q.Set("class", *class)
	}
	if *existing {
		q.Set("include_existing", "true")
	}
	u.RawQuery = q.Encode()
	return monitorAgent(ctx, u.String(), *asJSON, stdout, stderr)
}

// monitorAgent follows the event stream, reconnecting with backoff when it breaks.
func monitorAgent(ctx context.Context, u string, asJSON bool, stdout, stderr io.Writer) error {
	backoff := 100 * time.Millisecond
	for {
		err := followStream(ctx, u, asJSON, stdout, stderr)
		if ctx.Err() != nil {
			return nil
		}
		fmt.Fprintf(stderr, "hotplug-agent monitor: %v; reconnecting in %s\n", err, backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func followStream(ctx context.Context, u string, asJSON bool, stdout, stderr io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	fmt.Fprintf(stderr, "hotplug-agent monitor: following %s\n", u)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if asJSON {
			fmt.Fprintln(stdout, data)
			continue
		}
		var n struct {
			Event          string `json:"event"`
			InterfaceClass string `json:"interface_class"`
			SymbolicLink   string `json:"symbolic_link"`
			CPU            *int   `json:"cpu"`
			MemoryBlock    *int   `json:"memory_block"`
			PhysStart      uint64 `json:"phys_start"`
			Size           uint64 `json:"size"`
			Node           *int   `json:"node"`
			Seqnum         uint64 `json:"seqnum"`
			Cause          string `json:"cause"`
			Error          string `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &n); err != nil {
			return fmt.Errorf("bad event %q: %w", data, err)
		}
		if n.Error != "" {
			return errors.New(n.Error)
		}
		detail := ""
		switch {
		case n.CPU != nil:
			detail = fmt.Sprintf("cpu %d", *n.CPU)
		case n.MemoryBlock != nil:
			detail = fmt.Sprintf("block %d, 0x%x-0x%x", *n.MemoryBlock, n.PhysStart, n.PhysStart+n.Size-1)
		}
		if n.Node != nil {
			detail += fmt.Sprintf(", node %d", *n.Node)
		}
		fmt.Fprintf(stdout, "%s %-8s %-9s %s (%s) seq=%d %s\n", time.Now().Format("15:04:05.000000"),
			strings.ToUpper(n.Event), n.InterfaceClass, n.SymbolicLink, detail, n.Seqnum, n.Cause)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

// monitorKernel prints the kernel's cpu and memory uevents as they come.
func monitorKernel(ctx context.Context, stdout, stderr io.Writer) error {
	conn, err := udev.Listen(udev.Options{})
	if err != nil {
		return err
	}
	defer conn.Close()
	fmt.Fprintln(stderr, "hotplug-agent monitor: listening to the kernel's cpu and memory uevents")
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
			ev.Action, ev.DevPath, ev.Subsystem, ev.Seqnum, synth)
	}
}
