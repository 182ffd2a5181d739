package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/hotplug-agent/hotplug-agent/agent"
	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/control"
)

// DefaultListenAddress is the HTTP API's default address. Port 19100 lies outside the range
// 9100-9999 that Prometheus allocates to exporters (it is fully allocated), below Linux's
// ephemeral ports, and easy to place: node_exporter's 9100 plus 10000.
const DefaultListenAddress = ":19100"

// DefaultStatePath is under the StateDirectory= of the systemd unit.
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
	statePath := fs.String("path.state", DefaultStatePath, "file that keeps the announced interfaces and the last event ID across restarts; empty keeps none")
	history := fs.Int("web.stream-history", 4096, "notifications /events keeps for clients that resume with Last-Event-ID")
	configFile := fs.String("config.file", "", "YAML configuration file (callbacks); empty: log every notification")
	logLevel := fs.String("log.level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log.format", "logfmt", "log format: logfmt or json")
	controlSocket := fs.String("control.socket", control.DefaultSocket, "Unix socket for hotplug-agent online/offline (mode 0600, root only); empty serves none")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *history < 1 {
		return usageError{fmt.Errorf("--web.stream-history: %d: want at least 1", *history)}
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
	a, err := agent.New(agent.Options{
		SysfsPath:          *sysfsPath,
		IOMemPath:          filepath.Join(*procfsPath, "iomem"),
		ListenAddresses:    listen.or(DefaultListenAddress),
		SystemdSocket:      *systemdSocket,
		StatePath:          *statePath,
		StreamHistory:      *history,
		WebConfigFile:      *webConfig,
		ReceiveBufferBytes: *rcvbuf,
		Config:             cfg,
		Version:            version,
		Logger:             logger,
		ControlSocket:      *controlSocket,
		// The default path may be taken (another agent) or read-only (a unit without
		// RuntimeDirectory=): the agent then runs without it; a path asked for must work.
		ControlSocketOptional: !flagSet(fs, "control.socket"),
	})
	if err != nil {
		return err
	}
	return a.Run(ctx)
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
