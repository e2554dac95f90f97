package bundle

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestIdentityFromPlainAnnotationsAndLabels(t *testing.T) {
	dir := writeConfig(t, `{"ociVersion":"1.0.2","process":{"args":["sh"]},"annotations":{
		"io.kubernetes.pod.name":"web-0",
		"io.kubernetes.cri-o.Labels":"{\"io.kubernetes.pod.namespace\":\"shop\",\"io.kubernetes.pod.uid\":\"u-1\",\"io.kubernetes.container.name\":\"nginx\",\"io.kubernetes.pod.name\":\"ignored\"}",
		"io.gomon.log.rate-limit":"1MiB/s"}}`)
	ann, err := ReadAnnotations(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := IdentityOf(ann)
	want := Identity{PodName: "web-0", PodNamespace: "shop", PodUID: "u-1", ContainerName: "nginx"}
	if got != want {
		t.Fatalf("identity %+v, want %+v", got, want)
	}
	if p := WithPrefix(ann, "io.gomon.log."); len(p) != 1 || p["rate-limit"] != "1MiB/s" {
		t.Fatalf("WithPrefix: %v", p)
	}
}

func TestIdentityFallsBackToMetadataName(t *testing.T) {
	got := IdentityOf(map[string]string{MetadataAnnotation: `{"name":"busy","attempt":1}`, LabelsAnnotation: "not json"})
	if got != (Identity{ContainerName: "busy"}) {
		t.Fatalf("identity %+v", got)
	}
}

func TestReadAnnotationsBounds(t *testing.T) {
	ann, err := ReadAnnotations(t.TempDir())
	if err != nil || ann != nil {
		t.Fatalf("missing config: %v, %v", ann, err)
	}
	big := writeConfig(t, `{"annotations":{"a":"`+strings.Repeat("x", maxConfigSize)+`"}}`)
	if _, err := ReadAnnotations(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized config: %v", err)
	}
	if _, err := ReadAnnotations(writeConfig(t, `{"annotations":`)); err == nil {
		t.Fatal("broken config: no error")
	}
}

// crictlAnnotations are the annotations CRI-O v1.34 wrote into the bundle
// of a container made with crictl in `make e2e` (copied from a real
// config.json; paths shortened). crictl sends no kubelet labels: the pod
// is named only in io.kubernetes.cri-o.Name.
var crictlAnnotations = map[string]string{
	"io.container.manager":                   "cri-o",
	"io.kubernetes.cri-o.Annotations":        "null",
	"io.kubernetes.cri-o.ContainerID":        "f99ece338d19eb92ba881f213779dd8339ae6108049d311a12ee4d4d281c898b",
	"io.kubernetes.cri-o.ContainerType":      "container",
	"io.kubernetes.cri-o.Created":            "2026-12-02T00:51:54.541042546Z",
	"io.kubernetes.cri-o.IP.0":               "127.0.0.1",
	"io.kubernetes.cri-o.Image":              "docker.io/library/busybox:e2e",
	"io.kubernetes.cri-o.ImageName":          "docker.io/library/busybox:e2e",
	"io.kubernetes.cri-o.Labels":             "null",
	"io.kubernetes.cri-o.LogPath":            "/tmp/gomon-e2e/podlogs/runc-oci-netns/ticker.log",
	"io.kubernetes.cri-o.Metadata":           `{"name":"ticker"}`,
	"io.kubernetes.cri-o.Name":               "k8s_ticker_runc-oci-netns_gomon-e2e_runc-oci-netns-uid_0",
	"io.kubernetes.cri-o.SandboxID":          "12bc765d64bf0541ef00f88d2176c6baf1b7b66d422bdcb13aa1ac7d1749d6d3",
	"io.kubernetes.cri-o.SandboxName":        "k8s_runc-oci-netns_gomon-e2e_runc-oci-netns-uid_0",
	"io.kubernetes.cri-o.SeccompProfilePath": "",
	"io.kubernetes.cri-o.Stdin":              "false",
	"io.kubernetes.cri-o.TTY":                "false",
	"io.kubernetes.cri-o.Volumes":            "[]",
}

func TestIdentityOfCrictlContainer(t *testing.T) {
	got := IdentityOf(crictlAnnotations)
	want := Identity{PodName: "runc-oci-netns", PodNamespace: "gomon-e2e", PodUID: "runc-oci-netns-uid", ContainerName: "ticker"}
	if got != want {
		t.Fatalf("identity %+v, want %+v", got, want)
	}
}

// The kubelet's labels win over CRI-O's name, which only fills gaps.
func TestIdentityLabelsWinOverCRIOName(t *testing.T) {
	got := IdentityOf(map[string]string{
		PodName:        "web-0",
		NameAnnotation: "k8s_nginx_other_ns_uid-9_1",
	})
	want := Identity{PodName: "web-0", PodNamespace: "ns", PodUID: "uid-9", ContainerName: "nginx"}
	if got != want {
		t.Fatalf("identity %+v, want %+v", got, want)
	}
}

func TestParseCRIOName(t *testing.T) {
	for _, s := range []string{
		"", "k8s_a_b_c_d", "k8s_a_b_c_d_0_extra", "k8s_my_ctr_pod_ns_uid_0", "docker_a_b_c_d_0", "k8s__b_c_d_0",
	} {
		if id, ok := parseCRIOName(s); ok {
			t.Errorf("parseCRIOName(%q) = %+v, want refused", s, id)
		}
	}
}
