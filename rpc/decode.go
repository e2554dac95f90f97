package rpc

import (
	"fmt"

	"capnproto.org/go/capnp/v3"

	"github.com/gomon-dev/gomon/monitor"
	"github.com/gomon-dev/gomon/rpc/proto"
	"github.com/gomon-dev/gomon/rpc/protov0"
)

// Two wire generations.
//
// conmon-rs v1.0 retyped every metadataOld field from Data to Void. Void takes
// no pointer slot, so each pointer field after metadataOld moved down one
// slot; fields before it did not move. gomon reads the fields before
// metadataOld through the v1.0 accessors (same slots in both layouts) and the
// ones after it through the accessors of the generation the client speaks.
//
// The generation is told by the pointer count of the received struct: a v0.x
// client allocates exactly one pointer more per request than a v1.0 client
// (capnp-go sizes structs from the schema). These are the v0.x counts.
const (
	v0VersionPointers        = 2
	v0CreatePointers         = 13
	v0ExecSyncPointers       = 5
	v0AttachPointers         = 5
	v0ReopenLogPointers      = 3
	v0SetWindowSizePointers  = 3
	v0CreateNamespacePointer = 7
)

// isV0 reports whether s was written by a v0.x (conmon-rs ≤ 0.8) client.
func isV0(s capnp.Struct, v0Pointers uint16) bool {
	return s.Size().PointerCount >= v0Pointers
}

// Metadata is the string map a client sends with each request: the W3C
// trace context (traceparent, tracestate) and baggage.
type Metadata map[string]string

type versionRequest struct {
	verbose  bool
	metadata Metadata
}

func decodeVersion(r proto.Conmon_VersionRequest) (versionRequest, error) {
	var md proto.Conmon_TextTextMapEntry_List
	var err error
	if isV0(capnp.Struct(r), v0VersionPointers) {
		md, err = v0Map(protov0.Conmon_VersionRequest(r).Metadata())
	} else {
		md, err = r.Metadata()
	}
	if err != nil {
		return versionRequest{}, field("metadata", err)
	}
	m, err := textMap(md)
	if err != nil {
		return versionRequest{}, field("metadata", err)
	}
	return versionRequest{verbose: r.Verbose(), metadata: m}, nil
}

func decodeCreate(r proto.Conmon_CreateContainerRequest) (monitor.CreateRequest, Metadata, error) {
	d := decoder{}
	req := monitor.CreateRequest{
		ID:           d.text("id", r.Id),
		BundlePath:   d.text("bundlePath", r.BundlePath),
		Terminal:     r.Terminal(),
		Stdin:        r.Stdin(),
		ExitPaths:    d.texts("exitPaths", r.ExitPaths),
		OOMExitPaths: d.texts("oomExitPaths", r.OomExitPaths),
		LogDrivers:   d.logDrivers(r),
		CleanupCmd:   d.texts("cleanupCmd", r.CleanupCmd),
		GlobalArgs:   d.texts("globalArgs", r.GlobalArgs),
		CommandArgs:  d.texts("commandArgs", r.CommandArgs),
		Cgroup:       cgroupManager(r.CgroupManager()),
	}
	var md Metadata
	if isV0(capnp.Struct(r), v0CreatePointers) {
		o := protov0.Conmon_CreateContainerRequest(r)
		md = d.textMap("metadata", func() (proto.Conmon_TextTextMapEntry_List, error) { return v0Map(o.Metadata()) })
		req.Env = d.textMap("envVars", func() (proto.Conmon_TextTextMapEntry_List, error) { return v0Map(o.EnvVars()) })
		req.AdditionalFDs = d.uint64s("additionalFds", o.AdditionalFds)
		req.LeakFDs = d.uint64s("leakFds", o.LeakFds)
	} else {
		md = d.textMap("metadata", r.Metadata)
		req.Env = d.textMap("envVars", r.EnvVars)
		req.AdditionalFDs = d.uint64s("additionalFds", r.AdditionalFds)
		req.LeakFDs = d.uint64s("leakFds", r.LeakFds)
	}
	return req, md, d.err
}

