// Command nothing stands for a hotplug-agent without kingpin: every flag is an unknown command.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "unknown command")
	os.Exit(2)
}
