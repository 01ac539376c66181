// ChunkClient: stores and fetches immutable chunks by quorum (DESIGN.md, "Chunks").
//
// Put sends to every home replica at once and resolves after W acks (W in each replica set
// during a membership change). A home replica that fails is replaced by the next node in
// rendezvous order, which stores the chunk with a hint naming the home (sloppy quorum; safe
// only because chunks never change). Puts still in flight after the quorum keep running.
// Get tries home replicas first, then the rest in rendezvous order, verifies every chunk's
// SHA-256, reports a mismatch to the node that served it and moves on to the next replica.
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <memory>
#include <string>

#include "common/chunk_id.h"
#include "common/chunk_transport.h"
#include "common/cluster_config.h"
#include "common/status.h"
#include "common/worker_pool.h"

namespace quorumfs {

struct ChunkClientOptions {
  // A put that has not reached W yet tries a replica that failed for want of an answer (down,
  // unreachable, timed out; not a full disk or a wrong epoch) again after `retry_delay`, and a
  // get that found no replica reachable tries them all again, for up to `retry_for` from the
  // start: a node that comes back meanwhile is used instead of the write failing. 0: no retries.
  kj::Duration retry_for = 0 * kj::SECONDS;
  kj::Duration retry_delay = 100 * kj::MILLISECONDS;
};

class ChunkClient {
 public:
  // `hasher` (may be null) runs SHA-256 of fetched chunks off the event loop; `timer` (may be
  // null: no retries) times the retries of `options`.
  ChunkClient(ChunkTransport& transport, WorkerPool* hasher, kj::Timer* timer = nullptr,
              ChunkClientOptions options = {});

  void SetConfig(std::shared_ptr<const ClusterConfig> config) { config_ = std::move(config); }

  // REQUIRES: id == ChunkId::Of(*data); 1 byte .. 16 MiB (TooLarge otherwise).
  // Errors: NoQuorum naming each failed node; EpochMismatch.
  kj::Promise<Status> Put(ChunkId id, std::shared_ptr<const std::string> data);

  // The verified bytes of `id`. NotFound if no node has it; Corruption if every copy found
  // was corrupt; Unavailable if nodes that might have it did not answer.
  kj::Promise<Result<std::string>> Get(ChunkId id);

 private:
  kj::Promise<Result<std::string>> GetUntil(ChunkId id, kj::TimePoint deadline);
  kj::Promise<Result<std::string>> GetFrom(std::shared_ptr<std::vector<std::string>> order,
                                           size_t index, ChunkId id,
                                           std::shared_ptr<std::string> errors,
                                           bool any_unavailable, std::shared_ptr<bool> unanswered);

  // Whether a failed call may be tried again before `deadline`.
  bool MayRetry(kj::TimePoint deadline) const;

  ChunkTransport& transport_;
  WorkerPool* hasher_;
  kj::Timer* timer_;
  ChunkClientOptions options_;
  std::shared_ptr<const ClusterConfig> config_;
};

}  // namespace quorumfs
