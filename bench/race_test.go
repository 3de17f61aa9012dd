//go:build race

package bench

// raceEnabled: the race detector is on. sync.Pool then drops what it is
// given at random, so a path that reuses pooled buffers allocates.
const raceEnabled = true
