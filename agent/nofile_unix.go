//go:build unix

package agent

import "syscall"

// descriptorLimit returns the process's limit of open file descriptors (RLIMIT_NOFILE's soft
// limit, which Go raises to the hard limit at start), or 0 when it cannot be read.
func descriptorLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<30 {
		return 0
	}
	return int(r.Cur)
}
