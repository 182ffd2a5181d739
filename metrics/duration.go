package metrics

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// DurationVec is a histogram of durations, in seconds, in the latencyBuckets, by the label
// "callback": what a prometheus.HistogramVec with those options exposes (name_bucket{le},
// name_sum, name_count), made cheaper to observe for the dispatch path, where every registration
// observes two durations per notification. An observation here is two atomic additions to the
// series' own memory; a prometheus.Histogram's is four and a compare-and-swap loop on the float
// sum, which at 64 registrations came to a sixth of the agent's CPU per event. What it gives up:
// a scrape reads the buckets one by one (the count is their sum, so the two always agree), and the
// sum, kept in nanoseconds, may hold an observation whose bucket was read before it. Safe for
// concurrent use.
type DurationVec struct {
	desc   *prometheus.Desc
	series sync.Map // label value -> *Durations
}

// Durations is one series of a DurationVec. Safe for concurrent use.
type Durations struct {
	counts [len(latencyBuckets) + 1]atomic.Uint64 // by bucket; the last one is +Inf
	sum    atomic.Int64                           // nanoseconds
	label  string
}

// latencyBounds are latencyBuckets as durations: an observation d falls in the first bucket
// whose bound it does not exceed, as a value does in Prometheus' buckets (le).
var latencyBounds = func() (b [len(latencyBuckets)]time.Duration) {
	for i, s := range latencyBuckets {
		b[i] = time.Duration(math.Round(s * float64(time.Second)))
	}
	return b
}()

// newDurationVec returns the DurationVec of the histogram name (in the agent's namespace).
func newDurationVec(name, help string) *DurationVec {
	return &DurationVec{desc: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, []string{"callback"}, nil)}
}

// With returns the series of the label value callback, made the first time. A value that is not
// valid UTF-8 is made so (as Prometheus requires) with U+FFFD in place of the bad bytes. It does
// not block.
func (v *DurationVec) With(callback string) *Durations {
	if s, ok := v.series.Load(callback); ok {
		return s.(*Durations)
	}
	label := callback
	if !utf8.ValidString(label) {
		label = strings.ToValidUTF8(label, "\uFFFD")
	}
	s, _ := v.series.LoadOrStore(callback, &Durations{label: label})
	return s.(*Durations)
}

// Observe adds d to the series; a negative d (a wall-clock latency across a step back of the
// clock) counts as 0, so that the sum never goes down. It does not block and allocates nothing.
func (s *Durations) Observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	s.counts[i].Add(1)
	s.sum.Add(int64(d))
}

// Describe implements prometheus.Collector.
func (v *DurationVec) Describe(ch chan<- *prometheus.Desc) { ch <- v.desc }

// Collect implements prometheus.Collector: a histogram for each series.
func (v *DurationVec) Collect(ch chan<- prometheus.Metric) {
	v.series.Range(func(_, s any) bool {
		ch <- s.(*Durations).metric(v.desc)
		return true
	})
}

// metric is the series as a Prometheus histogram, with cumulative buckets.
func (s *Durations) metric(desc *prometheus.Desc) prometheus.Metric {
	buckets := make(map[float64]uint64, len(latencyBuckets))
	var n uint64
	for i, b := range latencyBuckets {
		n += s.counts[i].Load()
		buckets[b] = n
	}
	n += s.counts[len(latencyBuckets)].Load()
	return prometheus.MustNewConstHistogram(desc, n, time.Duration(s.sum.Load()).Seconds(), buckets, s.label)
}
