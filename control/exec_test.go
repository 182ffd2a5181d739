package control

import (
	"os"
	"os/exec"
)

// execCommand runs path with only env in its environment.
func execCommand(path string, env ...string) *exec.Cmd {
	cmd := exec.Command(path, "-test.run=^$")
	cmd.Env = env
	cmd.Stderr = os.Stderr
	return cmd
}
