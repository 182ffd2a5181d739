//go:build !linux

package callback

import "os/exec"

// setProcessGroup does nothing where the agent does not run: cancellation kills the command only.
func setProcessGroup(*exec.Cmd) {}
