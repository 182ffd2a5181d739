//go:build !linux

// Command uevent-sse-floor reads Linux kernel uevents; elsewhere it only says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "uevent-sse-floor: Linux only (it reads the kernel's uevent broadcast)")
	os.Exit(1)
}
