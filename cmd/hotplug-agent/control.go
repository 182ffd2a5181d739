package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hotplug-agent/hotplug-agent/control"
)

// errFailed is returned when the agent answered but not every item succeeded: the results were
// printed, so main prints nothing more, and exits 1.
var errFailed = errors.New("not every item succeeded")

// runControl sends an online or offline request to the running agent and prints one line per
// item, like qemu-guest-agent's guest-set-vcpus and guest-set-memory-blocks report them.
func runControl(ctx context.Context, op string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(op, flag.ContinueOnError)
	socket := fs.String("control.socket", control.DefaultSocket, "the agent's control socket")
	asJSON := fs.Bool("json", false, "print the agent's JSON response")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up waiting for the agent after this long (callbacks may veto, each within its deadline)")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "usage: hotplug-agent %s [flags] <cpu N | memory N | memory-device ID>...\n\nFlags:\n", op)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return err
		}
		return usageError{err}
	}
	targets, err := parseTargets(fs.Args())
	if err != nil {
		return usageError{err}
	}
	req := control.Request{Op: op, Targets: targets}
	if err := req.Validate(); err != nil {
		return usageError{err}
	}
	if *timeout <= 0 {
		return usageError{fmt.Errorf("--timeout: %s: want a positive duration", *timeout)}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := control.Do(ctx, *socket, req)
	if err != nil {
		return err
	}
	if resp.Error != "" {
		return fmt.Errorf("the agent refused the request: %s", resp.Error)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(resp); err != nil {
			return err
		}
	}
	failed := len(resp.Results) != len(targets)
	for _, r := range resp.Results {
		if r.Response != control.Success {
			failed = true
		}
		if !*asJSON {
			fmt.Fprintln(stdout, resultLine(r))
		}
	}
	if failed {
		return errFailed
	}
	return nil
}

// parseTargets parses "cpu 1 memory 32 memory-device PNP0C80:00" (a kind, then its id, again and
// again).
func parseTargets(args []string) ([]control.Target, error) {
	if len(args) == 0 {
		return nil, errors.New("name what to change: cpu N, memory N or memory-device ID")
	}
	var out []control.Target
	for i := 0; i < len(args); i += 2 {
		kind := args[i]
		if strings.HasPrefix(kind, "-") {
			return nil, fmt.Errorf("%q: flags go before the targets", kind)
		}
		switch kind {
		case control.KindCPU, control.KindMemory, control.KindMemoryDevice:
		default:
			return nil, fmt.Errorf("%q: want cpu, memory or memory-device, each followed by its number or id", kind)
		}
		if i+1 >= len(args) {
			return nil, fmt.Errorf("%s: which one? (%s N)", kind, kind)
		}
		out = append(out, control.Target{Kind: kind, ID: args[i+1]})
	}
	return out, nil
}

// resultLine prints one result: "cpu 1: success", "memory 0: operation-failed: ... (EBUSY)",
// "cpu 1: operation-failed: vetoed by guard at query_remove: ...".
func resultLine(r control.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s", r.Kind, r.ID, r.Response)
	if r.Error != "" {
		fmt.Fprintf(&b, ": %s", r.Error)
	}
	if r.ErrorName != "" {
		fmt.Fprintf(&b, " (%s)", r.ErrorName)
	}
	return b.String()
}
