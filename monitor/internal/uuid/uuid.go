// Package uuid makes random (version 4) UUIDs: the names of exec pidfiles
// (as conmon-rs names them) and the tokens of streaming sessions.
package uuid

import "crypto/rand"

// New returns a random version 4 UUID in its usual text form,
// xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx.
func New() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hexd = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, v := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hexd[v>>4], hexd[v&0x0f])
	}
	return string(out)
}
