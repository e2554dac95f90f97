package reliability

// Upgrades between releases that write different schemas of the upgrade
// record (docs/upgrade.md, "The state record"): the binary of the last
// schema-2 commit, built from the repository's history, and this one.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// schema2Commit is the last commit whose gomon writes and reads schema 2
// only. A binary must take over a daemon of it, as a node rolls a new
// gomon out over pods the old one runs.
const schema2Commit = "f4df06098ce6977d15b7bad51ee0462f032ced45"

var (
	schema2Once sync.Once
	schema2Bin  string
	schema2Err  error
)

// schema2Binary builds gomon as of schema2Commit, once per test binary,
// from the history of the repository the tests run in (`git archive`). A
// clone without that commit (a shallow one, a source tarball) skips the
// test and says so, as `make bench-baseline` does; any other failure
// fails it.
func schema2Binary(t *testing.T) string {
	t.Helper()
	if err := exec.Command("git", "-C", "../..", "cat-file", "-e", schema2Commit+"^{commit}").Run(); err != nil {
		t.Skipf("git commit %s is not in this clone (%v): the upgrade across schemas is not checked", schema2Commit, err)
	}
	schema2Once.Do(func() {
		dir, err := os.MkdirTemp("", "gomon-schema2-")
		if err != nil {
			schema2Err = err
			return
		}
		src := filepath.Join(dir, "src")
		if err := os.Mkdir(src, 0o755); err != nil {
			schema2Err = err
			return
		}
		var tarball, stderr bytes.Buffer
		archive := exec.Command("git", "-C", "../..", "archive", "--format=tar", schema2Commit)
		archive.Stdout, archive.Stderr = &tarball, &stderr
		if err := archive.Run(); err != nil {
			schema2Err = fmt.Errorf("git archive %s (a full clone's history is needed): %w: %s", schema2Commit, err, stderr.String())
			return
		}
		untar := exec.Command("tar", "-x", "-C", src)
		untar.Stdin = &tarball
		if out, err := untar.CombinedOutput(); err != nil {
			schema2Err = fmt.Errorf("untar: %w: %s", err, out)
			return
		}
		schema2Bin = filepath.Join(dir, "gomon-schema2")
		schema2Err = buildGomon(src, schema2Bin, "schema2")
	})
	if schema2Err != nil {
		t.Fatal(schema2Err)
	}
	return schema2Bin
}

// TestUpgradeAcrossSchemas: a daemon of the schema-2 release is upgraded
// to this binary with a running and an exited container, and goes on
// serving both. Back to the schema-2 binary: with metrics off the record
// needs nothing newer and the upgrade is made; with metrics on and a
// container that exited under this binary, the record is schema 3, which
// the old binary refuses in its dry run, and the daemon serves on, not
// upgraded. The PID stays throughout.
func TestUpgradeAcrossSchemas(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	old := schema2Binary(t)
	cur := upgradeBinaries(t)[0] // tag upgrade-a
	for _, metricsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("metrics=%v", metricsOn), func(t *testing.T) {
			if metricsOn {
				t.Setenv("GOMON_METRICS_TEXTFILE_DIR", t.TempDir()) // inherited by the daemon
			}
			cfg := serverConfig(t, runcPath(t))
			cfg.ConmonServerPath = old
			s := startGomon(t, cfg)
			if tag, _ := versionTag(t, s); tag != "schema2" {
				t.Fatalf("daemon tag %q, want schema2", tag)
			}
			idle := running(t, s, nil, "sleep", "1000000")
			before := running(t, s, nil, "sh", "-c", "exit 3")
			if code := before.exitCode(t); code != 3 {
				t.Fatalf("exit code %d, want 3", code)
			}

			t.Logf("schema 2 -> 3: %s", upgradeOK(t, old, s.runDir, cur))
			if tag, pid := versionTag(t, s); tag != "upgrade-a" || pid != s.pid {
				t.Fatalf("after the upgrade: tag %q pid %d, want upgrade-a, %d", tag, pid, s.pid)
			}
			execEcho(t, s, idle, "taken-over")
			after := running(t, s, nil, "sh", "-c", "exit 4")
			if code := after.exitCode(t); code != 4 {
				t.Fatalf("exit code %d, want 4", code)
			}

			out, ok := gomonUpgrade(t, cur, s.runDir, old)
			t.Logf("schema 3 -> 2: %s", out)
			wantTag := "schema2"
			if metricsOn {
				if ok || !strings.Contains(out, "unknown upgrade state schema: schema 3") {
					t.Fatalf("upgrade back to schema 2 with an exited container's counters: %s (ok %v), want refused for schema 3", out, ok)
				}
				wantTag = "upgrade-a"
			} else if !ok || !strings.Contains(out, "upgraded") {
				t.Fatalf("upgrade back to schema 2 without metrics: %s", out)
			}
			if tag, pid := versionTag(t, s); tag != wantTag || pid != s.pid {
				t.Fatalf("at the end: tag %q pid %d, want %s, %d", tag, pid, wantTag, s.pid)
			}
			execEcho(t, s, idle, "still-here")
		})
	}
}
