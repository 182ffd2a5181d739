package metrics

import (
	"sync"
	"time"
)

// errorTimes is how many callback error times an ErrorLog keeps: enough to count the errors of
// the last hour of a callback failing every few seconds, little memory.
const errorTimes = 4096

// LastError is a callback's most recent error.
type LastError struct {
	// At is when the callback returned it.
	At time.Time
	// Err is its message.
	Err string
	// Count is how many errors the callback returned since the agent started.
	Count uint64
}

// ErrorLog keeps the callback errors the status page shows: each callback's last error, and the
// times of the recent ones (the last errorTimes), to count those of the last hour. It is safe
// for concurrent use and never blocks for long.
type ErrorLog struct {
	mu    sync.Mutex
	last  map[string]LastError
	times [errorTimes]time.Time // a ring: next is the oldest once full
	next  int
	n     int
}

// NewErrorLog returns an empty log.
func NewErrorLog() *ErrorLog { return &ErrorLog{last: map[string]LastError{}} }

// Record notes that owner's callback returned err at at.
func (l *ErrorLog) Record(owner string, at time.Time, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev := l.last[owner]
	l.last[owner] = LastError{At: at, Err: err.Error(), Count: prev.Count + 1}
	l.times[l.next] = at
	l.next = (l.next + 1) % errorTimes
	l.n = min(l.n+1, errorTimes)
}

// Since counts the errors recorded at or after t; when more than the log keeps happened since,
// it returns what it keeps and more == true.
func (l *ErrorLog) Since(t time.Time) (n int, more bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.n {
		if !l.times[(l.next-1-k+errorTimes)%errorTimes].Before(t) {
			n++
		}
	}
	return n, n == errorTimes
}

// Last returns owner's most recent error, and false when it has returned none.
func (l *ErrorLog) Last(owner string) (LastError, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.last[owner]
	return e, ok
}
