package stream

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/monitor/internal/uuid"
)

func TestSessionStore(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	cases := []struct {
		name string
		run  func(t *testing.T, st *sessionStore)
	}{
		{"single use", func(t *testing.T, st *sessionStore) {
			tok := st.add(&session{kind: kindExec})
			if _, ok := st.take(kindExec, tok); !ok {
				t.Fatal("first take failed")
			}
			if _, ok := st.take(kindExec, tok); ok {
				t.Fatal("second take succeeded")
			}
		}},
		{"kind must match and peek keeps it", func(t *testing.T, st *sessionStore) {
			tok := st.add(&session{kind: kindExec})
			if _, ok := st.take(kindAttach, tok); ok {
				t.Fatal("attach took an exec token")
			}
			if _, ok := st.peek(kindExec, tok); !ok {
				t.Fatal("peek failed")
			}
			if _, ok := st.take(kindExec, tok); !ok {
				t.Fatal("take after peek failed")
			}
		}},
		{"expiry", func(t *testing.T, st *sessionStore) {
			tok := st.add(&session{kind: kindPortForward})
			now = now.Add(time.Hour)
			if _, ok := st.take(kindPortForward, tok); ok {
				t.Fatal("expired session taken")
			}
		}},
		{"oldest evicted at the bound", func(t *testing.T, st *sessionStore) {
			var toks []string
			for range 5 {
				toks = append(toks, st.add(&session{kind: kindExec}))
			}
			if st.len() != 3 {
				t.Fatalf("len = %d, want 3", st.len())
			}
			for i, tok := range toks {
				_, ok := st.peek(kindExec, tok)
				if want := i >= 2; ok != want {
					t.Errorf("session %d present = %v, want %v", i, ok, want)
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, newSessionStore(3, time.Hour, clock))
		})
	}
}

func TestNewTokenIsUUIDv4(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok := uuid.New()
		if len(tok) != 36 || tok[14] != '4' || tok[8] != '-' || tok[19] < '8' || tok[19] > 'b' || seen[tok] {
			t.Fatalf("bad or repeated token %q", tok)
		}
		seen[tok] = true
	}
}

func TestStatusFor(t *testing.T) {
	cases := []struct {
		code int
		err  error
		want string
	}{
		{0, nil, `{"metadata":{},"status":"Success"}`},
		{3, nil, `{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}`},
		{-1, nil, `{"metadata":{},"status":"Failure","message":"command terminated with exit code -1","reason":"InternalError","code":500}`},
		{0, errors.New("boom"), `{"metadata":{},"status":"Failure","message":"Internal error occurred: boom","reason":"InternalError","details":{"causes":[{"message":"boom"}]},"code":500}`},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.code, tc.err), func(t *testing.T) {
			if got := string(statusFor(tc.code, tc.err)); got != tc.want {
				t.Errorf("statusFor(%d, %v) =\n%s\nwant\n%s", tc.code, tc.err, got, tc.want)
			}
		})
	}
}
