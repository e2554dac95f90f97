package stream

import (
	"container/list"
	"sync"
	"time"

	"github.com/gomon-dev/gomon/monitor/internal/uuid"
)

// kind is what a session serves; it is also the first path element of its
// URL.
type kind string

const (
	kindExec        kind = "exec"
	kindAttach      kind = "attach"
	kindPortForward kind = "port-forward"
)

// session is one registered, not yet used, streaming session.
type session struct {
	token   string
	kind    kind
	cmd     Command // exec and attach
	netNS   string  // port-forward
	created time.Time
	elem    *list.Element
}

// sessionStore is a bounded LRU of sessions with an expiry: the oldest
// session is evicted when a new one would exceed max, and a session older
// than ttl is treated as unknown. Tokens are single-use: take removes the
// session. It is safe for concurrent use.
type sessionStore struct {
	max int
	ttl time.Duration
	now func() time.Time

	mu     sync.Mutex
	byTok  map[string]*session // guarded by mu
	oldest *list.List          // guarded by mu; of *session, oldest first
}

func newSessionStore(max int, ttl time.Duration, now func() time.Time) *sessionStore {
	return &sessionStore{max: max, ttl: ttl, now: now, byTok: make(map[string]*session), oldest: list.New()}
}

// add stores s under a fresh token and returns the token.
func (st *sessionStore) add(s *session) string {
	s.token = uuid.New()
	st.mu.Lock()
	defer st.mu.Unlock()
	s.created = st.now()
	st.expireLocked()
	for st.oldest.Len() >= st.max {
		st.removeLocked(st.oldest.Front().Value.(*session))
	}
	s.elem = st.oldest.PushBack(s)
	st.byTok[s.token] = s
	return s.token
}

// peek returns the live session of kind k with token tok, leaving it in
// place.
func (st *sessionStore) peek(k kind, tok string) (*session, bool) { //nolint:unparam // the twin of take; callers so far only need ok
	st.mu.Lock()
	defer st.mu.Unlock()
	st.expireLocked()
	s, ok := st.byTok[tok]
	if !ok || s.kind != k {
		return nil, false
	}
	return s, true
}

// take removes and returns the live session of kind k with token tok. Of
// two concurrent takes of one token, only one succeeds.
func (st *sessionStore) take(k kind, tok string) (*session, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.expireLocked()
	s, ok := st.byTok[tok]
	if !ok || s.kind != k {
		return nil, false
	}
	st.removeLocked(s)
	return s, true
}

// len returns the number of live sessions.
func (st *sessionStore) len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.expireLocked()
	return len(st.byTok)
}

// expireLocked drops sessions older than ttl (they are oldest first).
// Called with st.mu held.
func (st *sessionStore) expireLocked() {
	now := st.now()
	for e := st.oldest.Front(); e != nil; e = st.oldest.Front() {
		s := e.Value.(*session)
		if now.Sub(s.created) < st.ttl {
			return
		}
		st.removeLocked(s)
	}
}

// removeLocked forgets s; called with st.mu held.
func (st *sessionStore) removeLocked(s *session) {
	st.oldest.Remove(s.elem)
	delete(st.byTok, s.token)
}
