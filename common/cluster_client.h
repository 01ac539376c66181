// ClusterClient: everything a program needs to use a quorumfs cluster (records, chunks, node
// admin calls), with its own event-loop thread that owns every connection. Other threads hand
// work to that loop through executor(); the blocking helpers below do that and wait, so they
// are for tools and tests, never for FUSE worker threads (which must only queue work:
// DESIGN.md, "The mount").
#pragma once

#include <kj/async-io.h>
#include <kj/timer.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "common/chunk_client.h"
#include "common/cluster_config.h"
#include "common/inode_allocator.h"
#include "common/namespace.h"
#include "common/proposer.h"
#include "common/rpc_cluster.h"
#include "common/rpc_record_lister.h"
#include "common/worker_pool.h"

namespace quorumfs {

// The cluster's space as statfs reports it: bytes of file data, every node's bytes divided by
// the replica count (each byte of a file is stored `replicas` times).
struct ClusterSpace {
  uint64_t capacity = 0, free = 0, available = 0;
  int answered = 0;    // nodes whose answer this time is counted
  int remembered = 0;  // nodes that did not answer in time, counted with their last answer
  int unknown = 0;     // nodes with no answer now nor within remember_for: not counted
};

struct ClusterClientOptions {
  RpcClusterOptions rpc;
  ProposerOptions proposer;
  NamespaceOptions ns;
  // Chunk gets and puts; retry_for is set to proposer.op_timeout (a put waits for W as long as
  // a change waits for a quorum).
  ChunkClientOptions chunks;
  int hash_threads = 2;
};

class ClusterClient {
 public:
  // Starts the loop thread and returns once it is ready.
  ClusterClient(std::shared_ptr<const ClusterConfig> config, ClusterClientOptions options);
  ~ClusterClient();  // stops the loop thread (in-flight work is cancelled)

  // Loop-thread objects: use only from the loop thread (e.g. inside RunSync's function).
  Proposer& proposer() { return *proposer_; }
  ChunkClient& chunks() { return *chunks_; }
  RpcCluster& rpc() { return *rpc_; }
  InodeAllocator& allocator() { return *allocator_; }
  Namespace& ns() { return *ns_; }
  // Threads for hashing (Run() from the loop thread).
  WorkerPool& hashers() { return hashers_; }
  kj::Timer& timer() { return io_->provider->getTimer(); }
  const kj::Executor& executor() const { return *executor_; }
  const ClusterConfig& config() const { return *config_; }

  // Runs fn on the loop thread and waits for its promise. Not for FUSE threads.
  template <typename T>
  T RunSync(std::function<kj::Promise<T>()> fn) {
    return executor_->executeSync([&fn]() { return fn(); });
  }

  // Blocking conveniences built on RunSync.
  Result<RecordValue> Change(const std::string& key, ChangeFn f);
  Result<RecordValue> Read(const std::string& key);
  std::vector<Result<RecordValue>> ReadMany(std::vector<std::string> keys);
  Result<RecordValue> CreateFresh(const std::string& key, const std::string& payload);
  Result<ChunkId> PutChunk(std::string data);
  Result<std::string> GetChunk(const ChunkId& id);
  Result<uint64_t> AllocateInode();
  Result<NodeStatsInfo> Stats(const std::string& node);

  // Loop thread. Asks every node for its stats. Once one has answered, waits for the rest at
  // most `hurry_after` (or twice the time taken so far, if longer), so that df on a mount does
  // not hang for a call timeout on a node that is frozen or cut off. A node that did not answer
  // in time (down, frozen or cut off) counts with the last stats it sent this client until it
  // has missed every Space() for `remember_for` (counted from the first it missed); one silent
  // for longer, or never heard from, is not counted.
  // kUnavailable (EIO) when no node answers within the call timeout.
  kj::Promise<Result<ClusterSpace>> Space(kj::Duration hurry_after = 100 * kj::MILLISECONDS,
                                          kj::Duration remember_for = 5 * kj::MINUTES);

 private:
  void LoopMain(std::function<void()> ready);

  std::shared_ptr<const ClusterConfig> config_;
  ClusterClientOptions options_;
  WorkerPool hashers_;
  std::thread thread_;
  const kj::Executor* executor_ = nullptr;
  kj::AsyncIoContext* io_ = nullptr;
  std::unique_ptr<RpcCluster> rpc_;
  std::unique_ptr<Proposer> proposer_;
  std::unique_ptr<ChunkClient> chunks_;
  std::unique_ptr<InodeAllocator> allocator_;
  std::unique_ptr<RpcRecordLister> lister_;
  std::unique_ptr<Namespace> ns_;
  kj::Own<kj::PromiseFulfiller<void>> stop_;  // loop thread only
  // Space(), loop thread only: each node's last stats, and since when it has not answered
  // (the first Space() it missed; unset while it answers).
  struct LastStats {
    NodeStatsInfo stats;
    std::optional<kj::TimePoint> silent_since;
  };
  std::map<std::string, LastStats> last_stats_;
};

}  // namespace quorumfs
