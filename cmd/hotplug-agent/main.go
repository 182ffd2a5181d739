// Command hotplug-agent bridges Linux CPU and memory hotplug to the Windows Plug and Play
// notification model. `hotplug-agent run` starts the agent; `hotplug-agent list` prints the
// CPUs and memory blocks present now.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"text/template"

	"github.com/alecthomas/kingpin/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const appHelp = `Turns the kernel's CPU and memory hotplug uevents into Windows Plug and Play device ` +
	`interface notifications (arrivals and removals of GUID_DEVICE_PROCESSOR and GUID_DEVICE_MEMORY), ` +
	`delivers them to callbacks (a log line, an exec command, a webhook) and to subscribers of its HTTP API, ` +
	`and exports Prometheus metrics.`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// cli is the command line: kingpin's application and the values its flags and arguments are
// parsed into, one set per command.
type cli struct {
	app     *kingpin.Application
	run     *runFlags
	list    *listFlags
	monitor *monitorFlags
	offline *controlFlags
	online  *controlFlags
	reload  *reloadFlags
}

// newCLI returns the command line of hotplug-agent: help and usage go to stdout, errors are
// returned by Parse (the few kingpin prints itself go to stderr). Its application calls
// terminate when it has printed all there is to print (help, the version, a man page, a
// completion script); terminate must not return.
func newCLI(stdout, stderr io.Writer, terminate func(code int)) *cli {
	app := kingpin.New("hotplug-agent", appHelp)
	app.UsageWriter(stdout).ErrorWriter(stderr)
	app.Terminate(terminate)
	app.HelpFlag.Short('h')
	app.Version("hotplug-agent " + version)
	app.VersionFlag.Help("Print the version.")
	// Flags go before the arguments (offline cpu 1), so that an argument that begins with a
	// dash, such as `memory -1`, is an argument to check, not a flag unknown.
	app.Interspersed(false)
	app.UsageFuncs(template.FuncMap{"Troff": troff, "Repeatable": repeatable, "ManDate": manDate, "Version": func() string { return version }})
	c := &cli{app: app}
	c.run = addRunFlags(app.Command("run", "Start the agent: the uevent listener, the callbacks and the HTTP API on --web.listen-address."))
	c.list = addListFlags(app.Command("list", "Print the CPUs and memory blocks present now, read from sysfs (no agent needed)."))
	c.monitor = addMonitorFlags(app.Command("monitor", "Print a running agent's notifications as they come (--kernel: the kernel's uevents)."))
	c.offline = addControlFlags(app.Command("offline", "Ask the running agent to take CPUs, memory blocks or memory devices offline: offline cpu 1 memory 32."))
	c.online = addControlFlags(app.Command("online", "Ask the running agent to bring CPUs, memory blocks or memory devices online: online cpu 1."))
	c.reload = addReloadFlags(app.Command("reload", "Ask the running agent to read its configuration file again and apply it (the systemd unit's ExecReload)."))
	app.Command("version", "Print the version.")
	return c
}

// exit is what terminate panics with: kingpin has printed what was asked, and the process
// ends with this code.
type exit int

// run executes the command line args and returns the exit code: 0 on success, 1 when the
// command failed, 2 for a usage error. Errors are one line on stderr.
func run(args []string, stdout, stderr io.Writer) (code int) {
	c := newCLI(stdout, stderr, func(code int) { panic(exit(code)) })
	if len(args) == 0 {
		c.app.UsageWriter(stderr)
		c.app.Usage(nil)
		return 2
	}
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(exit)
			if !ok {
				panic(r)
			}
			code = int(e)
			if code != 0 {
				code = 2 // kingpin ends with 1 on usage it cannot print, such as help for a command unknown
			}
		}
	}()
	command, err := c.app.Parse(args)
	if err != nil {
		name, msg := c.explain(args, err)
		if name == "" {
			fmt.Fprintf(stderr, "hotplug-agent: %s (see 'hotplug-agent --help')\n", msg)
		} else {
			fmt.Fprintf(stderr, "hotplug-agent %s: %s (see 'hotplug-agent %s --help')\n", name, msg, name)
		}
		return 2
	}
	switch command {
	case "run":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = runAgent(ctx, c.run, stderr)
	case "list":
		err = runList(c.list, stdout, stderr)
	case "monitor":
		err = runMonitor(c.monitor, stdout, stderr)
	case "offline", "online":
		f := c.offline
		if command == "online" {
			f = c.online
		}
		// The first interrupt cancels the request, the second stops waiting for the answer.
		interrupts := make(chan os.Signal, 2)
		signal.Notify(interrupts, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(interrupts)
		err = runControl(context.Background(), command, f, interrupts, stdout, stderr)
	case "reload":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = runReload(ctx, c.reload, stdout)
	case "version":
		fmt.Fprintf(stdout, "hotplug-agent %s\n", version)
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errFailed):
		return 1 // the per-item results say why
	case errors.Is(err, errStopped):
		return exitStopped // the per-item results say what was stopped
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "hotplug-agent %s: %v (see 'hotplug-agent %s --help')\n", command, ue.err, command)
		return 2
	default:
		fmt.Fprintf(stderr, "hotplug-agent %s: %v\n", command, err)
		return 1
	}
}

