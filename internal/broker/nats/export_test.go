package nats

// IDFor is the id the broker gives the event with stream sequence seq
// (the broker suite builds ids after the head with it).
func (b *Broker) IDFor(seq uint64) string { return b.state.Load().id(seq) }

// TopicStates is how many topics the broker keeps publish state for.
func (b *Broker) TopicStates() int {
	b.topicsMu.Lock()
	defer b.topicsMu.Unlock()
	return len(b.topics)
}

// MaxIdleTopics is the bound on the publish state of idle topics.
const MaxIdleTopics = maxIdleTopics

// Following is how many topics the live feed follows (subscribes to).
func (b *Broker) Following() int { return int(b.following.Load()) }

// Subscriptions is how many subscriptions the broker's connection holds.
func (b *Broker) Subscriptions() int { return b.nc.NumSubscriptions() }

// DropLive makes the live feed ignore the republished messages whose data
// drop returns true for, as core NATS loses messages (nil: none).
func (b *Broker) DropLive(drop func(data []byte) bool) { b.liveDrop.Store(&drop) }
