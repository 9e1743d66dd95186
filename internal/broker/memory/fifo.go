package memory

// fifo is a queue on a ring that grows by doubling and shrinks when it is
// mostly empty, so what a burst made it hold is given back.
type fifo[T any] struct {
	buf  []T
	head int // index of the oldest element
	n    int // elements held
}

func (q *fifo[T]) len() int { return q.n }

// at returns the i-th element from the oldest.
func (q *fifo[T]) at(i int) *T { return &q.buf[(q.head+i)%len(q.buf)] }

func (q *fifo[T]) push(v T) {
	if q.n == len(q.buf) {
		q.resize(max(2*len(q.buf), 16))
	}
	q.buf[(q.head+q.n)%len(q.buf)] = v
	q.n++
}

// pop removes and returns the oldest element; the queue must not be empty.
func (q *fifo[T]) pop() T {
	var zero T
	v := q.buf[q.head]
	q.buf[q.head] = zero // no reference kept for the collector to see
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	if len(q.buf) > 64 && q.n < len(q.buf)/4 {
		q.resize(len(q.buf) / 2)
	}
	return v
}

// filter keeps the elements keep approves, in order.
func (q *fifo[T]) filter(keep func(*T) bool) {
	out := make([]T, 0, max(16, q.n))
	for i := 0; i < q.n; i++ {
		if v := q.at(i); keep(v) {
			out = append(out, *v)
		}
	}
	q.buf, q.head, q.n = out[:cap(out)], 0, len(out)
}

func (q *fifo[T]) resize(size int) {
	buf := make([]T, size)
	for i := 0; i < q.n; i++ {
		buf[i] = *q.at(i)
	}
	q.buf, q.head = buf, 0
}
