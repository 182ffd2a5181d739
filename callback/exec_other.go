//go:build !linux

package callback

import (
	"context"
	"errors"
	"log/slog"
	"os/exec"
)

// setProcessGroup does nothing where the agent does not run: cancellation kills the command only.
func setProcessGroup(*exec.Cmd) {}

// Cgroups gives each exec run a cgroup of its own, on Linux only.
type Cgroups struct{}

// NewCgroups fails where the agent does not run: there are no cgroups.
func NewCgroups(string, *slog.Logger) (*Cgroups, error) {
	return nil, errors.New("cgroups: only on Linux")
}

// Dir is "" where the agent does not run.
func (c *Cgroups) Dir() string { return "" }

// Close does nothing where the agent does not run.
func (c *Cgroups) Close() error { return nil }

// runCommand runs the command that build returns, whose context is ctx. A command that exited 0
// succeeds; stopped is context.Cause(ctx) for one that did not and had been stopped by ctx.
func runCommand(ctx context.Context, build func() *exec.Cmd, _ *Cgroups) (leftOpen bool, stopped, err error) {
	cmd := build()
	err = cmd.Run()
	if cmd.ProcessState != nil && cmd.ProcessState.Success() {
		return false, nil, nil
	}
	if cmd.ProcessState != nil {
		stopped = context.Cause(ctx)
	}
	return false, stopped, err
}