func decodeExecSync(r proto.Conmon_ExecSyncContainerRequest) (monitor.ExecSyncRequest, Metadata, error) {
	d := decoder{}
	req := monitor.ExecSyncRequest{
		ID:         d.text("id", r.Id),
		TimeoutSec: r.TimeoutSec(),
		Command:    d.texts("command", r.Command),
		Terminal:   r.Terminal(),
		Cgroup:     cgroupManager(r.CgroupManager()),
	}
	var md Metadata
	if isV0(capnp.Struct(r), v0ExecSyncPointers) {
		o := protov0.Conmon_ExecSyncContainerRequest(r)
		md = d.textMap("metadata", func() (proto.Conmon_TextTextMapEntry_List, error) { return v0Map(o.Metadata()) })
		req.Env = d.textMap("envVars", func() (proto.Conmon_TextTextMapEntry_List, error) { return v0Map(o.EnvVars()) })
	} else {
		md = d.textMap("metadata", r.Metadata)
		req.Env = d.textMap("envVars", r.EnvVars)
	}
	return req, md, d.err
}

func decodeAttach(r proto.Conmon_AttachRequest) (monitor.AttachRequest, Metadata, error) {
	d := decoder{}
	req := monitor.AttachRequest{
		ID:                d.text("id", r.Id),
		SocketPath:        d.text("socketPath", r.SocketPath),
		ExecSessionID:     d.text("execSessionId", r.ExecSessionId),
		StopAfterStdinEOF: r.StopAfterStdinEof(),
	}
	var md Metadata
	if isV0(capnp.Struct(r), v0AttachPointers) {
		o := protov0.Conmon_AttachRequest(r)
		md = d.textMap("metadata", func() (proto.Conmon_TextTextMapEntry_List, error) { return v0Map(o.Metadata()) })
	} else {
		md = d.textMap("metadata", r.Metadata)
	}
	return req, md, d.err
}

func decodeReopenLog(r proto.Conmon_ReopenLogRequest) (id string, md Metadata, err error) {
	d := decoder{}
	id = d.text("id", r.Id)
	if isV0(capnp.Struct(r), v0ReopenLogPointers) {
		o := protov0.Conmon_ReopenLogRequest(r)
		md = d.textMap("metadata", func() (proto.Conmon_TextTextMapEntry_List, error) { return v0Map(o.Metadata()) })
	} else {
		md = d.textMap("metadata", r.Metadata)
	}
	return id, md, d.err
}

type windowSize struct {
	id            string
	width, height uint16
}

func decodeSetWindowSize(r proto.Conmon_SetWindowSizeRequest) (windowSize, Metadata, error) {
	d := decoder{}
	ws := windowSize{id: d.text("id", r.Id), width: r.Width(), height: r.Height()}
	var md Metadata
	if isV0(capnp.Struct(r), v0SetWindowSizePointers) {
		o := protov0.Conmon_SetWindowSizeRequest(r)
		md = d.textMap("metadata", func() (proto.Conmon_TextTextMapEntry_List, error) { return v0Map(o.Metadata()) })
	} else {
		md = d.textMap("metadata", r.Metadata)
	}
	return ws, md, d.err
}

