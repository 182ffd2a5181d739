package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/hotplug-agent/hotplug-agent/control"
)

// errFailed is returned when the agent answered but not every item succeeded: the results were
// printed, so main prints nothing more, and exits 1.
var errFailed = errors.New("not every item succeeded")

// errStopped is returned when the request was cancelled (an interrupt) or its --timeout passed
// before every item was done: the results were printed, and main exits 3.
var errStopped = errors.New("the request was stopped before it was done")

// exitStopped is the exit status for errStopped.
const exitStopped = 3

// rollbackGrace is how long the command waits for the agent's answer beyond --timeout: the
// agent stops at the deadline, then brings back online what it had taken offline, and answers.
const rollbackGrace = time.Minute

// controlFlags are the flags and arguments of `hotplug-agent offline` and `online`.
type controlFlags struct {
	socket  *string
	json    *bool
	timeout *time.Duration
	targets *[]string
}

// addControlFlags defines the flags and arguments of offline or online on cmd.
func addControlFlags(cmd *kingpin.CmdClause) *controlFlags {
	cmd.HelpLong("Ask the running agent, over its control socket, to take CPUs, memory blocks or whole memory devices " + cmd.Model().Name +
		", and print one line per item: success, not-found, operation-not-supported or operation-failed and why " +
		"(callbacks may veto; the kernel's reason when it refuses a memory block), and the memory an offline freed. " +
		"A memory device goes block by block, with a line per block on standard error (kept to one line on a terminal); " +
		"when one block cannot go, the blocks already taken offline are brought back online. " +
		"An interrupt (Ctrl-C) cancels the request: the agent stops, undoes it and answers; a second interrupt stops waiting. " +
		"Exit status 1 when not every item succeeded, 3 when the request was cancelled or timed out.")
	return &controlFlags{
		socket:  cmd.Flag("control.socket", "The agent's control socket.").Default(control.DefaultSocket).String(),
		json:    cmd.Flag("json", "Print the agent's JSON response.").Bool(),
		timeout: cmd.Flag("timeout", "How long the agent may take; then it stops and undoes the request (callbacks may veto, each within its deadline).").Default("5m").Duration(),
		targets: cmd.Arg("target", "What to change: cpu N, memory N or memory-device ID, again and again.").
			PlaceHolder("cpu N | memory N | memory-device ID").HintOptions(control.KindCPU, control.KindMemory, control.KindMemoryDevice).Strings(),
	}
}

