package dispatch

import (
	"strings"
	"testing"
	"time"
)

// TestPanicStacksRateLimited: the first panic of a registration carries its stack, the next ones
// within StackInterval do not (they are counted), and the first after the interval carries it
// again with the number omitted.
func TestPanicStacksRateLimited(t *testing.T) {
	var s Stacks
	t0 := time.Unix(1_700_000_000, 0)
	capture := func(now time.Time) (*PanicError, int) {
		var pe *PanicError
		var omitted int
		func() {
			defer func() { pe, omitted = s.Recovered(recover(), now) }()
			panic("boom")
		}()
		return pe, omitted
	}
	pe, omitted := capture(t0)
	if !strings.Contains(string(pe.Stack), "panic_test.go") || omitted != 0 {
		t.Fatalf("first panic: stack %q, omitted %d; want the panicking stack and 0 omitted", pe.Stack, omitted)
	}
	for k := 1; k <= 3; k++ {
		if pe, _ := capture(t0.Add(time.Duration(k) * time.Second)); pe.Stack != nil || pe.Value != "boom" {
			t.Fatalf("panic %d within the interval: stack %d bytes, value %v; want no stack and value boom", k+1, len(pe.Stack), pe.Value)
		}
	}
	pe, omitted = capture(t0.Add(StackInterval))
	if pe.Stack == nil || omitted != 3 {
		t.Fatalf("first panic after the interval: stack %d bytes, omitted %d; want a stack and 3 omitted", len(pe.Stack), omitted)
	}
	if args := pe.LogArgs(omitted); len(args) != 4 || args[3] != 3 {
		t.Errorf("LogArgs = %v; want the stack and stacks_omitted_since_last=3", args)
	}
}
