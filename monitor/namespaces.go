package monitor

import (
	"log/slog"

	"github.com/gomon-dev/gomon/monitor/internal/pause"
)

// DefaultPauseBasePath is where the namespace files and the pause PID file
// go when a NamespacesRequest's or PauseOptions' BasePath is empty, as in
// conmon-rs; `gomon pause --base-path` defaults to it too.
const DefaultPauseBasePath = pause.DefaultBasePath

// Namespace is a Linux namespace a pod's pause process can hold.
type Namespace uint8

// The namespaces CreateNamespaces knows, in the order of its response.
const (
	NamespaceIPC Namespace = iota
	NamespacePID
	NamespaceNet
	NamespaceUser
	NamespaceUTS
)

// NamespacesRequest asks for a pause process holding the pod's namespaces.
type NamespacesRequest struct {
	PodID       string
	BasePath    string
	Namespaces  []Namespace
	UIDMappings []string // "container host size"
	GIDMappings []string
}

// NamespacePath is one namespace file created for a pod.
type NamespacePath struct {
	Type Namespace
	Path string
}

// PauseOptions are the arguments of `gomon pause` (see PauseMain).
type PauseOptions struct {
	BasePath                 string
	PodID                    string
	IPC, PID, Net, User, UTS bool
	UIDMappings, GIDMappings []string
	Logger                   *slog.Logger
}
