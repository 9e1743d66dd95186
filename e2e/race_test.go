//go:build race

package e2e

// raceEnabled: the tests run under the race detector, which allows 8128
// goroutines at most.
const raceEnabled = true
