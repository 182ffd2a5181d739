package notify

import (
	"runtime/debug"
	"time"
)

// StackInterval is how often a registration whose callback keeps panicking has its stack
// captured and logged: the first panic always, then at most once per interval. Every panic is
// still logged (one line) and reported to the observer; the stack is what costs, and a
// callback that panics on every notification would otherwise spend its neighbours' CPU
// unwinding the same stack and flood the journal with it.
const StackInterval = time.Minute

// panicStacks decides when a registration's panic stack is captured. The zero value captures
// the first one. It is used only by the registration's dispatch goroutine: not safe for
// concurrent use.
type panicStacks struct {
	last       time.Time
	suppressed int // panics since the last captured stack whose stack was not captured
}

// recovered builds the *PanicError for the panic value v at now. It must be called from the
// deferred function that recovered v, so that the stack captured is the panicking one. It
// returns the number of earlier panics whose stack was omitted when it captures one.
func (s *panicStacks) recovered(v any, now time.Time) (pe *PanicError, omitted int) {
	pe = &PanicError{Value: v}
	if !s.last.IsZero() && now.Sub(s.last) < StackInterval {
		s.suppressed++
		return pe, 0
	}
	pe.Stack = debug.Stack()
	s.last, omitted, s.suppressed = now, s.suppressed, 0
	return pe, omitted
}

// logArgs returns the log attributes that show pe's stack, or say why it is missing.
func (pe *PanicError) logArgs(omitted int) []any {
	if pe.Stack == nil {
		return []any{"stack", "omitted (captured at most once per minute per callback)"}
	}
	return []any{"stack", string(pe.Stack), "stacks_omitted_since_last", omitted}
}
