// Package ioloop moves a container's bytes: it reads the container's stdout
// and stderr (pipes or a pty master) and hands every chunk to log sinks (the
// CRI log file, the JSON log file, journald) and to extra writers such as a
// terminal.
//
// The pieces and who calls what:
//
//   - ReadLoop runs once per stream (stdout, stderr or the pty master) in a
//     goroutine owned by package monitor. It returns at EOF (EIO from a pty
//     master counts as EOF) or when the reader fails; closing the reader is how
//     its owner stops it early.
//   - Log fans one container's output out to its sinks. The two read loops of a
//     container share one Log, and ReopenLog calls Reopen on it concurrently;
//     Log serialises all of that behind one mutex, so sinks need not be safe
//     for concurrent use and each chunk's records land contiguously.
//   - A Sink turns chunks into records. CRILog and JSONLog split every chunk
//     into lines exactly as conmon-rs v1.0 does (docs/contract.md, "Container logs"): no
//     buffering across chunks, so a long line becomes P…P F records and output
//     ending without a newline ends with a P record.
//   - A RateLimiter (ratelimit.go), set on a container's Log, is its log
//     budget: a token bucket shared by its read loops, which drop what
//     exceeds it (marking each gap in the log) or stop reading until it
//     refills. Only the Log is limited, never the tee writers.
//   - AttachServer serves a container's attach sockets (SOCK_SEQPACKET,
//     conmon's framing): the read loops tee into it through the writers
//     its Stream method returns, it broadcasts to every client through a
//     bounded per-client queue and forwards client input to the
//     container's stdin.
//
// The read loop never stops draining the container because a sink failed
// (docs/architecture.md, "The read loop never blocks the container"): the failed write is counted in Stats and logged
// once per burst, and the sink gets the next chunk again. A slow but working
// sink does apply back-pressure; the bounded buffer is the kernel's pipe (or
// pty) buffer, as in conmon and conmon-rs, because the log file must not drop
// bytes silently.
//
// ioloop knows nothing of containers beyond the streams it is given and
// imports neither package monitor nor package rpc.
package ioloop
