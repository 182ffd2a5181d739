package metrics

import (
	"errors"
	"testing"
	"time"
)

// TestErrorLog: the last error per callback with its count, and the errors since a time, even
// after the ring wrapped.
func TestErrorLog(t *testing.T) {
	l := NewErrorLog()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, ok := l.Last("hook"); ok {
		t.Error("an error before any was recorded")
	}
	l.Record("hook", t0, errors.New("first"))
	l.Record("hook", t0.Add(2*time.Hour), errors.New("webhook: 500"))
	l.Record("other", t0.Add(3*time.Hour), errors.New("exit 1"))
	if e, _ := l.Last("hook"); e.Err != "webhook: 500" || e.Count != 2 || !e.At.Equal(t0.Add(2*time.Hour)) {
		t.Errorf("Last(hook) = %+v", e)
	}
	if n, more := l.Since(t0.Add(time.Hour)); n != 2 || more {
		t.Errorf("Since(t0+1h) = %d, %v; want 2, false", n, more)
	}
	for k := range errorTimes + 10 {
		l.Record("hook", t0.Add(4*time.Hour+time.Duration(k)), errors.New("again"))
	}
	if n, more := l.Since(t0.Add(4 * time.Hour)); n != errorTimes || !more {
		t.Errorf("after the ring wrapped: Since = %d, %v; want %d, true", n, more, errorTimes)
	}
	if n, _ := l.Since(t0.Add(5 * time.Hour)); n != 0 {
		t.Errorf("Since(later) = %d; want 0", n)
	}
}
