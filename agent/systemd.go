package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifyReady tells systemd (Type=notify) that the agent is ready. Outside systemd it does
// nothing.
func notifyReady(log *slog.Logger) {
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("systemd notify READY=1 failed", "err", err)
	}
}

// watchdogInterval returns the watchdog interval systemd asked for (WatchdogSec=), 0 when there
// is none or outside systemd.
func watchdogInterval(log *slog.Logger) time.Duration {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog settings unreadable; not feeding it", "err", err)
		return 0
	}
	return interval
}

func notifyStopping(log *slog.Logger) {
	if _, err := daemon.SdNotify(false, daemon.SdNotifyStopping); err != nil {
		log.Warn("systemd notify STOPPING=1 failed", "err", err)
	}
}

// watchdog feeds systemd's watchdog at half its interval for as long as the event loop is
// healthy. A loop stuck on one event stops the pings, and systemd restarts the service.
func (a *Agent) watchdog(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	reported := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := a.healthy(); err != nil {
			if !reported {
				a.log.Error("event loop unhealthy; not feeding the systemd watchdog", "err", err)
				reported = true
			}
			continue
		}
		reported = false
		if _, err := daemon.SdNotify(false, daemon.SdNotifyWatchdog); err != nil {
			a.log.Warn("systemd watchdog ping failed", "err", err)
		}
	}
}

// notifyReloading tells systemd that the agent is reloading its configuration; READY=1
// (notifyReady) says it is done. Outside systemd it does nothing.
func notifyReloading(log *slog.Logger) {
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReloading); err != nil {
		log.Warn("systemd notify RELOADING=1 failed", "err", err)
	}
}
