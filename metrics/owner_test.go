package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestForOwner: what a registration reports through ForOwner lands in the same series as what
// is reported with its owner's name, and only in its owner's.
func TestForOwner(t *testing.T) {
	m := New(prometheus.NewRegistry(), "test")
	o := m.ForOwner("exec")
	o.CallbackStarted("exec", nil, time.Millisecond)
	o.CallbackDone("exec", nil, time.Millisecond, errors.New("exit status 1"))
	m.CallbackDone("exec", nil, time.Millisecond, errors.New("exit status 2"))
	o.QueueOverflow("exec", 5)
	if got := testutil.ToFloat64(m.CallbackErrors.WithLabelValues("exec")); got != 2 {
		t.Errorf("callback_errors_total{callback=exec} = %v; want 2", got)
	}
	if got := testutil.ToFloat64(m.QueueOverflows.WithLabelValues("exec")); got != 1 {
		t.Errorf("callback_queue_overflows_total{callback=exec} = %v; want 1", got)
	}
	// The status page's error log hears of both, the last one as the owner's last error.
	if n, _ := m.Errors.Since(time.Now().Add(-time.Minute)); n != 2 {
		t.Errorf("error log: %d errors in the last minute; want 2", n)
	}
	if l, ok := m.Errors.Last("exec"); !ok || !strings.Contains(l.Err, "exit status 2") {
		t.Errorf("error log: last error of exec %+v, %v; want exit status 2", l, ok)
	}
	if n := testutil.CollectAndCount(m.CallbackDuration); n != 1 {
		t.Errorf("callback_duration_seconds has %d series; want 1 (exec's)", n)
	}
	if n := testutil.CollectAndCount(m.DispatchLatency); n != 1 {
		t.Errorf("dispatch_latency_seconds has %d series; want 1 (exec's)", n)
	}
}
