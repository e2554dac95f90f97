// Package fdstore is the server behind StartFdSocket (docs/contract.md, "StartFdSocket"): a
// SOCK_SEQPACKET unix socket that receives file descriptors from a client
// and parks each in a numbered slot until CreateContainer takes it.
//
// # Protocol
//
// A request is one message of exactly 8 bytes, a little-endian u64
// `request_id<<32 | num_fds`, carrying the descriptors in one SCM_RIGHTS
// control message. Only the low 8 bits count as num_fds. The reply echoes the
// header and appends one little-endian u64 slot per descriptor, in the order
// received. If the number of descriptors received differs from num_fds, the
// reply is the header with its low byte forced to 0xff followed by a UTF-8
// message, and the descriptors are closed.
//
// Messages of any other length are ignored (their descriptors closed, no
// reply). An all-zero header closes every descriptor received on that
// connection and not yet taken, without a reply. When a connection ends, the
// same happens. Callers therefore keep their connection open until the
// CreateContainer that consumes the slots has returned.
//
// Slots are shared by all connections: they start at 1, increase by one per
// descriptor, wrap around at 2^64 and skip slots still occupied.
//
// # Ownership
//
// A [Server] owns one accept goroutine and one goroutine per connection;
// [Server.Close] stops and waits for all of them and closes every descriptor
// not yet taken. A descriptor returned by [Server.Take] belongs to the caller.
package fdstore