// runControl sends an online or offline request to the running agent and prints one line per
// item, like qemu-guest-agent's guest-set-vcpus and guest-set-memory-blocks report them, after
// the progress lines of memory devices on stderr. The first value on interrupts cancels the
// request (the agent undoes it and answers); a second stops waiting. It blocks until the agent
// answers, or --timeout and rollbackGrace pass.
func runControl(ctx context.Context, op string, f *controlFlags, interrupts <-chan os.Signal, stdout, stderr io.Writer) error {
	socket, asJSON, timeout := f.socket, f.json, f.timeout
	if *socket == "" {
		return usageError{errors.New("--control.socket: empty: want the agent's control socket")}
	}
	targets, err := parseTargets(*f.targets)
	if err != nil {
		return usageError{err}
	}
	if *timeout <= 0 {
		return usageError{fmt.Errorf("--timeout: %s: want a positive duration", *timeout)}
	}
	req := control.Request{Op: op, Targets: targets, TimeoutMS: timeout.Milliseconds()}
	if req.TimeoutMS == 0 || req.Timeout() > control.MaxTimeout {
		return usageError{fmt.Errorf("--timeout: %s: want 1ms to %s", *timeout, control.MaxTimeout)}
	}
	if err := req.Validate(); err != nil {
		return usageError{err}
	}
	ctx, cancel := context.WithTimeoutCause(ctx, *timeout+rollbackGrace,
		fmt.Errorf("the agent did not answer within --timeout=%s and %s more", *timeout, rollbackGrace))
	defer cancel()
	ctx, interrupted := context.WithCancelCause(ctx)
	defer interrupted(nil)

	cancelReq := make(chan struct{})
	answered := make(chan struct{})
	watched := make(chan struct{})
	pp := &progressPrinter{w: stderr, tty: isTerminal(stderr)}
	var printMu sync.Mutex // the progress lines and the interrupt's notice share stderr
	go func() {
		defer close(watched)
		select {
		case <-interrupts:
		case <-answered:
			return
		}
		close(cancelReq)
		printMu.Lock()
		pp.end()
		fmt.Fprintf(stderr, "hotplug-agent %s: cancelling: the agent stops and undoes the request (interrupt again to stop waiting)\n", op)
		printMu.Unlock()
		select {
		case <-interrupts:
			interrupted(errors.New("interrupted again: not waiting for the agent, which stops and undoes the request on its own"))
		case <-answered:
		}
	}()
	resp, err := control.DoWith(ctx, *socket, req, control.CallOptions{
		Progress: func(p control.Progress) {
			printMu.Lock()
			pp.show(p)
			printMu.Unlock()
		},
		Cancel: cancelReq,
	})
	close(answered)
	<-watched
	pp.end()
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return cause
		}
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
	// The agent answers one result per target, in order; an answer that does not (a peer that is
	// not the agent, or a broken one) fails, with a line for each target it leaves unanswered.
	failed := len(resp.Results) != len(targets)
	results := make([]bool, len(targets)) // the targets that have their result
	stopped := false
	freedItems := 0
	for i, r := range resp.Results {
		if i >= len(targets) || (control.Target{Kind: r.Kind, ID: r.ID}) != targets[i] {
			failed = true
			if !*asJSON {
				fmt.Fprintf(stdout, "%s: an answer for what was not asked\n", printable(r.Kind+" "+r.ID))
			}
			continue
		}
		results[i] = true
		if r.Response != control.Success {
			failed = true
		}
		if r.Stopped != "" {
			stopped = true
		}
		if r.FreedBytes > 0 {
			freedItems++
		}
		if !*asJSON {
			fmt.Fprintln(stdout, resultLine(r))
		}
	}
	for i, t := range targets {
		if !results[i] && !*asJSON {
			fmt.Fprintf(stdout, "%s: no answer from the agent\n", t)
		}
	}
	if !*asJSON && freedItems > 1 {
		fmt.Fprintf(stdout, "freed %s in all\n", formatBytes(resp.FreedBytes))
	}
	switch {
	case stopped:
		return errStopped
	case failed:
		return errFailed
	}
	return nil
}

// progressPrinter shows the progress lines of memory devices: on a terminal a block done is
// shown in place of the one before (a failure, a rollback and the last line stay); elsewhere
// every block has its line.
type progressPrinter struct {
	w       io.Writer
	tty     bool
	pending bool // a line shown in place is not ended yet
}

func (p *progressPrinter) show(pr control.Progress) {
	line := progressLine(pr)
	if p.tty && pr.Result == control.Success && !pr.Rollback {
		fmt.Fprintf(p.w, "\r\x1b[K%s", line)
		p.pending = true
		return
	}
	p.end()
	fmt.Fprintln(p.w, line)
}

// end ends a line shown in place.
func (p *progressPrinter) end() {
	if p.pending {
		fmt.Fprintln(p.w)
		p.pending = false
	}
}

