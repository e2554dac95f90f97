// Package pause holds a pod's namespaces for CreateNamespaces
// (docs/contract.md, "CreateNamespaces" and "gomon pause"): a small "pause" process lives in the new
// namespaces, and each of its five namespaces (ipc, pid, net, user, uts) is
// bind-mounted onto an empty file under the base path, in the layout pinns
// uses: <base>/<ns>ns/<podID>. Namespaces not selected are the daemon's own.
// The pause PID is written to <base>/conmonrs/<podID>.pid.
//
// # Why a cloned child and not unshare
//
// conmon-rs unshares the namespaces in its pause process and then forks. A
// Go process cannot do that safely: it is multi-threaded before main runs,
// unshare(2) of net, ipc and uts affects only the calling thread,
// CLONE_NEWPID only affects later children, and CLONE_NEWUSER refuses a
// multi-threaded caller. So the split is:
//
//   - The daemon ([Create]) starts `<binary> pause --base-path B --pod-id=ID
//     [--ipc] [--pid] [--net] [--user --uid-mappings=M... --gid-mappings=M...]
//     [--uts]` with the namespaces as clone flags, and for a user namespace
//     the ID mappings, both through syscall.SysProcAttr: the kernel creates
//     every namespace atomically at clone time, before the child runs Go
//     code. With --pid the pause process is PID 1 of the new PID namespace.
//   - The pause process ([Main], called by `gomon pause`) installs its
//     signal handlers, reports ready over an inherited pipe, then sleeps,
//     reaping orphans re-parented to it, until SIGTERM, SIGINT or SIGQUIT.
//     The handshake matters: PID 1 of a namespace ignores signals it has no
//     handler for, so a SIGTERM sent earlier would be lost.
//   - The daemon, still in the host mount namespace, then bind-mounts
//     /proc/<pause>/ns/<ns> onto the five files and writes the PID file.
//     Doing the mounts on the daemon side makes them visible on the host
//     even when a user namespace is requested.
//
// Run by hand (without the daemon's handshake pipe), `gomon pause` does the
// daemon side itself and exits 0 once the files exist, leaving the pause
// process running, as `conmonrs pause` does.
//
// # Reaping
//
// The daemon has exactly one reaper. Create never waits for the pause
// process itself; it starts it through the caller's [Reaper] and learns of
// its exit from the channel the reaper returns.
package pause
