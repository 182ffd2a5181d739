package dispatch

import "unsafe"

// Ring is a FIFO in a growable circular buffer, so that a queue that never drains completely
// does not grow or reallocate. The zero value is an empty ring. It does not block and is not
// safe for concurrent use: its owner guards it.
type Ring[T any] struct {
	buf  []T
	head int // index of the oldest item
	n    int // number of items held
}

// An empty Ring keeps its buffer for reuse up to ringKeep items, or up to ringKeepBytes when
// those hold more: a queue of pointers that fills to a few thousand in every burst then grows
// afresh, and feeds the garbage collector, only beyond that.
const (
	ringKeep      = 256
	ringKeepBytes = 16 << 10
)

// Len returns the number of items held.
func (q *Ring[T]) Len() int { return q.n }

// Push appends v.
func (q *Ring[T]) Push(v T) {
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)%len(q.buf)] = v
	q.n++
}

// Pop removes and returns the oldest item. The ring must not be empty.
func (q *Ring[T]) Pop() T {
	v := q.take()
	if q.n == 0 {
		q.empty()
	}
	return v
}

// PopInto moves up to max of the oldest items, in order, to the end of dst and returns it.
func (q *Ring[T]) PopInto(dst []T, max int) []T {
	for k := 0; k < max && q.n > 0; k++ {
		dst = append(dst, q.take())
	}
	if q.n == 0 {
		q.empty()
	}
	return dst
}

// take removes and returns the oldest item, leaving its slot zero so that the ring holds no
// reference to it. The ring must not be empty.
func (q *Ring[T]) take() T {
	var zero T
	v := q.buf[q.head]
	q.buf[q.head] = zero
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return v
}

// At returns the k-th oldest item, 0 being the next Pop. k must be below Len.
func (q *Ring[T]) At(k int) T { return q.buf[(q.head+k)%len(q.buf)] }

// Reset empties the ring and releases its buffer.
func (q *Ring[T]) Reset() { *q = Ring[T]{} }

// empty resets an empty ring's head and gives the memory of a burst back.
func (q *Ring[T]) empty() {
	q.head = 0
	var zero T
	if len(q.buf) > max(ringKeep, ringKeepBytes/max(int(unsafe.Sizeof(zero)), 1)) {
		q.buf = nil
	}
}

func (q *Ring[T]) grow() {
	buf := make([]T, max(8, 2*len(q.buf)))
	for i := range q.n {
		buf[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = buf, 0
}