// decodeCreateNamespaces reads a request whose every field follows
// metadataOld, so each generation is read with its own accessors.
func decodeCreateNamespaces(r proto.Conmon_CreateNamespacesRequest) (monitor.NamespacesRequest, Metadata, error) {
	d := decoder{}
	var req monitor.NamespacesRequest
	var md Metadata
	var nsl capnp.EnumList[proto.Conmon_Namespace]
	if isV0(capnp.Struct(r), v0CreateNamespacePointer) {
		o := protov0.Conmon_CreateNamespacesRequest(r)
		l, err := o.Namespaces()
		if err != nil {
			d.fail("namespaces", err)
		}
		nsl = capnp.EnumList[proto.Conmon_Namespace](l)
		req.UIDMappings = d.texts("uidMappings", o.UidMappings)
		req.GIDMappings = d.texts("gidMappings", o.GidMappings)
		req.BasePath = d.text("basePath", o.BasePath)
		req.PodID = d.text("podId", o.PodId)
		md = d.textMap("metadata", func() (proto.Conmon_TextTextMapEntry_List, error) { return v0Map(o.Metadata()) })
	} else {
		l, err := r.Namespaces()
		if err != nil {
			d.fail("namespaces", err)
		}
		nsl = l
		req.UIDMappings = d.texts("uidMappings", r.UidMappings)
		req.GIDMappings = d.texts("gidMappings", r.GidMappings)
		req.BasePath = d.text("basePath", r.BasePath)
		req.PodID = d.text("podId", r.PodId)
		md = d.textMap("metadata", r.Metadata)
	}
	for i := 0; i < nsl.Len(); i++ {
		ns, ok := namespaceFromWire(nsl.At(i))
		if !ok {
			d.fail("namespaces", fmt.Errorf("unknown namespace %d", nsl.At(i)))
			continue
		}
		req.Namespaces = append(req.Namespaces, ns)
	}
	return req, md, d.err
}

func decodeServeExec(r proto.Conmon_ServeExecContainerRequest) (monitor.ServeExecRequest, Metadata, error) {
	d := decoder{}
	req := monitor.ServeExecRequest{
		ID:      d.text("id", r.Id),
		Command: d.texts("command", r.Command),
		TTY:     r.Tty(),
		Stdin:   r.Stdin(),
		Stdout:  r.Stdout(),
		Stderr:  r.Stderr(),
		Cgroup:  cgroupManager(r.CgroupManager()),
	}
	md := d.textMap("metadata", r.Metadata)
	return req, md, d.err
}

func decodeServeAttach(r proto.Conmon_ServeAttachContainerRequest) (monitor.ServeAttachRequest, Metadata, error) {
	d := decoder{}
	req := monitor.ServeAttachRequest{
		ID:     d.text("id", r.Id),
		Stdin:  r.Stdin(),
		Stdout: r.Stdout(),
		Stderr: r.Stderr(),
	}
	md := d.textMap("metadata", r.Metadata)
	return req, md, d.err
}

// decodeStartFdSocket reads StartFdSocket's request, which holds only
// metadata.
func decodeStartFdSocket(r proto.Conmon_StartFdSocketRequest) (none, Metadata, error) {
	d := decoder{}
	md := d.textMap("metadata", r.Metadata)
	return none{}, md, d.err
}

// decodeServePortForward reads ServePortForwardContainer's request: the
// pod's network namespace path.
func decodeServePortForward(r proto.Conmon_ServePortForwardContainerRequest) (string, Metadata, error) {
	d := decoder{}
	path := d.text("netNsPath", r.NetNsPath)
	md := d.textMap("metadata", r.Metadata)
	return path, md, d.err
}

// decoder reads fields and keeps the first error, so a decode function
// reads as a plain list of fields.
type decoder struct{ err error }

func (d *decoder) fail(name string, err error) {
	if d.err == nil {
		d.err = field(name, err)
	}
}

func (d *decoder) text(name string, get func() (string, error)) string {
	s, err := get()
	if err != nil {
		d.fail(name, err)
	}
	return s
}

func (d *decoder) texts(name string, get func() (capnp.TextList, error)) []string {
	l, err := get()
	if err != nil {
		d.fail(name, err)
		return nil
	}
	if l.Len() == 0 {
		return nil // the Go client sends empty lists as null pointers
	}
	out := make([]string, l.Len())
	for i := range out {
		if out[i], err = l.At(i); err != nil {
			d.fail(name, err)
			return nil
		}
	}
	return out
}

