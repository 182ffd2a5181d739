// Package testenv holds helpers for tests that drive the real kernel of the machine they run on.
// They exist only on Linux.
package testenv
