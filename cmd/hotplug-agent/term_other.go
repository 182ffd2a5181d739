//go:build !linux

package main

import "io"

// isTerminal reports whether w is a terminal: never, outside Linux (progress lines then each
// have their own line).
func isTerminal(io.Writer) bool { return false }
