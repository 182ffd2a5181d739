package client

import (
	"bytes"
	"runtime"
	"strconv"
)

// goid returns the id of the calling goroutine, parsed from the "goroutine N [" header of
// runtime.Stack, or 0 if the header cannot be parsed. It is used only to recognise a call made
// from a registration's own delivery goroutine (as notify does), so that UnregisterEx and Close
// called from a callback do not wait for that very callback.
func goid() uint64 {
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
