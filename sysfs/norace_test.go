//go:build !race

package sysfs

// raceEnabled: the race detector's instrumentation allocates where a plain build does not.
const raceEnabled = false