func (d *decoder) uint64s(name string, get func() (capnp.UInt64List, error)) []uint64 {
	l, err := get()
	if err != nil {
		d.fail(name, err)
		return nil
	}
	if l.Len() == 0 {
		return nil
	}
	out := make([]uint64, l.Len())
	for i := range out {
		out[i] = l.At(i)
	}
	return out
}

func (d *decoder) textMap(name string, get func() (proto.Conmon_TextTextMapEntry_List, error)) map[string]string {
	l, err := get()
	if err != nil {
		d.fail(name, err)
		return nil
	}
	m, err := textMap(l)
	if err != nil {
		d.fail(name, err)
	}
	return m
}

func (d *decoder) logDrivers(r proto.Conmon_CreateContainerRequest) []monitor.LogDriver {
	l, err := r.LogDrivers()
	if err != nil {
		d.fail("logDrivers", err)
		return nil
	}
	var out []monitor.LogDriver
	for i := 0; i < l.Len(); i++ {
		ld := l.At(i)
		var typ monitor.LogDriverType
		switch ld.Type() {
		case proto.Conmon_LogDriver_Type_containerRuntimeInterface:
			typ = monitor.LogCRI
		case proto.Conmon_LogDriver_Type_json:
			typ = monitor.LogJSON
		case proto.Conmon_LogDriver_Type_journald:
			typ = monitor.LogJournald
		default:
			d.fail("logDrivers", fmt.Errorf("unknown log driver type %d", ld.Type()))
			continue
		}
		path, err := ld.Path()
		if err != nil {
			d.fail("logDrivers", err)
		}
		out = append(out, monitor.LogDriver{Type: typ, Path: path, MaxSize: ld.MaxSize()})
	}
	return out
}

func textMap(l proto.Conmon_TextTextMapEntry_List) (map[string]string, error) {
	if l.Len() == 0 {
		return nil, nil
	}
	m := make(map[string]string, l.Len())
	for i := 0; i < l.Len(); i++ {
		e := l.At(i)
		k, err := e.Key()
		if err != nil {
			return nil, err
		}
		v, err := e.Value()
		if err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, nil
}

// v0Map views a v0.x map list as the identical v1.0 type.
func v0Map(l protov0.Conmon_TextTextMapEntry_List, err error) (proto.Conmon_TextTextMapEntry_List, error) {
	return proto.Conmon_TextTextMapEntry_List(l), err
}

func cgroupManager(c proto.Conmon_CgroupManager) monitor.CgroupManager {
	if c == proto.Conmon_CgroupManager_cgroupfs {
		return monitor.Cgroupfs
	}
	// The wire default (0) is systemd; unknown values are treated alike,
	// as conmon-rs does.
	return monitor.Systemd
}

// namespaceFromWire maps the wire enum (ipc, net, pid, user, uts) to the
// monitor's order (ipc, pid, net, user, uts).
func namespaceFromWire(n proto.Conmon_Namespace) (monitor.Namespace, bool) {
	switch n {
	case proto.Conmon_Namespace_ipc:
		return monitor.NamespaceIPC, true
	case proto.Conmon_Namespace_net:
		return monitor.NamespaceNet, true
	case proto.Conmon_Namespace_pid:
		return monitor.NamespacePID, true
	case proto.Conmon_Namespace_user:
		return monitor.NamespaceUser, true
	case proto.Conmon_Namespace_uts:
		return monitor.NamespaceUTS, true
	}
	return 0, false
}

// namespaceToWire is the inverse of namespaceFromWire.
func namespaceToWire(n monitor.Namespace) proto.Conmon_Namespace {
	switch n {
	case monitor.NamespaceNet:
		return proto.Conmon_Namespace_net
	case monitor.NamespacePID:
		return proto.Conmon_Namespace_pid
	case monitor.NamespaceUser:
		return proto.Conmon_Namespace_user
	case monitor.NamespaceUTS:
		return proto.Conmon_Namespace_uts
	}
	return proto.Conmon_Namespace_ipc
}

func field(name string, err error) error {
	return fmt.Errorf("%w: field %s: %w", errDecode, name, err)
}
