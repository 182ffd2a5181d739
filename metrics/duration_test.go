package metrics

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/testing/protocmp"
)

// A DurationVec exposes what a prometheus.HistogramVec of the same name, help, label and buckets
// exposes for the same observations: the same series, buckets, counts and sums. The observations
// include every bucket's bound exactly (a bound is in its own bucket), just above it, below the
// first and above the last.
func TestDurationVecAsHistogramVec(t *testing.T) {
	const name, help = "callback_duration_seconds", "Time a callback took to run, by callback."
	ours := newDurationVec(name, help)
	ref := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help,
		Buckets: latencyBuckets[:]}, []string{"callback"})
	observe := func(callback string, d time.Duration) {
		ours.With(callback).Observe(d)
		ref.WithLabelValues(callback).Observe(d.Seconds())
	}
	for _, b := range latencyBounds {
		observe("edges", b)
		observe("edges", b+1)
	}
	observe("edges", 0)
	observe("edges", time.Minute)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		observe("random", time.Duration(rng.ExpFloat64()*float64(time.Millisecond)))
	}
	ours.With("no observation")
	ref.WithLabelValues("no observation")

	gather := func(c prometheus.Collector) []*dto.MetricFamily {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		return mfs
	}
	// The sums are kept in nanoseconds here and added up in float seconds there: equal to a
	// nanosecond (the only floats that differ).
	if diff := cmp.Diff(gather(ref), gather(ours), protocmp.Transform(), cmpopts.EquateApprox(0, 1e-9),
		protocmp.IgnoreFields(&dto.Histogram{}, "created_timestamp"),
		protocmp.IgnoreFields(&dto.Metric{}, "timestamp_ms")); diff != "" {
		t.Errorf("DurationVec differs from prometheus.HistogramVec (-HistogramVec +DurationVec):\n%s", diff)
	}
}

// Observations from many goroutines at once are all counted (run with -race).
func TestDurationVecConcurrent(t *testing.T) {
	v := newDurationVec("dispatch_latency_seconds", "test")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				v.With("shared").Observe(time.Duration(g*1000+i) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	var m dto.Metric
	if err := v.With("shared").metric(v.desc).Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetHistogram().GetSampleCount(); got != 8000 {
		t.Errorf("count %d after 8,000 observations", got)
	}
}

// A callback name that is not valid UTF-8 is exposed mended, not refused at scrape time.
func TestDurationVecInvalidLabel(t *testing.T) {
	v := newDurationVec("dispatch_latency_seconds", "test")
	v.With("bad\xffname").Observe(time.Millisecond)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(v)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if got := mfs[0].GetMetric()[0].GetLabel()[0].GetValue(); got != "bad\uFFFDname" {
		t.Errorf("label %q; want the bad byte replaced by U+FFFD", got)
	}
}

func BenchmarkDurationsObserve(b *testing.B) {
	s := newDurationVec("dispatch_latency_seconds", "test").With("bench")
	for b.Loop() {
		s.Observe(100 * time.Microsecond)
	}
}

func BenchmarkHistogramObserve(b *testing.B) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Buckets: latencyBuckets[:]})
	for b.Loop() {
		h.Observe((100 * time.Microsecond).Seconds())
	}
}

// A negative duration (a notification given again after a restart across which the clock went
// back) is counted as 0: the histogram's sum, which Prometheus takes for a counter, never goes
// down.
func TestDurationNegativeCountsAsZero(t *testing.T) {
	v := newDurationVec("dispatch_latency_seconds", "help")
	s := v.With("cb")
	s.Observe(2 * time.Millisecond)
	s.Observe(-time.Hour)
	m := &dto.Metric{}
	if err := s.metric(v.desc).Write(m); err != nil {
		t.Fatal(err)
	}
	h := m.GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() != 0.002 || h.GetBucket()[0].GetCumulativeCount() != 1 {
		t.Errorf("after 2 ms and -1 h: count %d, sum %v, first bucket %d; want 2, 0.002, 1 (the -1 h as 0)",
			h.GetSampleCount(), h.GetSampleSum(), h.GetBucket()[0].GetCumulativeCount())
	}
}
