//go:build linux

package callback

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts the command in a process group of its own and makes cancellation kill
// that whole group, so a timeout also ends whatever the command started.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
