package goid

import "testing"

func TestID(t *testing.T) {
	self := ID()
	if self == 0 {
		t.Fatalf("ID() = 0, want the id of this goroutine")
	}
	if again := ID(); again != self {
		t.Errorf("ID() = %d then %d on the same goroutine", self, again)
	}
	other := make(chan uint64)
	go func() { other <- ID() }()
	if g := <-other; g == 0 || g == self {
		t.Errorf("ID() on another goroutine = %d, this one is %d", g, self)
	}
}
