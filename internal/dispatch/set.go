package dispatch

import (
	"maps"
	"slices"
	"sync"
)

// Set is a registry's registrations: those registered, in registration order, and those whose
// goroutine may still run a callback (one unregistered from inside its own callback stays until
// that callback returns, so that the registry's Close waits for it). Its zero value is an empty,
// open set. It does not block and is not safe for concurrent use: the registry's lock guards it.
type Set[R comparable] struct {
	regs   []R
	live   map[R]struct{}
	closed bool
}

// Add registers r, unless the set is closed: then it returns false.
func (s *Set[R]) Add(r R) bool {
	if s.closed {
		return false
	}
	if s.live == nil {
		s.live = make(map[R]struct{})
	}
	s.regs = append(s.regs, r)
	s.live[r] = struct{}{}
	return true
}

// Delete unregisters r (it stays live until Exited) and reports whether it was registered.
func (s *Set[R]) Delete(r R) bool {
	i := slices.Index(s.regs, r)
	if i < 0 {
		return false
	}
	s.regs = slices.Delete(s.regs, i, i+1)
	return true
}

// Exited forgets r, whose goroutine has exited.
func (s *Set[R]) Exited(r R) {
	s.Delete(r)
	delete(s.live, r)
}

// Registered returns the registrations, in registration order: the set's own slice, valid
// while the lock is held.
func (s *Set[R]) Registered() []R { return s.regs }

// Closed reports whether Close was called.
func (s *Set[R]) Closed() bool { return s.closed }

// Close closes the set (Add refuses from now on), unregisters every registration and returns
// them, with those whose goroutine may still run a callback.
func (s *Set[R]) Close() (registered, live []R) {
	s.closed = true
	registered, s.regs = s.regs, nil
	return registered, slices.Collect(maps.Keys(s.live))
}

// Unregister removes r from s under mu (the registry's lock), with remove (which empties r's
// queue for good and reports whether it was not removed already), then cancels the context of
// r's Worker w and wakes it, so that no callback of r starts after it returns. It reports whether
// r was still registered. It does not block on callbacks and is safe for concurrent use.
func Unregister[R comparable](mu *sync.Mutex, s *Set[R], r R, remove func() bool, w *Worker) bool {
	removed := Withdraw(mu, s, r, remove, w)
	if removed {
		w.Cancel()
	}
	return removed
}

// Withdraw is Unregister without the cancel: the callback of r in flight, if any, keeps its
// context (until the goroutine exits or w.Cancel is called) and may finish; no other starts. It
// does not block on callbacks and is safe for concurrent use.
func Withdraw[R comparable](mu *sync.Mutex, s *Set[R], r R, remove func() bool, w *Worker) bool {
	mu.Lock()
	removed := remove()
	s.Delete(r)
	mu.Unlock()
	if removed {
		w.Poke()
	}
	return removed
}
