package ioloop

import "sync"

// Buffer sizes.
//
// readBufSize is the size of one read(2) from a container stream. conmon-rs
// v1.0 reads at most 4 KiB and C conmon 8 KiB; gomon reads up to 128 KiB
// because every read costs a lock, a timestamp, one write(2) per sink and
// the fixed part of those syscalls, so a fast writer is drained with far
// fewer syscalls, which is how the logging budget (2x C conmon's MB/s at
// half its CPU) is approached. With the 1 MiB pipes and batched reads of
// the read loop (pipeSize, batchDelay) a busy pipe holds hundreds of KiB
// when it is read; measured on 100-byte lines (bench/, interleaved runs of
// 256 MiB), 128 KiB reads took about 10% less CPU per GB than 32 KiB ones
// and 64 KiB ones sat in between. The price is that long lines are split
// into fewer, longer P records, which kubelet reassembles anyway. Idle read
// loops on pollable fds hold no buffer at all (see chunkReader), so the
// size costs nothing per idle container; buffers of active loops come from
// pools that the GC empties once logging stops.
//
// recordFlushSize bounds the record buffer of the file sinks: a chunk's
// records go out in one write(2) unless they exceed it. 100-byte lines in a
// full 128 KiB chunk make about 180 KiB of CRI records (one write); a chunk
// of 2-byte lines would make ~2.7 MiB, which is written in 256 KiB pieces
// rather than held in one transient buffer.
const (
	readBufSize     = 128 << 10
	recordFlushSize = 256 << 10
	// maxPooledRecordBuf keeps unusually large record buffers out of the pool.
	maxPooledRecordBuf = 4 * recordFlushSize
)

// readBufPool holds *[]byte of len readBufSize, shared by all read loops.
var readBufPool = sync.Pool{New: func() any {
	b := make([]byte, readBufSize)
	return &b
}}

func getReadBuf() *[]byte  { return readBufPool.Get().(*[]byte) }
func putReadBuf(b *[]byte) { readBufPool.Put(b) }

// recordBufPool holds *[]byte record buffers of the file sinks. A sink takes
// one per chunk and returns it before WriteChunk returns, so idle sinks hold
// none.
var recordBufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, recordFlushSize+readBufSize/2)
	return &b
}}

func getRecordBuf() *[]byte { return recordBufPool.Get().(*[]byte) }

func putRecordBuf(b *[]byte) {
	if cap(*b) > maxPooledRecordBuf {
		return
	}
	*b = (*b)[:0]
	recordBufPool.Put(b)
}
