//go:build !linux

package sysfs

// kernelLog reads nothing where there is no /dev/kmsg.
type kernelLog struct{}

func openKernelLog(string) *kernelLog  { return nil }
func (l *kernelLog) close()            {}
func (l *kernelLog) records() []string { return nil }
