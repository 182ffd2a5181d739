// Package goid tells which goroutine is running, for one purpose only: an unregister call that
// must wait for a registration's callbacks recognises when it is called from that registration's
// own delivery goroutine (from inside the callback), where waiting would deadlock.
package goid

import (
	"bytes"
	"runtime"
	"strconv"
)

// ID returns the id of the calling goroutine, parsed from the "goroutine N [" header of
// runtime.Stack, or 0 if the header cannot be parsed. It does not block and is safe for
// concurrent use.
func ID() uint64 {
	var buf [64]byte
	b, ok := bytes.CutPrefix(buf[:runtime.Stack(buf[:], false)], []byte("goroutine "))
	if !ok {
		return 0
	}
	i := bytes.IndexByte(b, ' ')
	if i <= 0 {
		return 0
	}
	id, err := strconv.ParseUint(string(b[:i]), 10, 64)
	if err != nil {
		return 0
	}
	return id
}
