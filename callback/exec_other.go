//go:build !linux

package callback

import (
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

// runCommand runs the command that build returns.
func runCommand(build func() *exec.Cmd, _ *Cgroups) (leftOpen bool, err error) {
	return false, build().Run()
}
