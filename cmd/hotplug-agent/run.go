package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	toolkit "github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/hotplug-agent/hotplug-agent/agent"
	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/control"
	"github.com/hotplug-agent/hotplug-agent/headroom"
	"github.com/hotplug-agent/hotplug-agent/logging"
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

// runFlags are the flags of `hotplug-agent run`.
type runFlags struct {
	web            *toolkit.FlagConfig
	sysfs, procfs  *string
	rcvbuf         *int64
	reserve        *int64
	statePath      *string
	stateSet       bool
	history        *int64
	maxSubscribers *int64
	maxConns       *int64
	idle           *time.Duration
	configFile     *string
	logLevel       *promslog.Level
	logFormat      logging.Format
	logFormatSet   bool
	controlSocket  *string
	controlSet     bool
}

// addRunFlags defines the flags of run on cmd. The web flags are exporter-toolkit's, as
// node_exporter has them; the log flags take promslog's levels and formats, and the journal.
// Numbers are Int64, which parses integers: kingpin's Int parses a float, taking 2.9 for 2 and
// wrapping what overflows.
func addRunFlags(cmd *kingpin.CmdClause) *runFlags {
	cmd.HelpLong("Start the agent: it listens to the kernel's CPU and memory uevents, keeps the true state from sysfs, " +
		"announces arrivals and removals to the callbacks of --config.file, serves /metrics, /interfaces, /events, /memory and /healthz " +
		"on --web.listen-address, and tells systemd when it is ready (Type=notify) and that it is alive (WatchdogSec=). " +
		"Root is needed only to act on hotplug: as another user it announces everything and says in one warning what it cannot do.")
	f := &runFlags{logLevel: promslog.NewLevel(), logFormat: logging.Logfmt}
	f.web = kingpinflag.AddFlags(cmd, DefaultListenAddress)
	// exporter-toolkit's help speaks of vsock:// addresses, which the agent does not listen on.
	cmd.GetFlag("web.listen-address").Help("Address of the HTTP API (/metrics, /interfaces, /events, /memory, /healthz), host:port; repeatable.")
	cmd.GetFlag("web.config.file").PlaceHolder("FILE")
	f.sysfs = cmd.Flag("path.sysfs", "sysfs mount point.").Default("/sys").String()
	f.procfs = cmd.Flag("path.procfs", "procfs mount point (its iomem shows virtio-mem devices; meminfo, zoneinfo and kcore give the memory hot-add headroom, zoneinfo also the zones' sizes for the zone planner).").Default("/proc").String()
	f.rcvbuf = cmd.Flag("netlink.receive-buffer-bytes", "Netlink receive buffer size, up to 2147483647 (SO_RCVBUFFORCE when permitted, else SO_RCVBUF; 0 keeps the kernel default).").
		Default(strconv.Itoa(DefaultReceiveBufferBytes)).Int64()
	f.reserve = addReserveFlag(cmd)
	f.configFile = cmd.Flag("config.file", "YAML configuration file (callbacks, online policy); none: log every notification.").PlaceHolder("FILE").String()
	f.statePath = cmd.Flag("path.state", "File that keeps the announced interfaces and the last event ID across restarts; empty keeps none. "+
		"This default is root's; as another user it is $XDG_STATE_HOME/hotplug-agent/state.json, else ~/.local/state/hotplug-agent/state.json.").
		Default(DefaultStatePath).IsSetByUser(&f.stateSet).String()
	f.controlSocket = cmd.Flag("control.socket", "Unix socket for hotplug-agent online, offline and reload (mode 0600, root only); empty serves none. "+
		"This default is root's; as another user there is none.").
		Default(control.DefaultSocket).IsSetByUser(&f.controlSet).String()
	f.history = cmd.Flag("web.stream-history", "Notifications /events keeps for clients that resume with Last-Event-ID.").Default("4096").Int64()
	f.maxConns = cmd.Flag("web.max-connections", "Most HTTP connections open at once, /events streams included; one more is answered 503 and closed, "+
		"and counted in hotplug_agent_http_refused_total. Lowered at start to what the descriptor limit (ulimit -n) holds beside those kept for callbacks and the state file.").
		Default(strconv.Itoa(web.DefaultMaxConnections)).Int64()
	f.maxSubscribers = cmd.Flag("web.max-stream-subscribers", "Most /events subscribers at once; one more is answered 503 and counted in hotplug_agent_http_refused_total.").
		Default(strconv.Itoa(web.DefaultMaxStreamSubscribers)).Int64()
	f.idle = cmd.Flag("web.idle-timeout", "Close a keep-alive HTTP connection idle that long between requests (an /events stream is not idle).").
		Default(shortDuration(agent.DefaultIdleTimeout)).Duration()
	cmd.Flag(promslogflag.LevelFlagName, promslogflag.LevelFlagHelp).
		Default("info").HintOptions(promslog.LevelFlagOptions...).SetValue(levelValue{f.logLevel})
	cmd.Flag(promslogflag.FormatFlagName, "Log format: one of logfmt, json, journal (entries sent to journald natively). "+
		"Not given, the agent logs to the journal when stderr is the journal's stream (a systemd service's: JOURNAL_STREAM), else logfmt.").
		Default(string(logging.Logfmt)).HintOptions("logfmt", "json", "journal").IsSetByUser(&f.logFormatSet).SetValue(&f.logFormat)
	return f
}

