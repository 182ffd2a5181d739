//go:build !linux

// Command hotplug-guest-init is /init of the QEMU guests of the end-to-end tests; it runs only on
// Linux.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "hotplug-guest-init runs only on Linux")
	os.Exit(1)
}
