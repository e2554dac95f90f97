// Package oom tells whether a container process was killed by the kernel's
// OOM killer (docs/contract.md, "OOM files").
//
// The monitor calls [Watch] as soon as it knows a container's (or exec
// session's) PID, and [Watcher.Stop] once it has reaped that process. Stop
// returns the verdict and releases every file descriptor and goroutine.
//
// The verdict comes from the kernel's per-cgroup OOM-kill counters: the
// `oom_kill` field of memory.oom_control (cgroup v1) or of memory.events
// (cgroup v2). Watch reads a baseline; Stop returns how much the counter
// grew: how many processes of the cgroup were OOM killed. Whether the
// watched process was one of them the counter cannot say; the monitor
// decides from how the process died (a victim dies of SIGKILL).
// Notifications (a v1 eventfd, a v2 inotify watch) serve to notice each
// kill early, while the cgroup still exists: the cgroup may be removed
// between the process's exit and Stop, and then the counter can no longer
// be read.
//
// Which hierarchy applies is decided per process from /proc/<pid>/cgroup: a
// line naming the `memory` controller means v1, otherwise the `0::` line
// means v2. Mount points come from /proc/self/mountinfo, so hybrid hosts
// (cgroup2 at /sys/fs/cgroup/unified) and cgroup namespaces work.
package oom
