#include "common/memory.h"

#include <malloc.h>

namespace quorumfs {

void KeepLargeBuffersInHeap() {
  // 32 MiB is glibc's upper bound for the mmap threshold on 64-bit, above the largest chunk
  // (16 MiB) and its message. Setting it also turns off glibc's dynamic threshold, which only
  // rises after a mapped buffer has been freed and lets the heap top shrink at twice that size.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  // Freed memory at the top of a heap is returned only beyond 256 MiB: a steady stream of chunk
  // buffers reuses the same pages.
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

}  // namespace quorumfs
