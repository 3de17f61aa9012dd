//go:build !race

package bench

// raceEnabled: the race detector is on (see race_test.go).
const raceEnabled = false
