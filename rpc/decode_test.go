package rpc

import (
	"reflect"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/gomon-dev/gomon/monitor"
	"github.com/gomon-dev/gomon/rpc/proto"
	"github.com/gomon-dev/gomon/rpc/protov0"
)

// The tests below write every request struct in both wire layouts with
// every field set, and check that the decoder reads back each field.

var (
	wantMD  = Metadata{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "k=v"}
	wantEnv = map[string]string{"A": "1", "PATH": "/bin"}
)

func newSeg(t *testing.T) *capnp.Segment {
	t.Helper()
	_, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	return seg
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func textList(t *testing.T, seg *capnp.Segment, v ...string) capnp.TextList {
	t.Helper()
	l, err := capnp.NewTextList(seg, int32(len(v)))
	must(t, err)
	for i, s := range v {
		must(t, l.Set(i, s))
	}
	return l
}

func u64List(t *testing.T, seg *capnp.Segment, v ...uint64) capnp.UInt64List {
	t.Helper()
	l, err := capnp.NewUInt64List(seg, int32(len(v)))
	must(t, err)
	for i, x := range v {
		l.Set(i, x)
	}
	return l
}

// mapList builds a v1.0 map list; v0.x maps are the same bytes and are
// converted at the call site.
func mapList(t *testing.T, seg *capnp.Segment, m map[string]string) proto.Conmon_TextTextMapEntry_List {
	t.Helper()
	l, err := proto.NewConmon_TextTextMapEntry_List(seg, int32(len(m)))
	must(t, err)
	i := 0
	for k, v := range m {
		must(t, l.At(i).SetKey(k))
		must(t, l.At(i).SetValue(v))
		i++
	}
	return l
}

func v0MapList(t *testing.T, seg *capnp.Segment, m map[string]string) protov0.Conmon_TextTextMapEntry_List {
	return protov0.Conmon_TextTextMapEntry_List(mapList(t, seg, m))
}

func wantCreate() monitor.CreateRequest {
	return monitor.CreateRequest{
		ID:            "ctr",
		BundlePath:    "/b",
		Terminal:      true,
		Stdin:         true,
		ExitPaths:     []string{"/e1", "/e2"},
		OOMExitPaths:  []string{"/o"},
		LogDrivers:    []monitor.LogDriver{{Type: monitor.LogCRI, Path: "/l", MaxSize: 77}, {Type: monitor.LogJournald}},
		CleanupCmd:    []string{"/bin/true", "x"},
		GlobalArgs:    []string{"--debug"},
		CommandArgs:   []string{"--no-pivot"},
		Env:           wantEnv,
		Cgroup:        monitor.Cgroupfs,
		AdditionalFDs: []uint64{3, 4},
		LeakFDs:       []uint64{5},
	}
}

// setCreateCommon sets the fields before metadataOld, identical in both
// layouts; it takes the v1.0 view of either struct.
func setCreateCommon(t *testing.T, seg *capnp.Segment, r proto.Conmon_CreateContainerRequest) {
	w := wantCreate()
	must(t, r.SetId(w.ID))
	must(t, r.SetBundlePath(w.BundlePath))
	r.SetTerminal(true)
	r.SetStdin(true)
	must(t, r.SetExitPaths(textList(t, seg, w.ExitPaths...)))
	must(t, r.SetOomExitPaths(textList(t, seg, w.OOMExitPaths...)))
	lds, err := r.NewLogDrivers(2)
	must(t, err)
	lds.At(0).SetType(proto.Conmon_LogDriver_Type_containerRuntimeInterface)
	must(t, lds.At(0).SetPath("/l"))
	lds.At(0).SetMaxSize(77)
	lds.At(1).SetType(proto.Conmon_LogDriver_Type_journald)
	must(t, r.SetCleanupCmd(textList(t, seg, w.CleanupCmd...)))
	must(t, r.SetGlobalArgs(textList(t, seg, w.GlobalArgs...)))
	must(t, r.SetCommandArgs(textList(t, seg, w.CommandArgs...)))
	r.SetCgroupManager(proto.Conmon_CgroupManager_cgroupfs)
}

func TestDecodeCreateBothLayouts(t *testing.T) {
	build := map[string]func(t *testing.T) proto.Conmon_CreateContainerRequest{
		"v1.0": func(t *testing.T) proto.Conmon_CreateContainerRequest {
			seg := newSeg(t)
			r, err := proto.NewRootConmon_CreateContainerRequest(seg)
			must(t, err)
			setCreateCommon(t, seg, r)
			must(t, r.SetMetadata(mapList(t, seg, wantMD)))
			must(t, r.SetEnvVars(mapList(t, seg, wantEnv)))
			must(t, r.SetAdditionalFds(u64List(t, seg, 3, 4)))
			must(t, r.SetLeakFds(u64List(t, seg, 5)))
			return r
		},
		"v0.x": func(t *testing.T) proto.Conmon_CreateContainerRequest {
			seg := newSeg(t)
			o, err := protov0.NewRootConmon_CreateContainerRequest(seg)
			must(t, err)
			setCreateCommon(t, seg, proto.Conmon_CreateContainerRequest(o))
			must(t, o.SetMetadataOld([]byte(`{"traceparent":"ignored"}`)))
			must(t, o.SetMetadata(v0MapList(t, seg, wantMD)))
			must(t, o.SetEnvVars(v0MapList(t, seg, wantEnv)))
			must(t, o.SetAdditionalFds(u64List(t, seg, 3, 4)))
			must(t, o.SetLeakFds(u64List(t, seg, 5)))
			return proto.Conmon_CreateContainerRequest(o)
		},
	}
	for name, b := range build {
		t.Run(name, func(t *testing.T) {
			got, md, err := decodeCreate(b(t))
			must(t, err)
			if want := wantCreate(); !reflect.DeepEqual(got, want) {
				t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
			}
			if !reflect.DeepEqual(md, wantMD) {
				t.Errorf("metadata %v, want %v", md, wantMD)
			}
		})
	}
}

func TestDecodeCreateEmptyListsAndDefaults(t *testing.T) {
	seg := newSeg(t)
	r, err := proto.NewRootConmon_CreateContainerRequest(seg)
	must(t, err)
	must(t, r.SetId("x"))
	got, md, err := decodeCreate(r)
	must(t, err)
	want := monitor.CreateRequest{ID: "x", Cgroup: monitor.Systemd}
	if !reflect.DeepEqual(got, want) || md != nil {
		t.Errorf("decoded %+v md %v, want %+v and no metadata", got, md, want)
	}
}

func TestDecodeExecSyncBothLayouts(t *testing.T) {
	want := monitor.ExecSyncRequest{ID: "c", Command: []string{"ls", "-l"}, TimeoutSec: 9, Terminal: true, Env: wantEnv, Cgroup: monitor.Cgroupfs}
	common := func(t *testing.T, seg *capnp.Segment, r proto.Conmon_ExecSyncContainerRequest) {
		must(t, r.SetId("c"))
		r.SetTimeoutSec(9)
		must(t, r.SetCommand(textList(t, seg, "ls", "-l")))
		r.SetTerminal(true)
		r.SetCgroupManager(proto.Conmon_CgroupManager_cgroupfs)
	}
	build := map[string]func(t *testing.T) proto.Conmon_ExecSyncContainerRequest{
		"v1.0": func(t *testing.T) proto.Conmon_ExecSyncContainerRequest {
			seg := newSeg(t)
			r, err := proto.NewRootConmon_ExecSyncContainerRequest(seg)
			must(t, err)
			common(t, seg, r)
			must(t, r.SetMetadata(mapList(t, seg, wantMD)))
			must(t, r.SetEnvVars(mapList(t, seg, wantEnv)))
			return r
		},
		"v0.x": func(t *testing.T) proto.Conmon_ExecSyncContainerRequest {
			seg := newSeg(t)
			o, err := protov0.NewRootConmon_ExecSyncContainerRequest(seg)
			must(t, err)
			common(t, seg, proto.Conmon_ExecSyncContainerRequest(o))
			must(t, o.SetMetadataOld([]byte("{}")))
			must(t, o.SetMetadata(v0MapList(t, seg, wantMD)))
			must(t, o.SetEnvVars(v0MapList(t, seg, wantEnv)))
			return proto.Conmon_ExecSyncContainerRequest(o)
		},
	}
	for name, b := range build {
		t.Run(name, func(t *testing.T) {
			got, md, err := decodeExecSync(b(t))
			must(t, err)
			if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(md, wantMD) {
				t.Errorf("decoded %+v md %v, want %+v md %v", got, md, want, wantMD)
			}
		})
	}
}

func TestDecodeSmallRequestsBothLayouts(t *testing.T) {
	type result struct {
		got any
		md  Metadata
	}
	tests := []struct {
		name string
		want any
		v1   func(t *testing.T, seg *capnp.Segment) result
		v0   func(t *testing.T, seg *capnp.Segment) result
	}{
		{
			name: "version",
			want: versionRequest{verbose: true, metadata: wantMD},
			v1: func(t *testing.T, seg *capnp.Segment) result {
				r, err := proto.NewRootConmon_VersionRequest(seg)
				must(t, err)
				r.SetVerbose(true)
				must(t, r.SetMetadata(mapList(t, seg, wantMD)))
				got, err := decodeVersion(r)
				must(t, err)
				return result{got: got, md: wantMD}
			},
			v0: func(t *testing.T, seg *capnp.Segment) result {
				o, err := protov0.NewRootConmon_VersionRequest(seg)
				must(t, err)
				o.SetVerbose(true)
				must(t, o.SetMetadataOld([]byte("{}")))
				must(t, o.SetMetadata(v0MapList(t, seg, wantMD)))
				got, err := decodeVersion(proto.Conmon_VersionRequest(o))
				must(t, err)
				return result{got: got, md: wantMD}
			},
		},
		{
			name: "attach",
			want: monitor.AttachRequest{ID: "c", SocketPath: "/s", ExecSessionID: "e", StopAfterStdinEOF: true},
			v1: func(t *testing.T, seg *capnp.Segment) result {
				r, err := proto.NewRootConmon_AttachRequest(seg)
				must(t, err)
				must(t, r.SetId("c"))
				must(t, r.SetSocketPath("/s"))
				must(t, r.SetExecSessionId("e"))
				r.SetStopAfterStdinEof(true)
				must(t, r.SetMetadata(mapList(t, seg, wantMD)))
				got, md, err := decodeAttach(r)
				must(t, err)
				return result{got, md}
			},
			v0: func(t *testing.T, seg *capnp.Segment) result {
				o, err := protov0.NewRootConmon_AttachRequest(seg)
				must(t, err)
				must(t, o.SetId("c"))
				must(t, o.SetSocketPath("/s"))
				must(t, o.SetExecSessionId("e"))
				o.SetStopAfterStdinEof(true)
				must(t, o.SetMetadataOld([]byte("{}")))
				must(t, o.SetMetadata(v0MapList(t, seg, wantMD)))
				got, md, err := decodeAttach(proto.Conmon_AttachRequest(o))
				must(t, err)
				return result{got, md}
			},
		},
		{
			name: "reopen log",
			want: "c",
			v1: func(t *testing.T, seg *capnp.Segment) result {
				r, err := proto.NewRootConmon_ReopenLogRequest(seg)
				must(t, err)
				must(t, r.SetId("c"))
				must(t, r.SetMetadata(mapList(t, seg, wantMD)))
				id, md, err := decodeReopenLog(r)
				must(t, err)
				return result{id, md}
			},
			v0: func(t *testing.T, seg *capnp.Segment) result {
				o, err := protov0.NewRootConmon_ReopenLogRequest(seg)
				must(t, err)
				must(t, o.SetId("c"))
				must(t, o.SetMetadataOld([]byte("{}")))
				must(t, o.SetMetadata(v0MapList(t, seg, wantMD)))
				id, md, err := decodeReopenLog(proto.Conmon_ReopenLogRequest(o))
				must(t, err)
				return result{id, md}
			},
		},
		{
			name: "set window size",
			want: windowSize{id: "c", width: 80, height: 24},
			v1: func(t *testing.T, seg *capnp.Segment) result {
				r, err := proto.NewRootConmon_SetWindowSizeRequest(seg)
				must(t, err)
				must(t, r.SetId("c"))
				r.SetWidth(80)
				r.SetHeight(24)
				must(t, r.SetMetadata(mapList(t, seg, wantMD)))
				ws, md, err := decodeSetWindowSize(r)
				must(t, err)
				return result{ws, md}
			},
			v0: func(t *testing.T, seg *capnp.Segment) result {
				o, err := protov0.NewRootConmon_SetWindowSizeRequest(seg)
				must(t, err)
				must(t, o.SetId("c"))
				o.SetWidth(80)
				o.SetHeight(24)
				must(t, o.SetMetadataOld([]byte("{}")))
				must(t, o.SetMetadata(v0MapList(t, seg, wantMD)))
				ws, md, err := decodeSetWindowSize(proto.Conmon_SetWindowSizeRequest(o))
				must(t, err)
				return result{ws, md}
			},
		},
		{
			name: "create namespaces",
			want: monitor.NamespacesRequest{
				PodID: "pod", BasePath: "/var/run",
				Namespaces:  []monitor.Namespace{monitor.NamespaceIPC, monitor.NamespaceNet, monitor.NamespacePID, monitor.NamespaceUser, monitor.NamespaceUTS},
				UIDMappings: []string{"0 1000 1"}, GIDMappings: []string{"0 2000 1"},
			},
			v1: func(t *testing.T, seg *capnp.Segment) result {
				r, err := proto.NewRootConmon_CreateNamespacesRequest(seg)
				must(t, err)
				l, err := r.NewNamespaces(5)
				must(t, err)
				for i, ns := range []proto.Conmon_Namespace{0, 1, 2, 3, 4} {
					l.Set(i, ns)
				}
				must(t, r.SetUidMappings(textList(t, seg, "0 1000 1")))
				must(t, r.SetGidMappings(textList(t, seg, "0 2000 1")))
				must(t, r.SetBasePath("/var/run"))
				must(t, r.SetPodId("pod"))
				must(t, r.SetMetadata(mapList(t, seg, wantMD)))
				got, md, err := decodeCreateNamespaces(r)
				must(t, err)
				return result{got, md}
			},
			v0: func(t *testing.T, seg *capnp.Segment) result {
				o, err := protov0.NewRootConmon_CreateNamespacesRequest(seg)
				must(t, err)
				must(t, o.SetMetadataOld([]byte("{}")))
				l, err := o.NewNamespaces(5)
				must(t, err)
				for i, ns := range []protov0.Conmon_Namespace{0, 1, 2, 3, 4} {
					l.Set(i, ns)
				}
				must(t, o.SetUidMappings(textList(t, seg, "0 1000 1")))
				must(t, o.SetGidMappings(textList(t, seg, "0 2000 1")))
				must(t, o.SetBasePath("/var/run"))
				must(t, o.SetPodId("pod"))
				must(t, o.SetMetadata(v0MapList(t, seg, wantMD)))
				got, md, err := decodeCreateNamespaces(proto.Conmon_CreateNamespacesRequest(o))
				must(t, err)
				return result{got, md}
			},
		},
	}
	for _, tt := range tests {
		for gen, f := range map[string]func(*testing.T, *capnp.Segment) result{"v1.0": tt.v1, "v0.x": tt.v0} {
			t.Run(tt.name+"/"+gen, func(t *testing.T) {
				r := f(t, newSeg(t))
				if !reflect.DeepEqual(r.got, tt.want) {
					t.Errorf("decoded %+v, want %+v", r.got, tt.want)
				}
				if !reflect.DeepEqual(r.md, wantMD) {
					t.Errorf("metadata %v, want %v", r.md, wantMD)
				}
			})
		}
	}
}

// The serve* requests have no metadataOld and the same layout in both
// generations.
func TestDecodeServeRequests(t *testing.T) {
	seg := newSeg(t)
	e, err := proto.NewRootConmon_ServeExecContainerRequest(seg)
	must(t, err)
	must(t, e.SetMetadata(mapList(t, seg, wantMD)))
	must(t, e.SetId("c"))
	must(t, e.SetCommand(textList(t, seg, "sh")))
	e.SetTty(true)
	e.SetStdin(true)
	e.SetStdout(true)
	e.SetStderr(true)
	e.SetCgroupManager(proto.Conmon_CgroupManager_cgroupfs)
	gotE, md, err := decodeServeExec(e)
	must(t, err)
	wantE := monitor.ServeExecRequest{ID: "c", Command: []string{"sh"}, TTY: true, Stdin: true, Stdout: true, Stderr: true, Cgroup: monitor.Cgroupfs}
	if !reflect.DeepEqual(gotE, wantE) || !reflect.DeepEqual(md, wantMD) {
		t.Errorf("serve exec decoded %+v %v", gotE, md)
	}

	seg = newSeg(t)
	a, err := proto.NewRootConmon_ServeAttachContainerRequest(seg)
	must(t, err)
	must(t, a.SetId("c"))
	a.SetStdout(true)
	gotA, _, err := decodeServeAttach(a)
	must(t, err)
	if want := (monitor.ServeAttachRequest{ID: "c", Stdout: true}); gotA != want {
		t.Errorf("serve attach decoded %+v, want %+v", gotA, want)
	}
}

func TestDecodeRejectsUnknownNamespace(t *testing.T) {
	seg := newSeg(t)
	r, err := proto.NewRootConmon_CreateNamespacesRequest(seg)
	must(t, err)
	l, err := r.NewNamespaces(1)
	must(t, err)
	l.Set(0, 42)
	if _, _, err := decodeCreateNamespaces(r); err == nil {
		t.Fatal("namespace 42 decoded without error")
	}
}
