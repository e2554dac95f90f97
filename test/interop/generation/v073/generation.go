// Package generation holds what differs between the builds of the interop
// suite: test/interop/go.v073.mod replaces this module with
// generation/v073, go.mod with generation/v101, so the client a build links
// and these facts are chosen by the same file and cannot disagree.
package generation

// Client names the conmon-rs Go client go.v073.mod pins.
const Client = "v0.7.3"

// ServerLogDriver is the --log-driver CRI-O passes with this client
// generation: CRI-O 1.34 (v0.7.x client) always passes "systemd". With no
// journald on the host gomon is expected to fall back to stderr.
const ServerLogDriver = "systemd"

// HoldsConnection is whether the client keeps one connection for all its
// calls: the v0.7.x client dials one per call (docs/contract.md).
const HoldsConnection = false
