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
