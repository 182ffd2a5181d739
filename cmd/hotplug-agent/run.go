package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/hotplug-agent/hotplug-agent/agent"
	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/control"
	"github.com/hotplug-agent/hotplug-agent/online"
	"github.com/hotplug-agent/hotplug-agent/web"
)

// DefaultListenAddress is the HTTP API's default address. Port 19100 lies outside the range
// 9100-9999 that Prometheus allocates to exporters (it is fully allocated), below Linux's
// ephemeral ports, and easy to place: node_exporter's 9100 plus 10000.
const DefaultListenAddress = ":19100"

// DefaultStatePath is under the StateDirectory= of the systemd unit: root's default. Another
// user's is under its own state directory (see userDefaults).
const DefaultStatePath = "/var/lib/hotplug-agent/state.json"

// DefaultReceiveBufferBytes matches systemd-udevd's 128 MiB: a limit, not an allocation, large
// enough that a 1 TiB memory hot-add (16,384 block uevents) fits while the agent catches up.
const DefaultReceiveBufferBytes = 128 << 20

func runAgent(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var listen listFlag
	fs.Var(&listen, "web.listen-address", "address of the HTTP API (/metrics, /interfaces, /events, /healthz); repeatable (default "+DefaultListenAddress+")")
	webConfig := fs.String("web.config.file", "", "exporter-toolkit web configuration file: TLS and basic auth for every endpoint")
	systemdSocket := fs.Bool("web.systemd-socket", false, "serve on the sockets systemd passes (socket activation) instead of --web.listen-address")
	sysfsPath := fs.String("path.sysfs", "/sys", "sysfs mount point")
	procfsPath := fs.String("path.procfs", "/proc", "procfs mount point (its iomem shows virtio-mem devices)")
	rcvbuf := fs.Int("netlink.receive-buffer-bytes", DefaultReceiveBufferBytes, "netlink receive buffer size (SO_RCVBUFFORCE when permitted, else SO_RCVBUF; 0 keeps the kernel default)")
	defState, defSocket := userDefaults(os.Geteuid(), os.Getenv)
	statePath := fs.String("path.state", defState, "file that keeps the announced interfaces and the last event ID across restarts; empty keeps none. By user: root "+DefaultStatePath+", others $XDG_STATE_HOME/hotplug-agent/state.json (else under ~/.local/state)")
	history := fs.Int("web.stream-history", 4096, "notifications /events keeps for clients that resume with Last-Event-ID")
	maxSubscribers := fs.Int("web.max-stream-subscribers", web.DefaultMaxStreamSubscribers, "most /events subscribers at once; one more is answered 503 and counted in hotplug_agent_http_refused_total")
	maxConns := fs.Int("web.max-connections", web.DefaultMaxConnections, "most HTTP connections open at once, /events streams included; one more is answered 503 and closed, and counted in hotplug_agent_http_refused_total. Lowered at start to what the descriptor limit (ulimit -n) holds beside those kept for callbacks and the state file")
	idle := fs.Duration("web.idle-timeout", agent.DefaultIdleTimeout, "close a keep-alive HTTP connection idle that long between requests (an /events stream is not idle)")
	configFile := fs.String("config.file", "", "YAML configuration file (callbacks); empty: log every notification")
	logLevel := fs.String("log.level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log.format", "logfmt", "log format: logfmt or json")
	controlSocket := fs.String("control.socket", defSocket, "Unix socket for hotplug-agent online/offline (mode 0600, root only); empty serves none. By user: root "+control.DefaultSocket+", others none")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *history < 1 {
		return usageError{fmt.Errorf("--web.stream-history: %d: want at least 1", *history)}
	}
	if *maxSubscribers < 1 {
		return usageError{fmt.Errorf("--web.max-stream-subscribers: %d: want at least 1", *maxSubscribers)}
	}
	if *maxConns < 1 {
		return usageError{fmt.Errorf("--web.max-connections: %d: want at least 1", *maxConns)}
	}
	if *idle <= 0 {
		return usageError{fmt.Errorf("--web.idle-timeout: %s: want a positive duration", *idle)}
	}
	if *rcvbuf < 0 {
		return usageError{fmt.Errorf("--netlink.receive-buffer-bytes: %d is negative", *rcvbuf)}
	}
	logger, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return usageError{err}
	}
	cfg := &config.Config{}
	if *configFile != "" {
		if cfg, err = config.Load(*configFile); err != nil {
			return err
		}
	}
	iomem := filepath.Join(*procfsPath, "iomem")
	if euid := os.Geteuid(); euid != 0 {
		// /proc/iomem shows its addresses only to CAP_SYS_ADMIN: the line below says that
		// virtio-mem devices are left out, and the memory-device reader need not say it again.
		iomem = ""
		logWithoutRoot(logger, euid, *statePath, *controlSocket, cfg.Online.Policy())
	}
	a, err := agent.New(agent.Options{
		SysfsPath:            *sysfsPath,
		IOMemPath:            iomem,
		ListenAddresses:      listen.or(DefaultListenAddress),
		SystemdSocket:        *systemdSocket,
		StatePath:            *statePath,
		StreamHistory:        *history,
		MaxStreamSubscribers: *maxSubscribers,
		MaxConnections:       *maxConns,
		IdleTimeout:          *idle,
		WebConfigFile:        *webConfig,
		ReceiveBufferBytes:   *rcvbuf,
		Config:               cfg,
		Version:              version,
		Logger:               logger,
		ControlSocket:        *controlSocket,
		// The default path may be taken (another agent) or read-only (a unit without
		// RuntimeDirectory=): the agent then runs without it; a path asked for must work.
		ControlSocketOptional: !flagSet(fs, "control.socket"),
	})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// userDefaults returns the defaults of --path.state and --control.socket for a process running
