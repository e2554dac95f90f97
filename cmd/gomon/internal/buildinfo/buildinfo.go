// Package buildinfo says which gomon this is: its semantic version, the
// commit and toolchain it was built from, and its module list. The server's
// version RPC and the --version flags report it.
package buildinfo

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/gomon-dev/gomon/rpc"
)

// Version is gomon's semantic version. It must stay a strict semver without
// a "v" and at least 0.5.0: conmon-rs v0.x clients refuse CreateNamespaces
// below that.
const Version = "0.5.0"

// Set at link time by the Makefile (-X); empty in a plain `go build`, where
// the VCS stamp of the Go toolchain fills in.
var (
	tag       string // git describe --tags --always --dirty
	buildDate string // date -u "+%Y-%m-%d %H:%M:%S"
	commit    string // git rev-parse HEAD
)

// Get returns the build's identity. Every field is non-empty: clients treat
// an empty commit or toolchain string as a broken server.
func Get() rpc.VersionInfo {
	info := rpc.VersionInfo{
		Version:      Version,
		Tag:          tag,
		Commit:       commit,
		BuildDate:    buildDate,
		Target:       runtime.GOOS + "/" + runtime.GOARCH,
		RustVersion:  runtime.Version(),
		CargoVersion: "gomon module (devel)",
		CargoTree:    "(no module information)",
	}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		info.RustVersion = bi.GoVersion
		info.CargoVersion = fmt.Sprintf("%s %s", bi.Main.Path, bi.Main.Version)
		var vcsTime string
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if info.Commit == "" {
					info.Commit = s.Value
				}
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if info.Tag == "" && info.Commit != "" {
			info.Tag = info.Commit[:min(12, len(info.Commit))]
			if dirty {
				info.Tag += "-dirty"
			}
		}
		if info.BuildDate == "" {
			info.BuildDate = vcsTime
		}
		var tree strings.Builder
		fmt.Fprintf(&tree, "%s %s\n", bi.Main.Path, bi.Main.Version)
		for _, d := range bi.Deps {
			v := d.Version
			if d.Replace != nil {
				v += " => " + d.Replace.Path + " " + d.Replace.Version
			}
			fmt.Fprintf(&tree, "├── %s %s\n", d.Path, v)
		}
		info.CargoTree = tree.String()
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	if info.Tag == "" {
		info.Tag = "none"
	}
	if info.BuildDate == "" {
		info.BuildDate = "unknown"
	}
	return info
}

// Text renders the --version output: one "key: value" line per field, the
// module tree only when full.
func Text(full bool) string {
	i := Get()
	var b strings.Builder
	fmt.Fprintf(&b, "version: %s\ntag: %s\ncommit: %s\nbuild: %s\ntarget: %s\n%s\n%s\n",
		i.Version, i.Tag, i.Commit, i.BuildDate, i.Target, i.RustVersion, i.CargoVersion)
	if full {
		fmt.Fprintf(&b, "\ncargo tree: %s", i.CargoTree)
	}
	return b.String()
}

// JSON renders the --version-json output: one line with the keys, in order,
// that the conmon-rs Go client's ServerVersion reads.
func JSON(full bool) (string, error) {
	i := Get()
	tree := ""
	if full {
		tree = i.CargoTree
	}
	v := struct {
		Verbose      bool   `json:"verbose"`
		Version      string `json:"version"`
		Tag          string `json:"tag"`
		Commit       string `json:"commit"`
		BuildDate    string `json:"build_date"`
		Target       string `json:"target"`
		RustVersion  string `json:"rust_version"`
		CargoVersion string `json:"cargo_version"`
		CargoTree    string `json:"cargo_tree"`
	}{full, i.Version, i.Tag, i.Commit, i.BuildDate, i.Target, i.RustVersion, i.CargoVersion, tree}
	out, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode version: %w", err)
	}
	return string(out), nil
}
