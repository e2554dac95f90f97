package cli

// Test-only helpers: the program needs neither.

// Usage returns the server's help page (what `gomon --help` prints).
func Usage() string { return rootCommand().help() }

// Args returns the argv (after the program name) that makes gomon run this
// pause configuration, in the form conmon-rs uses to spawn itself.
func (p PauseConfig) Args() []string {
	args := []string{pauseCommand, "--base-path", p.BasePath, "--pod-id=" + p.PodID}
	for i, on := range []bool{p.IPC, p.PID, p.Net, p.UTS, p.User} {
		if on {
			args = append(args, []string{"--ipc", "--pid", "--net", "--uts", "--user"}[i])
		}
	}
	// conmon-rs only sends mappings with --user; sending them whenever they
	// are set keeps Args the exact inverse of Parse.
	for _, m := range p.UIDMappings {
		args = append(args, "--uid-mappings="+m)
	}
	for _, m := range p.GIDMappings {
		args = append(args, "--gid-mappings="+m)
	}
	return args
}
