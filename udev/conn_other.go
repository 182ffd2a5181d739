//go:build !linux

package udev

import (
	"context"
	"errors"
)

var errNotLinux = errors.New("udev: netlink uevents need Linux")

// Conn is a kernel uevent socket. On this operating system Listen always fails.
type Conn struct{}

// Listen returns an error: netlink uevents exist only on Linux.
func Listen(opts Options) (*Conn, error) { return nil, errNotLinux }

// Read returns an error: netlink uevents exist only on Linux.
func (c *Conn) Read(ctx context.Context) (Event, error) { return Event{}, errNotLinux }

// ReadQueued returns an error: netlink uevents exist only on Linux.
func (c *Conn) ReadQueued() (Event, bool, error) { return Event{}, false, errNotLinux }

// ReceiveBufferBytes returns 0.
func (c *Conn) ReceiveBufferBytes() int { return 0 }

// Close does nothing and returns nil.
func (c *Conn) Close() error { return nil }
