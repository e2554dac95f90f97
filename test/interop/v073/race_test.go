//go:build race

package v073

// raceEnabled reports whether the test binary was built with -race.
const raceEnabled = true
