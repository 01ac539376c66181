// ChunkClient: stores and fetches immutable chunks by quorum (DESIGN.md, "Chunks").
//
// Put sends to every home replica at once and resolves after W acks (W in each replica set
// during a membership change). A home replica that fails is replaced by the next node in
// rendezvous order, which stores the chunk with a hint naming the home (sloppy quorum; safe
// only because chunks never change). Puts still in flight after the quorum keep running.
// Get tries home replicas first, then the rest in rendezvous order, verifies every chunk's
// SHA-256, reports a mismatch to the node that served it and moves on to the next replica. A
// replica that has not answered within `hedge_after` is not waited for alone: the next one is
// asked too, and the first verified copy wins (a hung or cut-off server would otherwise hold
// the read for a whole call timeout).
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
  // A get asks the next replica as well when the one it asked has not answered for this long
  // (0: one after another, each waited for until it fails). Needs a timer.
  kj::Duration hedge_after = 500 * kj::MILLISECONDS;
};

class ChunkClient : private kj::TaskSet::ErrorHandler {
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

  // Gets that asked a second replica because the first was slow to answer (loop thread).
  uint64_t hedged_gets() const { return hedged_gets_; }

 private:
  struct GetState;
  using Fetched = std::shared_ptr<Result<std::string>>;
  kj::Promise<Result<std::string>> GetUntil(ChunkId id, kj::TimePoint deadline);
  // Asks order[index], then (on failure, or alongside it once it is slow) the replicas after it.
  kj::Promise<Fetched> GetFrom(std::shared_ptr<GetState> st, size_t index);
  // One replica's verified copy, or its failure (recorded in `st`).
  kj::Promise<Fetched> GetOne(std::shared_ptr<GetState> st, size_t index);
  // The first of `a` and `b` to succeed, or the failure of every replica once both failed.
  // When `b` wins, `a` (the replica that was slow) is left to finish in `slow_calls_`: a call
  // that lives out its timeout is what lets the connection layer mark a silent node down.
  kj::Promise<Fetched> FirstOk(std::shared_ptr<GetState> st, kj::Promise<Fetched> a,
                               kj::Promise<Fetched> b);
  void taskFailed(kj::Exception&&) override {}
  static Fetched Failure(const GetState& st);

  // Whether a failed call may be tried again before `deadline`.
  bool MayRetry(kj::TimePoint deadline) const;

  ChunkTransport& transport_;
  WorkerPool* hasher_;
  kj::Timer* timer_;
  ChunkClientOptions options_;
  std::shared_ptr<const ClusterConfig> config_;
  uint64_t hedged_gets_ = 0;
  kj::TaskSet slow_calls_{*this};  // destroyed (cancelled) before the transport goes
};

}  // namespace quorumfs
