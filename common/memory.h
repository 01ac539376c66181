// Process-wide allocator settings for the daemons.
#pragma once

namespace quorumfs {

// Keeps large buffers (chunks, RPC messages of up to kMaxChunkSize plus headers) in glibc's heap
// instead of a fresh mmap per allocation, and keeps freed heap memory for reuse instead of
// returning it at once. Every 1 MiB message a chunkserver read, or slot the mount filled, was
// otherwise a new mapping whose pages fault in on first touch: costly on any machine and very
// costly on a VM whose page-table updates go through the hypervisor (bench/README.md). Call at
// the start of main, before any thread starts.
void KeepLargeBuffersInHeap();

}  // namespace quorumfs
