package monitor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/ioloop"
	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// inJournalNS marks the re-executed test process that runs in its own
// mount namespace with its own systemd-journald.
const inJournalNS = "_GOMON_TEST_IN_JOURNAL_NS"

// TestJournaldEntriesFound: a container logging to journald under a
// kubelet-annotated bundle has its entries found by `journalctl
// CONTAINER_NAME=…`, with its pod's fields and its tag as
// SYSLOG_IDENTIFIER. The test runs itself again in a private mount
// namespace with tmpfs on /run and /var/log/journal, where it
// starts its own systemd-journald: the host's journal (if any) and other
// tests never see it.
func TestJournaldEntriesFound(t *testing.T) {
	if os.Getenv(inJournalNS) == "" {
		monitortest.RequireRoot(t)
		for _, tool := range []string{"unshare", "journalctl"} {
			if _, err := exec.LookPath(tool); err != nil {
				skipOrFailRoot(t, tool+" not found")
			}
		}
		if _, err := os.Stat(journaldBinary); err != nil {
			skipOrFailRoot(t, journaldBinary+" not found")
		}
		cmd := exec.Command("unshare", "--mount", "--propagation", "private",
			os.Args[0], "-test.run=^TestJournaldEntriesFound$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), inJournalNS+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestJournaldEntriesFound")) {
			t.Fatalf("in a private mount namespace: %v\n%s", err, out)
		}
		t.Logf("in a private mount namespace:\n%s", out)
		return
	}

	// journald keeps its sockets in /run/systemd and its journal in
	// /run/log/journal until flushed to /var/log/journal: all of them
	// on tmpfs, seen only in this namespace.
	for _, dir := range []string{"/run", "/var/log/journal"} {
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
			t.Fatalf("mount tmpfs on %s: %v", dir, err)
		}
	}
	jd := exec.Command(journaldBinary)
	if err := jd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = jd.Process.Kill(); _ = jd.Wait() }()
	if !monitortest.WaitFor(10*time.Second, func() bool {
		_, err := os.Stat(ioloop.JournalSocket)
		return err == nil
	}) {
		t.Fatal("systemd-journald did not create its socket")
	}

	m := newTestMonitor(t)
	p := newPaths(t)
	bundle := monitortest.Bundle(t, "sh", "-c", "echo hello from web; echo oops >&2")
	annotate(t, bundle, map[string]string{
		"io.kubernetes.container.name": "web",
		"io.kubernetes.pod.name":       "shop-7d9",
		"io.kubernetes.pod.namespace":  "prod",
		"io.kubernetes.pod.uid":        "8d1e5f2a-uid",
		"io.gomon.log.tag":             "shop-web",
	})
	const id = "0123456789abcdef0123456789abcdef"
	req := p.request(id, bundle)
	req.LogDrivers = append(req.LogDrivers, LogDriver{Type: LogJournald})
	if st := runToExit(t, m, req); st.Code != 0 {
		t.Fatalf("exit %+v", st)
	}

	want := []map[string]string{
		{"MESSAGE": "hello from web", "STREAM": "stdout", "PRIORITY": "6"},
		{"MESSAGE": "oops", "STREAM": "stderr", "PRIORITY": "3"},
	}
	common := map[string]string{
		"CONTAINER_NAME": "web", "CONTAINER_ID": "0123456789ab", "CONTAINER_ID_FULL": id,
		"CONTAINER_TAG": "shop-web", "SYSLOG_IDENTIFIER": "shop-web",
		"POD_NAME": "shop-7d9", "POD_NAMESPACE": "prod", "POD_UID": "8d1e5f2a-uid",
	}
	var entries []map[string]any
	monitortest.WaitFor(10*time.Second, func() bool { // journald writes a little later
		entries = journalctl(t, "CONTAINER_NAME=web")
		return len(entries) >= len(want)
	})
	if len(entries) != len(want) {
		t.Fatalf("journalctl CONTAINER_NAME=web found %d entries, want %d: %v", len(entries), len(want), entries)
	}
	for i, w := range want {
		for k, v := range common {
			w[k] = v
		}
		for k, v := range w {
			if got := fmt.Sprint(entries[i][k]); got != v {
				t.Errorf("entry %d: %s=%q, want %q", i, k, got, v)
			}
		}
	}
	if n := len(journalctl(t, "POD_NAMESPACE=prod", "SYSLOG_IDENTIFIER=shop-web")); n != len(want) {
		t.Errorf("journalctl POD_NAMESPACE=prod SYSLOG_IDENTIFIER=shop-web found %d entries, want %d", n, len(want))
	}
	fmt.Println("journal entries:", len(entries))
}

// journaldBinary is systemd-journald, started by hand.
const journaldBinary = "/lib/systemd/systemd-journald"

// journalctl returns the entries matching matches, oldest first.
func journalctl(t *testing.T, matches ...string) []map[string]any {
	t.Helper()
	// The monitor's reaper may take journalctl's exit status: judge by
	// the output, which Output reads to EOF first.
	out, err := exec.Command("journalctl", append([]string{"-o", "json", "--no-pager"}, matches...)...).Output()
	if err != nil && len(out) == 0 && !strings.Contains(err.Error(), "no child processes") {
		t.Logf("journalctl: %v", err)
	}
	var entries []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("journalctl output %q: %v", line, err)
		}
		entries = append(entries, e)
	}
	return entries
}

// skipOrFailRoot skips, or with GOMON_REQUIRE_ROOT=1 fails.
func skipOrFailRoot(t *testing.T, why string) {
	t.Helper()
	if os.Getenv(monitortest.EnvRequireRoot) == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}
