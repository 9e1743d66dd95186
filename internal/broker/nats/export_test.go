package nats

// IDFor is the id the broker gives the event with stream sequence seq
// (the broker suite builds ids after the head with it).
func (b *Broker) IDFor(seq uint64) string { return b.state.Load().id(seq) }
