// Command hotplug-agent bridges Linux CPU and memory hotplug to the Windows Plug and Play
// notification model. `hotplug-agent run` starts the agent; `hotplug-agent list` prints the
// CPUs and memory blocks present now.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: hotplug-agent <command> [flags]

Commands:
  run       start the agent (uevent listener, callbacks, HTTP API on --web.listen-address)
  list      print the CPUs and memory blocks present now, read from sysfs (no agent needed)
  monitor   print a running agent's notifications as they come (--kernel: the kernel's uevents)
  offline   ask the running agent to take CPUs or memory blocks offline: offline cpu 1 memory 32
  online    ask the running agent to bring CPUs or memory blocks online: online cpu 1
  version   print the version

Run 'hotplug-agent <command> -h' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit code: 0 on success, 1 when the
// command failed, 2 for a usage error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = runAgent(ctx, args[1:], stderr)
	case "list":
		err = runList(args[1:], stdout, stderr)
	case "monitor":
		err = runMonitor(args[1:], stdout, stderr)
	case "offline", "online":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = runControl(ctx, args[0], args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "hotplug-agent %s\n", version)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "hotplug-agent: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errFailed):
		return 1 // the per-item results say why
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "hotplug-agent %s: %v (see 'hotplug-agent %s -h')\n", args[0], ue.err, args[0])
		return 2
	default:
		fmt.Fprintf(stderr, "hotplug-agent %s: %v\n", args[0], err)
		return 1
	}
}

// usageError is a bad command line: exit code 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// parseFlags parses args into fs, printing usage only when asked for it.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintf(stderr, "usage: hotplug-agent %s [flags]\n\nFlags:\n", fs.Name())
			fs.PrintDefaults()
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}
