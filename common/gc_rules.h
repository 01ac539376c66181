// The timing rules of chunk garbage collection (DESIGN.md, "Chunks: immutable and
// content-addressed"), in one place so that the chunkserver (deleteChunk), the writers (the
// mount) and the deterministic GC simulator (tests/sim/gc_sim.h) apply the same arithmetic.
//
// A GC round takes its mark start M from its own clock before it reads any record, marks every
// chunk that any accepted value (or pending intent) on any replica references, and then asks
// each server to delete every unmarked chunk. A server deletes a chunk only if the chunk's
// last put (its own clock) is older than M minus the grace period G. A writer, before it
// publishes a layout, re-puts every chunk of that layout it last put more than G/2 ago. So a
// layout the mark did not see (published after the mark read that record, i.e. after M) only
// references chunks last put after roughly M - G/2: the sweep keeps them. The remaining G/2
// covers the time from the writer's check until its accepts land (the proposer's operation
// timeout plus the network delay of its last message) and the clock skew between writer, GC
// client and servers; each must stay well below G/2.
//
// All times are nanoseconds on the caller's clock (wall clock in production, simulated time
// in the simulator).
#pragma once

#include <cstdint>

namespace quorumfs {

// The last-put time a chunk must be older than to be deleted by the sweep of a mark that
// started at `mark_start_ns`. The cutoff is relative to the mark start, never to the time the
// sweep runs: a sweep that takes longer than G/2 would otherwise delete chunks of layouts
// published during the sweep.
inline int64_t ChunkSweepCutoff(int64_t mark_start_ns, int64_t grace_ns) {
  return mark_start_ns - grace_ns;
}

// Whether a server may delete an unreferenced chunk last put at `last_put_ns` when asked by the
// sweep of a mark that started at `mark_start_ns`: only if the put is strictly older than the
// cutoff (a put at exactly the cutoff is kept).
inline bool ChunkMayBeDeleted(int64_t last_put_ns, int64_t mark_start_ns, int64_t grace_ns) {
  return last_put_ns < ChunkSweepCutoff(mark_start_ns, grace_ns);
}

// Whether a writer must put a chunk again before it publishes a layout referencing it: when
// its last put of the chunk (the time it sent that put) was more than half the grace period
// before `now_ns`. A put that returned at fewer than W replicas does not count as a put.
inline bool ChunkNeedsRefresh(int64_t put_ns, int64_t now_ns, int64_t grace_ns) {
  return now_ns - put_ns > grace_ns / 2;
}

}  // namespace quorumfs

namespace quorumfs {

// The shortest grace period `fsck --gc` uses while mounts may be writing (20 minutes): every
// mount re-puts, before it publishes a layout, the chunks it put more than half of this ago
// (ChunkNeedsRefresh with this grace). A shorter --grace is safe only when no mount writes,
// which the operator must confirm (`--no-writers`).
constexpr int64_t kMinGcGraceNs = 20LL * 60 * 1'000'000'000;

}  // namespace quorumfs
