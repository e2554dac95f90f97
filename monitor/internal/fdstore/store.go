package fdstore

import "os"

// store is the slot table. It is not safe for concurrent use: Server guards
// it with its mutex.
type store struct {
	// last is the slot handed out most recently; 0 before the first.
	last uint64
	// fds maps occupied slots to their descriptors.
	fds map[uint64]*os.File
}

func newStore() store {
	return store{fds: make(map[uint64]*os.File)}
}

// add parks f in the next free slot after last, wrapping around at 2^64,
// and returns that slot. Slot 0 is only reached after a wrap.
func (s *store) add(f *os.File) uint64 {
	for {
		s.last++ // wraps to 0 after MaxUint64, as conmon-rs's Wrapping<u64>
		if _, busy := s.fds[s.last]; !busy {
			s.fds[s.last] = f
			return s.last
		}
	}
}

// take removes and returns the descriptor in slot, or nil if it is empty.
func (s *store) take(slot uint64) *os.File {
	f, ok := s.fds[slot]
	if !ok {
		return nil
	}
	delete(s.fds, slot)
	return f
}

// drop removes slot if it still holds f (it may have been taken and then
// reused by another connection after a wrap) and reports whether it did.
func (s *store) drop(slot uint64, f *os.File) bool {
	if s.fds[slot] != f {
		return false
	}
	delete(s.fds, slot)
	return true
}

// drain empties the store and returns what it held.
func (s *store) drain() []*os.File {
	files := make([]*os.File, 0, len(s.fds))
	for slot, f := range s.fds {
		files = append(files, f)
		delete(s.fds, slot)
	}
	return files
}
