// Package bundle reads what the monitor needs from a container's OCI
// bundle: the annotations of its config.json, and from them the
// container's Kubernetes identity.
//
// The runtime reads the whole config; the monitor reads it once at create,
// bounded (maxConfigSize), and keeps only the few strings it uses, so a
// large config costs nothing after create.
package bundle

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// maxConfigSize bounds how much of config.json is read. A real config is a
// few KiB to a few hundred (many mounts and env); a larger one is refused
// (no annotations) rather than held in memory.
const maxConfigSize = 4 << 20

// Annotation names. The kubelet labels every container it creates with
// its pod's identity; CRI-O copies the container's labels into the bundle
// twice, each as a plain annotation and all as a JSON object in
// LabelsAnnotation. A pod made with crictl has none of these labels; CRI-O
// (v1.34 and v1.36 alike, seen in `make e2e`) then names the pod only in
// NameAnnotation.
const (
	PodName       = "io.kubernetes.pod.name"
	PodNamespace  = "io.kubernetes.pod.namespace"
	PodUID        = "io.kubernetes.pod.uid"
	ContainerName = "io.kubernetes.container.name"
	// LabelsAnnotation is CRI-O's copy of the container's CRI labels.
	LabelsAnnotation = "io.kubernetes.cri-o.Labels"
	// MetadataAnnotation is CRI-O's copy of the container's CRI metadata
	// ({"name": ..., "attempt": ...}): the container's name when the
	// kubelet's labels are missing (crictl).
	MetadataAnnotation = "io.kubernetes.cri-o.Metadata"
	// NameAnnotation is CRI-O's name of the container,
	// k8s_<container>_<pod>_<namespace>_<pod uid>_<attempt>, made from the
	// CRI metadata of the container and its pod whoever created them.
	NameAnnotation = "io.kubernetes.cri-o.Name"
)

// Identity is a container's Kubernetes identity. Empty fields are unknown.
type Identity struct {
	PodName, PodNamespace, PodUID, ContainerName string
}

// ReadAnnotations returns the annotations of dir/config.json. A missing
// file gives no annotations and no error (the runtime will fail the
// create if it needs one); a file that is too large or not JSON gives an
// error.
func ReadAnnotations(dir string) (map[string]string, error) {
	f, err := os.Open(filepath.Join(dir, "config.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read bundle config: %w", err)
	}
	defer func() { _ = f.Close() }() // read only
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read bundle config: %w", err)
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("read bundle config: %s is larger than %d bytes", f.Name(), maxConfigSize)
	}
	var cfg struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("parse bundle config %s: %w", f.Name(), err)
	}
	return cfg.Annotations, nil
}

// IdentityOf finds the container's identity in its annotations: a plain
// annotation first, then the same key in CRI-O's labels, then (for the
// container's name) CRI-O's metadata, and last, for each field still
// unknown, CRI-O's name of the container.
func IdentityOf(ann map[string]string) Identity {
	var labels map[string]string
	if s := ann[LabelsAnnotation]; s != "" {
		_ = json.Unmarshal([]byte(s), &labels) // not JSON: no labels
	}
	get := func(key string) string {
		if v := ann[key]; v != "" {
			return v
		}
		return labels[key]
	}
	id := Identity{
		PodName:       get(PodName),
		PodNamespace:  get(PodNamespace),
		PodUID:        get(PodUID),
		ContainerName: get(ContainerName),
	}
	if id.ContainerName == "" {
		var md struct {
			Name string `json:"name"`
		}
		if s := ann[MetadataAnnotation]; s != "" && json.Unmarshal([]byte(s), &md) == nil {
			id.ContainerName = md.Name
		}
	}
	if n, ok := parseCRIOName(ann[NameAnnotation]); ok {
		id.PodName = cmp.Or(id.PodName, n.PodName)
		id.PodNamespace = cmp.Or(id.PodNamespace, n.PodNamespace)
		id.PodUID = cmp.Or(id.PodUID, n.PodUID)
		id.ContainerName = cmp.Or(id.ContainerName, n.ContainerName)
	}
	return id
}

// parseCRIOName splits CRI-O's container name,
// k8s_<container>_<pod>_<namespace>_<pod uid>_<attempt>. Kubernetes names
// and UIDs have no "_", but CRI metadata from other clients may: a name
// that does not split into exactly these six fields is not used.
func parseCRIOName(s string) (Identity, bool) {
	f := strings.Split(s, "_")
	if len(f) != 6 || f[0] != "k8s" || slices.Contains(f[1:5], "") {
		return Identity{}, false
	}
	return Identity{ContainerName: f[1], PodName: f[2], PodNamespace: f[3], PodUID: f[4]}, true
}

// WithPrefix returns the annotations whose name starts with prefix, with
// the prefix removed (e.g. "io.gomon.log." for the log settings).
func WithPrefix(ann map[string]string, prefix string) map[string]string {
	var out map[string]string
	for k, v := range ann {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			if out == nil {
				out = make(map[string]string)
			}
			out[rest] = v
		}
	}
	return out
}
