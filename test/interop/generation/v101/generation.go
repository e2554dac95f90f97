// Package generation holds what differs between the builds of the interop
// suite: test/interop/go.mod replaces this module with generation/v101,
// go.v073.mod with generation/v073, so the client a build links and these
// facts are chosen by the same file and cannot disagree.
package generation

// Client names the conmon-rs Go client go.mod pins.
const Client = "v1.0.1"

// ServerLogDriver is the --log-driver CRI-O main (v1.0.x client) passes by
// default; see docs/contract.md, "How CRI-O starts gomon".
const ServerLogDriver = "none"

// HoldsConnection is whether the client keeps one connection for all its
// calls: the v1.0.x client dials once and resets the connection on any
// error (docs/upgrade.md, "Clients during the upgrade").
const HoldsConnection = true