// progressLine prints one block of a memory device:
// "memory-device PNP0C80:01: memory 37 offline (1 of 4, 128 MiB freed, 412 ms)",
// "memory-device PNP0C80:00: memory 32: operation-failed: sysfs: write ... (EBUSY)",
// "memory-device PNP0C80:00: memory 33 online again (rollback; 1 of 2 offline)".
func progressLine(p control.Progress) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: memory %d", control.KindMemoryDevice, p.Device, p.Block)
	switch {
	case p.Result != control.Success:
		if p.Rollback {
			b.WriteString(" (rollback)")
		}
		fmt.Fprintf(&b, ": %s", p.Result)
		if p.Error != "" {
			fmt.Fprintf(&b, ": %s", p.Error)
		}
		if p.ErrorName != "" {
			fmt.Fprintf(&b, " (%s)", p.ErrorName)
		}
	case p.Rollback:
		fmt.Fprintf(&b, " online again (rollback; %d of %d offline)", p.Done, p.Of)
	case p.State == control.OpOffline:
		fmt.Fprintf(&b, " offline (%d of %d, %s freed, %d ms)", p.Done, p.Of, formatBytes(p.FreedBytes), p.ElapsedMS)
	default:
		fmt.Fprintf(&b, " %s (%d of %d, %d ms)", p.State, p.Done, p.Of, p.ElapsedMS)
	}
	return b.String()
}

// formatBytes prints a size in the largest binary unit that keeps it readable: "512 MiB",
// "2 GiB", "1.5 GiB", "4096 bytes".
func formatBytes(n uint64) string {
	const mib, gib = 1 << 20, 1 << 30
	switch {
	case n >= gib && n%gib == 0:
		return fmt.Sprintf("%d GiB", n/gib)
	case n >= gib:
		return fmt.Sprintf("%.1f GiB", float64(n)/gib)
	case n >= mib && n%mib == 0:
		return fmt.Sprintf("%d MiB", n/mib)
	case n >= mib:
		return fmt.Sprintf("%.1f MiB", float64(n)/mib)
	}
	return fmt.Sprintf("%d bytes", n)
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
// "memory-device PNP0C80:01: success: 512 MiB freed (4 memory blocks)",
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
	if r.FreedBytes > 0 {
		if r.Response == control.Success {
			fmt.Fprintf(&b, ": %s freed (%d memory blocks)", formatBytes(r.FreedBytes), r.FreedBlocks)
		} else {
			fmt.Fprintf(&b, "; %s stays offline (%d memory blocks)", formatBytes(r.FreedBytes), r.FreedBlocks)
		}
	}
	return b.String()
}

// reloadFlags are the flags of `hotplug-agent reload`.
type reloadFlags struct {
	socket  *string
	timeout *time.Duration
}

// addReloadFlags defines the flags of reload on cmd.
func addReloadFlags(cmd *kingpin.CmdClause) *reloadFlags {
	cmd.HelpLong("Ask the running agent, over its control socket, to read its configuration file again and apply it: " +
		"callbacks added, removed or changed, the online policy. It returns once the new configuration is in force, " +
		"or fails with the agent's one line on why it refused it (the running configuration then stays). " +
		"SIGHUP does the same without an answer.")
	return &reloadFlags{
		socket:  cmd.Flag("control.socket", "The agent's control socket.").Default(control.DefaultSocket).String(),
		timeout: cmd.Flag("timeout", "Give up waiting for the agent after this long (callbacks removed get their grace to finish).").Default("1m").Duration(),
	}
}

// runReload asks the running agent to reload its configuration and says whether it did.
func runReload(ctx context.Context, f *reloadFlags, stdout io.Writer) error {
	if *f.timeout <= 0 {
		return usageError{fmt.Errorf("--timeout: %s: want a positive duration", *f.timeout)}
	}
	if *f.socket == "" {
		return usageError{errors.New("--control.socket: empty: want the agent's control socket")}
	}
	ctx, cancel := context.WithTimeout(ctx, *f.timeout)
	defer cancel()
	resp, err := control.Do(ctx, *f.socket, control.Request{Op: control.OpReload})
	if err != nil {
		return err
	}
	if resp.Error != "" {
		return fmt.Errorf("the agent kept its configuration: %s", resp.Error)
	}
	fmt.Fprintln(stdout, "reloaded")
	return nil
}
