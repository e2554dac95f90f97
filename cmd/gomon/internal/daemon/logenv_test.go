package daemon

import "testing"

func TestLogMaxLine(t *testing.T) {
	tests := []struct {
		v       string
		set     bool
		want    int
		wantErr bool
	}{
		{set: false, want: 0},
		{v: "", set: true, want: 0},
		{v: "0", set: true, want: 0},
		{v: "2MiB", set: true, want: 2 << 20},
		{v: "64KiB", set: true, want: 64 << 10},
		{v: "16384", set: true, want: 16384},
		{v: "4096B", set: true, want: 4096},
		{v: "64MiB", set: true, want: 64 << 20},
		{v: "65MiB", set: true, wantErr: true},
		{v: "1GiB", set: true, wantErr: true},
		{v: "100", set: true, wantErr: true},
		{v: "2MB", set: true, wantErr: true},
		{v: "-1", set: true, wantErr: true},
		{v: "lots", set: true, wantErr: true},
		{v: "99999999999999999GiB", set: true, wantErr: true},
	}
	for _, tt := range tests {
		got, err := logMaxLine(func(k string) (string, bool) {
			if k != logMaxLineEnv {
				t.Fatalf("looked up %s", k)
			}
			return tt.v, tt.set
		})
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%q: got %d, %v; want %d, error %v", tt.v, got, err, tt.want, tt.wantErr)
		}
	}
}
