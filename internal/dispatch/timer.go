package dispatch

import "time"

// Timer times a registration's callbacks for its Observer: when each starts (its latency is
// that minus when its notification was read) and how long it takes. Reading the monotonic clock
// costs some 45 ns on some virtual machines, more than the rest of a delivery, and a registration
// that takes a burst would read it after every callback. So while its callbacks are quick (the
// last reading found them under CoastSpan/CoastGroup each), a Timer coasts: it reads the clock
// once every CoastGroup callbacks, and at the end of each batch, and gives each callback between
// two readings the mean duration of the group before as its duration, the last of the group
// what remains. The sum of the durations is exact (unless a group ran faster than the estimate:
// none is below 0); a group's callbacks take under CoastSpan
// together unless one of them suddenly took longer (then the time shows, as one long callback,
// on the last of the group, and the Timer stops coasting); a start is off by less than its
// group's span. A histogram whose finest bucket is CoastSpan or more counts the same callbacks
// in the same buckets, but for such a sudden one.
//
// Times are offsets from the Timer's epoch, read on the monotonic clock alone (time.Since, half
// the cost of time.Now). The zero Timer is not usable: call NewTimer. It is used only by the
// registration's goroutine: not safe for concurrent use.
type Timer struct {
	epoch time.Time
	read  func() time.Duration // the clock: nil is time.Since(epoch)
	at    time.Duration        // the last reading; noReading: read the clock at the next Start
	est   time.Duration        // the duration given to a callback while coasting; 0: not coasting
	group int                  // callbacks timed since the last reading
	owed  time.Duration        // the durations given to them
}

// CoastSpan and CoastGroup bound a Timer's coasting: CoastGroup callbacks at most between two
// readings, which took under CoastSpan together when the Timer began to coast.
const (
	CoastSpan  = 10 * time.Microsecond
	CoastGroup = 8
)

const noReading time.Duration = -1

// NewTimer returns a Timer whose times are offsets from now.
func NewTimer() Timer { return Timer{epoch: time.Now(), at: noReading} }

// Since returns t as an offset from the Timer's epoch (on the monotonic clock when t has a
// monotonic reading), to compare with Start's result. It does not read the clock.
func (t *Timer) Since(tm time.Time) time.Duration { return tm.Sub(t.epoch) }

// Start returns when the next callback starts, reading the clock if there is no reading to go
// on (the first callback of a batch, or one after Break).
func (t *Timer) Start() time.Duration {
	if t.at == noReading {
		t.at, t.group, t.owed = t.now(), 0, 0
	}
	return t.at + t.owed
}

// Done returns how long the callback that Start timed took. last says that no callback follows
// it at once (the end of a batch): the clock is read then, and the next Start reads it again.
func (t *Timer) Done(last bool) time.Duration {
	t.group++
	if t.est > 0 && t.group < CoastGroup && !last {
		t.owed += t.est
		return t.est
	}
	end := t.now()
	span := end - t.at
	took := max(span-t.owed, 0)
	if span < CoastSpan && span/time.Duration(t.group) < CoastSpan/CoastGroup {
		t.est = max(span/time.Duration(t.group), 1)
	} else {
		t.est = 0
	}
	t.at, t.group, t.owed = end, 0, 0
	if last {
		t.at = noReading
	}
	return took
}

// Break says that the next callback does not follow the last one at once (one was skipped, or
// the registration waited): the next Start reads the clock. Durations given since the last
// reading stand.
func (t *Timer) Break() { t.at = noReading }

// now reads the clock.
func (t *Timer) now() time.Duration {
	if t.read != nil {
		return t.read()
	}
	return time.Since(t.epoch)
}
