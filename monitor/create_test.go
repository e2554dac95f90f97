package monitor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadPIDFile(t *testing.T) {
	tests := []struct {
		name, content string
		want          int
		err           string
	}{
		{"plain", "1234", 1234, ""},
		{"newline", "1234\n", 1234, ""},
		{"empty", "", 0, "grandchild pid parse error"},
		{"zero", "0", 0, "grandchild pid parse error"},
		{"garbage", "12x", 0, "grandchild pid parse error"},
		{"missing", "-", 0, "grandchild pid read error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.content != "-" {
				if err := os.WriteFile(filepath.Join(dir, "pidfile"), []byte(tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readPIDFile(dir)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("= %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}