// as euid, with getenv reading its environment. Root gets the system's paths (the systemd unit's
// StateDirectory= and RuntimeDirectory=). Another user may write neither, so that
// `hotplug-agent run` works with no flags: its state file is in its own state directory
// ($XDG_STATE_HOME, else ~/.local/state), or nowhere without a home, and it serves no control
// socket, since what the socket serves, taking CPUs and memory online and offline, needs root.
func userDefaults(euid int, getenv func(string) string) (statePath, controlSocket string) {
	if euid == 0 {
		return DefaultStatePath, control.DefaultSocket
	}
	// The XDG Base Directory specification: a relative path in these variables is invalid and
	// must be ignored.
	if dir := getenv("XDG_STATE_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "hotplug-agent", "state.json"), ""
	}
	if home := getenv("HOME"); filepath.IsAbs(home) {
		return filepath.Join(home, ".local", "state", "hotplug-agent", "state.json"), ""
	}
	return "", ""
}

// logWithoutRoot says, in one line at start, what an agent running as euid, not root, does not
// do: what it announces is complete, but it cannot act on hotplug, and its netlink receive
// buffer is capped.
func logWithoutRoot(log *slog.Logger, euid int, statePath, controlSocket string, policy online.Policy) {
	var cannot []string
	if policy.CPU != online.None || policy.Memory != online.None {
		cannot = append(cannot, fmt.Sprintf("the online policy (cpu %s, memory %s) will fail: the CPU and memory online files in sysfs are root's", policy.CPU, policy.Memory))
	}
	if controlSocket == "" {
		cannot = append(cannot, "no control socket: hotplug-agent online and offline need an agent running as root")
	}
	cannot = append(cannot, "virtio-mem devices are not grouped for memory_devices registrations: /proc/iomem shows their addresses only to CAP_SYS_ADMIN (ACPI DIMMs are grouped)")
	cannot = append(cannot, "the netlink receive buffer is capped by net.core.rmem_max (SO_RCVBUFFORCE needs CAP_NET_ADMIN): a large hotplug may overflow it and be followed by a rescan")
	state := statePath
	if state == "" {
		state = "none (set --path.state, or HOME)"
	}
	log.Warn("not running as root: hotplug is announced, but the agent cannot act on it",
		"uid", euid, "state_file", state, "without_root", strings.Join(cannot, "; "))
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log.level: %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "logfmt", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log.format: %q: want logfmt or json", format)
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty address")
	}
	*l = append(*l, v)
	return nil
}

// or returns the values given, or def when none was.
func (l listFlag) or(def string) []string {
	if len(l) == 0 {
		return []string{def}
	}
	return l
}
