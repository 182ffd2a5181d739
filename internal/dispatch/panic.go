package dispatch

import (
	"fmt"
	"runtime/debug"
	"time"
)

// StackInterval is how often a registration whose callback keeps panicking has its stack
// captured and logged: the first panic always, then at most once per interval. Every panic is
// still logged (one line) and reported; the stack is what costs, and a callback that panics on
// every notification would otherwise spend its neighbours' CPU unwinding the same stack and
// flood the journal with it.
const StackInterval = time.Minute

// PanicError is the error a callback's panic is reported as.
type PanicError struct {
	// Value is the value given to panic.
	Value any
	// Stack is the stack of the panicking callback goroutine, or nil when it was not captured:
	// a registration's stack is captured on its first panic and then at most once per
	// StackInterval.
	Stack []byte
}

// Error returns "callback panicked: <value>". It does not block and is safe for concurrent use.
func (p *PanicError) Error() string { return fmt.Sprintf("callback panicked: %v", p.Value) }

// Unwrap returns the panic value when it is an error, nil otherwise. It does not block and is
// safe for concurrent use.
func (p *PanicError) Unwrap() error {
	err, _ := p.Value.(error)
	return err
}

// LogArgs returns the log attributes that show p's stack, or say why it is missing; omitted is
// what Stacks.Recovered returned with p. It does not block and is safe for concurrent use.
func (p *PanicError) LogArgs(omitted int) []any {
	if p.Stack == nil {
		return []any{"stack", "omitted (captured at most once per minute per callback)"}
	}
	return []any{"stack", string(p.Stack), "stacks_omitted_since_last", omitted}
}

// Stacks decides when a registration's panic stack is captured. The zero value captures the
// first one. It is used only by the registration's goroutine: not safe for concurrent use.
type Stacks struct {
	last       time.Time
	suppressed int // panics since the last captured stack whose stack was not captured
}

// Recovered builds the *PanicError for the panic value v at now. It must be called from the
// deferred function that recovered v, so that the stack captured is the panicking one. It
// returns the number of earlier panics whose stack was omitted when it captures one.
func (s *Stacks) Recovered(v any, now time.Time) (pe *PanicError, omitted int) {
	pe = &PanicError{Value: v}
	if !s.last.IsZero() && now.Sub(s.last) < StackInterval {
		s.suppressed++
		return pe, 0
	}
	pe.Stack = debug.Stack()
	s.last, omitted, s.suppressed = now, s.suppressed, 0
	return pe, omitted
}

// Call runs f, turning a panic into a *PanicError: panicked reports one, and omitted is the
// number of earlier panics whose stack was not captured, when this one's was. It blocks while f
// runs and must be called only by the registration's goroutine.
func (s *Stacks) Call(f func() error) (err error, panicked bool, omitted int) {
	defer func() {
		if v := recover(); v != nil {
			err, omitted = s.Recovered(v, time.Now())
			panicked = true
		}
	}()
	return f(), false, 0
}