// levelValue is --log.level: promslog's level, with an error that says what it wants.
type levelValue struct{ *promslog.Level }

func (l levelValue) Set(s string) error {
	if err := l.Level.Set(s); err != nil {
		return fmt.Errorf("want one of %s", strings.Join(promslog.LevelFlagOptions, ", "))
	}
	return nil
}

// runAgent runs the agent with the flags f until ctx ends, logging to stderr. Flags it cannot
// use are a usageError.
func runAgent(ctx context.Context, f *runFlags, stderr io.Writer) error {
	listen := *f.web.WebListenAddresses
	for _, a := range listen {
		if a == "" {
			return usageError{fmt.Errorf("--web.listen-address: empty address")}
		}
	}
	if *f.history < 1 {
		return usageError{fmt.Errorf("--web.stream-history: %d: want at least 1", *f.history)}
	}
	if *f.maxSubscribers < 1 {
		return usageError{fmt.Errorf("--web.max-stream-subscribers: %d: want at least 1", *f.maxSubscribers)}
	}
	if *f.maxConns < 1 {
		return usageError{fmt.Errorf("--web.max-connections: %d: want at least 1", *f.maxConns)}
	}
	if *f.idle <= 0 {
		return usageError{fmt.Errorf("--web.idle-timeout: %s: want a positive duration", *f.idle)}
	}
	if *f.reserve < 0 {
		return usageError{fmt.Errorf("--memory.headroom-reserve-bytes: %d is negative", *f.reserve)}
	}
	if *f.rcvbuf < 0 {
		return usageError{fmt.Errorf("--netlink.receive-buffer-bytes: %d is negative", *f.rcvbuf)}
	}
	if *f.rcvbuf > math.MaxInt32 {
		// setsockopt takes an int: a larger size would be cut to its low 32 bits.
		return usageError{fmt.Errorf("--netlink.receive-buffer-bytes: %d: want at most %d (2 GiB less one byte; the kernel takes the size as a 32-bit int)", *f.rcvbuf, math.MaxInt32)}
	}
	statePath, controlSocket := *f.statePath, *f.controlSocket
	defState, defSocket := userDefaults(os.Geteuid(), os.Getenv, isDir)
	if !f.stateSet {
		statePath = defState
	}
	if !f.controlSet {
		controlSocket = defSocket
	}
	logger, _, err := f.logger(stderr, os.Getenv("JOURNAL_STREAM"), "")
	if err != nil {
		return usageError{fmt.Errorf("--log.format: %w", err)}
	}
	// Read again at each reload: a file given, or the defaults.
	loadConfig := func() (*config.Config, error) {
		if *f.configFile == "" {
			return &config.Config{}, nil
		}
		return config.Load(*f.configFile)
	}
	// SIGHUP reloads the configuration (and must not end the process): caught from now on.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	iomem := filepath.Join(*f.procfs, "iomem")
	if euid := os.Geteuid(); euid != 0 {
		// /proc/iomem shows its addresses only to CAP_SYS_ADMIN: the line below says that
		// virtio-mem devices are left out, and the memory-device reader need not say it again.
		iomem = ""
		logWithoutRoot(logger, euid, statePath, controlSocket, cfg.Online.Policy())
	}
	a, err := agent.New(agent.Options{
		SysfsPath:            *f.sysfs,
		IOMemPath:            iomem,
		ZoneinfoPath:         filepath.Join(*f.procfs, "zoneinfo"),
		BootIDPath:           filepath.Join(*f.procfs, "sys/kernel/random/boot_id"),
		ListenAddresses:      listen,
		SystemdSocket:        *f.web.WebSystemdSocket,
		StatePath:            statePath,
		StreamHistory:        int(*f.history),
		MaxStreamSubscribers: int(*f.maxSubscribers),
		MaxConnections:       int(*f.maxConns),
		IdleTimeout:          *f.idle,
		WebConfigFile:        *f.web.WebConfigFile,
		ReceiveBufferBytes:   int(*f.rcvbuf),
		Config:               cfg,
		Version:              version,
		Logger:               logger,
		ControlSocket:        controlSocket,
		// The default path may be taken (another agent) or read-only (a unit without
		// RuntimeDirectory=): the agent then runs without it; a path asked for must work.
		ControlSocketOptional: !f.controlSet,
		LoadConfig:            loadConfig,
		Headroom:              headroom.New(headroom.Options{ProcPath: *f.procfs, SysPath: *f.sysfs, Reserve: uint64(*f.reserve)}),
	})
	if err != nil {
		return err
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				a.Reload(ctx) // says in the log what it did, or why not
			}
		}
	}()
	return a.Run(ctx)
}

