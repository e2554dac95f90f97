//go:build !race

package v101

// raceEnabled reports whether the test binary was built with -race.
const raceEnabled = false