// usageError is a bad command line: exit code 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }

var (
	unknownCommandRE = regexp.MustCompile(`^expected command but got "(.*)"$`)
	unexpectedRE     = regexp.MustCompile(`^unexpected (?:argument '(.*)'|(.*))$`)
	unknownShortRE   = regexp.MustCompile(`^unknown short flag '-(.)'$`)
)

// explain returns the command that args name, if any, and what is wrong with them, from err,
// what kingpin's Parse returned: kingpin's message made plainer where it says less than it
// could. A value that does not parse is named with its flag, which kingpin leaves out.
func (c *cli) explain(args []string, err error) (command, msg string) {
	// Parse once more to learn the command (it has no effect but to parse).
	fresh := newCLI(io.Discard, io.Discard, func(int) {})
	pc, _ := fresh.app.ParseContext(args)
	if pc != nil && pc.SelectedCommand != nil {
		command = pc.SelectedCommand.FullCommand()
	}
	msg = err.Error()
	if m := unknownCommandRE.FindStringSubmatch(msg); m != nil {
		return command, fmt.Sprintf("unknown command %q", m[1])
	}
	if m := unexpectedRE.FindStringSubmatch(msg); m != nil {
		// Go's flag package took --json=false; kingpin's switches take no value.
		for _, a := range args {
			name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if f := fresh.flag(pc, name); ok && value == m[1]+m[2] && strings.HasPrefix(a, "--") && f != nil && f.Model().IsBoolFlag() {
				return command, fmt.Sprintf("%s: a switch takes no value: --%s or --no-%s", a, name, name)
			}
		}
		return command, fmt.Sprintf("unexpected argument %q", m[1]+m[2])
	}
	if m := unknownShortRE.FindStringSubmatch(msg); m != nil {
		// Go's flag package took -name for --name; kingpin reads it as short flags.
		for _, a := range args {
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "-"), "=")
			if strings.HasPrefix(a, "-"+m[1]) && len(name) > 1 && fresh.flag(pc, name) != nil {
				return command, fmt.Sprintf("%s: long flags take two dashes: -%s", a, a)
			}
		}
		return command, msg
	}
	if pc == nil {
		return command, msg
	}
	// A value kingpin could not set: set each flag of a fresh command line to find which.
	for _, el := range pc.Elements {
		f, ok := el.Clause.(*kingpin.FlagClause)
		if !ok || el.Value == nil {
			continue
		}
		if verr := f.Model().Value.Set(*el.Value); verr != nil {
			return command, fmt.Sprintf("--%s: %q: %s", f.Model().Name, *el.Value, valueProblem(verr))
		}
	}
	return command, msg
}

// flag returns the long flag name of the command pc selected, or of the application; nil if
// there is none.
func (c *cli) flag(pc *kingpin.ParseContext, name string) *kingpin.FlagClause {
	if f := c.app.GetFlag(name); f != nil {
		return f
	}
	if pc != nil && pc.SelectedCommand != nil {
		return pc.SelectedCommand.GetFlag(name)
	}
	return nil
}

// valueProblem says what is wrong with a flag's value, from the error of its Set.
func valueProblem(err error) string {
	var ne *strconv.NumError
	switch {
	case errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange):
		return "out of range"
	case errors.As(err, &ne):
		return "want a whole number"
	case strings.HasPrefix(err.Error(), "time: invalid duration"):
		return "want a duration such as 30s, 2m or 1h"
	}
	return err.Error()
}