// logger returns the agent's logger as --log.level and --log.format say, writing to stderr,
// and the format it chose. With no --log.format, it logs to the journal when stderr is the
// journal's stream, as journalStream (JOURNAL_STREAM) says, else logfmt: an explicit
// --log.format=logfmt keeps text lines under systemd. journalSocket is journald's socket;
// empty is the system's.
func (f *runFlags) logger(stderr io.Writer, journalStream, journalSocket string) (*slog.Logger, logging.Format, error) {
	format := f.logFormat
	if !f.logFormatSet {
		format = "" // the journal when stderr is its stream, else logfmt
	}
	return logging.New(logging.Config{
		Level:         f.logLevel,
		Format:        format,
		Stderr:        stderr,
		JournalStream: journalStream,
		JournalSocket: journalSocket,
	})
}

// userDefaults returns the defaults of --path.state and --control.socket for a process running
// as euid, with getenv reading its environment. Root gets the system's paths (the systemd unit's
// StateDirectory= and RuntimeDirectory=). Another user may write neither, so that
// `hotplug-agent run` works with no flags: its state file is in its own state directory
// ($XDG_STATE_HOME, else ~/.local/state), or nowhere without a home, and it serves no control
// socket, since what the socket serves, taking CPUs and memory online and offline, needs root.
// A home that isDir does not find is no home: system users' is often /nonexistent.
func userDefaults(euid int, getenv func(string) string, isDir func(string) bool) (statePath, controlSocket string) {
	if euid == 0 {
		return DefaultStatePath, control.DefaultSocket
	}
	// The XDG Base Directory specification: a relative path in these variables is invalid and
	// must be ignored.
	if dir := getenv("XDG_STATE_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "hotplug-agent", "state.json"), ""
	}
	if home := getenv("HOME"); filepath.IsAbs(home) && isDir(home) {
		return filepath.Join(home, ".local", "state", "hotplug-agent", "state.json"), ""
	}
	return "", ""
}

// isDir reports whether p is a directory (following symbolic links).
func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
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
		cannot = append(cannot, "no control socket: hotplug-agent online, offline and reload need an agent running as root (SIGHUP reloads)")
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

// shortDuration is d as people write it: 2m, not 2m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
