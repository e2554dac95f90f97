package pause

// Namespace is one of the five namespaces a pause instance holds.
type Namespace uint8

// The namespaces, in the fixed order of CreateNamespaces' response.
const (
	IPC Namespace = iota
	PID
	Net
	User
	UTS
)

// all lists every namespace in response order.
var all = [...]Namespace{IPC, PID, Net, User, UTS}

// String returns the namespace's name in /proc/<pid>/ns, e.g. "net".
func (n Namespace) String() string {
	switch n {
	case IPC:
		return "ipc"
	case PID:
		return "pid"
	case Net:
		return "net"
	case User:
		return "user"
	case UTS:
		return "uts"
	}
	return "unknown"
}

// Path is one namespace file of a pause instance.
type Path struct {
	// Type is the namespace the file refers to.
	Type Namespace
	// Path is the bind-mounted file, <base>/<type>ns/<podID>.
	Path string
}
