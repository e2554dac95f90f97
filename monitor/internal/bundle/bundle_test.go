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
