package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/hotplug-agent/hotplug-agent/control"
)

// errFailed is returned when the agent answered but not every item succeeded: the results were
// printed, so main prints nothing more, and exits 1.
var errFailed = errors.New("not every item succeeded")

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
		"(callbacks may veto). Exit status 1 when not every item succeeded.")
	return &controlFlags{
		socket:  cmd.Flag("control.socket", "The agent's control socket.").Default(control.DefaultSocket).String(),
		json:    cmd.Flag("json", "Print the agent's JSON response.").Bool(),
		timeout: cmd.Flag("timeout", "Give up waiting for the agent after this long (callbacks may veto, each within its deadline).").Default("5m").Duration(),
		targets: cmd.Arg("target", "What to change: cpu N, memory N or memory-device ID, again and again.").
			PlaceHolder("cpu N | memory N | memory-device ID").HintOptions(control.KindCPU, control.KindMemory, control.KindMemoryDevice).Strings(),
	}
}

// runControl sends an online or offline request to the running agent and prints one line per
// item, like qemu-guest-agent's guest-set-vcpus and guest-set-memory-blocks report them.
func runControl(ctx context.Context, op string, f *controlFlags, stdout, stderr io.Writer) error {
	socket, asJSON, timeout := f.socket, f.json, f.timeout
	targets, err := parseTargets(*f.targets)
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
