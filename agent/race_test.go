//go:build race

package agent

// raceDetector reports a test binary built with -race: its resident memory is mostly the race
// detector's.
const raceDetector = true
