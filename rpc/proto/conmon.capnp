# The conmon-rs RPC interface, wire layout of conmon-rs v1.0 (CRI-O main).
#
# Written for gomon from the conmon-rs protocol description. The file ID and
# every type and field name are conmon-rs's: type IDs are derived from them,
# and clients address the interface by its derived ID 0xb737e899dd6633f1.
# Keep names and ordinals exactly as they are; rpc/protov0 holds the v0.x
# layout, where every metadataOld is Data instead of Void.
@0xffaaf7385bc4adad;

using Go = import "/go.capnp";
$Go.package("proto");
$Go.import("github.com/gomon-dev/gomon/rpc/proto");

interface Conmon {
    version @0 (request: VersionRequest) -> (response: VersionResponse);
    createContainer @1 (request: CreateContainerRequest) -> (response: CreateContainerResponse);
    execSyncContainer @2 (request: ExecSyncContainerRequest) -> (response: ExecSyncContainerResponse);
    attachContainer @3 (request: AttachRequest) -> (response: AttachResponse);
    reopenLogContainer @4 (request: ReopenLogRequest) -> (response: ReopenLogResponse);
    setWindowSizeContainer @5 (request: SetWindowSizeRequest) -> (response: SetWindowSizeResponse);
    createNamespaces @6 (request: CreateNamespacesRequest) -> (response: CreateNamespacesResponse);
    startFdSocket @7 (request: StartFdSocketRequest) -> (response: StartFdSocketResponse);
    serveExecContainer @8 (request: ServeExecContainerRequest) -> (response: ServeExecContainerResponse);
    serveAttachContainer @9 (request: ServeAttachContainerRequest) -> (response: ServeAttachContainerResponse);
    servePortForwardContainer @10 (request: ServePortForwardContainerRequest) -> (response: ServePortForwardContainerResponse);

    using Metadata = TextTextMap;
    using TextTextMap = List(TextTextMapEntry);

    struct TextTextMapEntry {
        key @0 :Text;
        value @1 :Text;
    }

    struct VersionRequest {
        verbose @0 :Bool;
        metadataOld @1 :Void;
        metadata @2 :Metadata;
    }

    struct VersionResponse {
        processId @0 :UInt32;
        version @1 :Text;
        tag @2 :Text;
        commit @3 :Text;
        buildDate @4 :Text;
        target @5 :Text;
        rustVersion @6 :Text;
        cargoVersion @7 :Text;
        cargoTree @8 :Text;
        metadata @9 :Void;
    }

    struct CreateContainerRequest {
        id @0 :Text;
        bundlePath @1 :Text;
        terminal @2 :Bool;
        stdin @3 :Bool;
        exitPaths @4 :List(Text);
        oomExitPaths @5 :List(Text);
        logDrivers @6 :List(LogDriver);
        cleanupCmd @7 :List(Text);
        globalArgs @8 :List(Text);
        commandArgs @9 :List(Text);
        metadataOld @10 :Void;
        metadata @11 :Metadata;
        envVars @12 :TextTextMap;
        cgroupManager @13 :CgroupManager;
        additionalFds @14 :List(UInt64);
        leakFds @15 :List(UInt64);
    }

    struct LogDriver {
        type @0 :Type;
        path @1 :Text;
        maxSize @2 :UInt64; # 0 means unlimited

        enum Type {
            containerRuntimeInterface @0;
            json @1;
            journald @2;
        }
    }

    # The wire default (0) is systemd.
    enum CgroupManager {
        systemd @0;
        cgroupfs @1;
    }

    struct CreateContainerResponse {
        containerPid @0 :UInt32;
    }

    struct ExecSyncContainerRequest {
        id @0 :Text;
        timeoutSec @1 :UInt64;
        command @2 :List(Text);
        terminal @3 :Bool;
        metadataOld @4 :Void;
        metadata @5 :Metadata;
        envVars @6 :TextTextMap;
        cgroupManager @7 :CgroupManager;
    }

    struct ExecSyncContainerResponse {
        exitCode @0 :Int32;
        stdout @1 :Data;
        stderr @2 :Data;
        timedOut @3 :Bool;
    }

    struct AttachRequest {
        id @0 :Text;
        socketPath @1 :Text;
        execSessionId @2 :Text;
        stopAfterStdinEof @3 :Bool;
        metadataOld @4 :Void;
        metadata @5 :Metadata;
    }

    struct AttachResponse {}

    struct ReopenLogRequest {
        id @0 :Text;
        metadataOld @1 :Void;
        metadata @2 :Metadata;
    }

    struct ReopenLogResponse {}

    struct SetWindowSizeRequest {
        id @0 :Text;
        width @1 :UInt16;  # columns
        height @2 :UInt16; # rows
        metadataOld @3 :Void;
        metadata @4 :Metadata;
    }

    struct SetWindowSizeResponse {}

    struct CreateNamespacesRequest {
        metadataOld @0 :Void;
        namespaces @1 :List(Namespace);
        uidMappings @2 :List(Text);
        gidMappings @3 :List(Text);
        basePath @4 :Text;
        podId @5 :Text;
        metadata @6 :Metadata;
    }

    enum Namespace {
        ipc @0;
        net @1;
        pid @2;
        user @3;
        uts @4;
    }

    struct CreateNamespacesResponse {
        namespaces @0 :List(NamespaceResponse);
    }

    struct NamespaceResponse {
        type @0 :Namespace;
        path @1 :Text;
    }

    struct StartFdSocketRequest {
        metadata @0 :Metadata;
    }

    struct StartFdSocketResponse {
        path @0 :Text;
    }

    struct ServeExecContainerRequest {
        metadata @0 :Metadata;
        id @1 :Text;
        command @2 :List(Text);
        tty @3 :Bool;
        stdin @4 :Bool;
        stdout @5 :Bool;
        stderr @6 :Bool;
        cgroupManager @7 :CgroupManager;
    }

    struct ServeExecContainerResponse {
        url @0 :Text;
    }

    struct ServeAttachContainerRequest {
        metadata @0 :Metadata;
        id @1 :Text;
        stdin @2 :Bool;
        stdout @3 :Bool;
        stderr @4 :Bool;
    }

    struct ServeAttachContainerResponse {
        url @0 :Text;
    }

    struct ServePortForwardContainerRequest {
        metadata @0 :Metadata;
        netNsPath @1 :Text;
    }

    struct ServePortForwardContainerResponse {
        url @0 :Text;
    }
}
