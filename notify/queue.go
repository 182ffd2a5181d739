package notify

// ring is a FIFO of notifications in a growable circular buffer, so that a queue that never
// drains completely does not grow or reallocate. It is not safe for concurrent use.
type ring struct {
	buf  []Notification
	head int // index of the oldest notification
	n    int // number of notifications held
}

// ringKeep is the largest buffer an empty ring keeps for reuse.
const ringKeep = 256

func (q *ring) len() int { return q.n }

// push appends n.
func (q *ring) push(n Notification) {
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)%len(q.buf)] = n
	q.n++
}

// pop removes and returns the oldest notification. The ring must not be empty.
func (q *ring) pop() Notification {
	n := q.buf[q.head]
	q.buf[q.head] = Notification{}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	if q.n == 0 {
		q.head = 0
		if len(q.buf) > ringKeep {
			q.buf = nil // a burst is over: give its memory back
		}
	}
	return n
}

// at returns the k-th oldest notification, 0 being the next pop. k must be below len.
func (q *ring) at(k int) Notification { return q.buf[(q.head+k)%len(q.buf)] }

// reset empties the ring and releases its buffer.
func (q *ring) reset() { *q = ring{} }

func (q *ring) grow() {
	buf := make([]Notification, max(8, 2*len(q.buf)))
	for i := range q.n {
		buf[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = buf, 0
}
