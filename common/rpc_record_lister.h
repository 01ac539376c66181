// RpcRecordLister: RecordLister over the chunkservers' scanRecords. Asks every replica of the
// key's replica set(s) (or every node) and merges their keys; succeeds only when at least R
// voting replicas of every set answered, so every key chosen by a write quorum is seen (R + W >
// N); a rejoining node's keys are merged but its answer not counted.
#pragma once

#include "common/namespace.h"
#include "common/rpc_cluster.h"

namespace quorumfs {

class RpcRecordLister : public RecordLister {
 public:
  // With a `timer`, a listing that reached too few replicas is tried again every `retry_delay`
  // for up to `retry_for` (a node that comes back meanwhile is used), as record changes and
  // chunk puts wait for a quorum; without one it fails at once.
  // With a timer, too, once R voting replicas of every set have answered, the others are
  // waited for `hurry_after` (or twice what the listing had taken, if longer), not a whole call
  // timeout: their keys are merged only if they come by then.
  explicit RpcRecordLister(RpcCluster& rpc, kj::Timer* timer = nullptr,
                           kj::Duration retry_for = 0 * kj::SECONDS,
                           kj::Duration retry_delay = 100 * kj::MILLISECONDS,
                           kj::Duration hurry_after = 100 * kj::MILLISECONDS)
      : rpc_(rpc),
        timer_(timer),
        retry_for_(retry_for),
        retry_delay_(retry_delay),
        hurry_after_(hurry_after) {}
  void SetConfig(std::shared_ptr<const ClusterConfig> config) { config_ = std::move(config); }

  kj::Promise<Result<std::vector<std::string>>> ListKeys(const std::string& placement_key,
                                                         const std::string& prefix,
                                                         const std::string& after, uint32_t limit,
                                                         bool every_replica = false) override;

 private:
  kj::Promise<Result<std::vector<std::string>>> ListOnce(const std::string& placement_key,
                                                         const std::string& prefix,
                                                         const std::string& after, uint32_t limit,
                                                         bool every_replica);
  kj::Promise<Result<std::vector<std::string>>> ListUntil(std::string placement_key,
                                                          std::string prefix, std::string after,
                                                          uint32_t limit, bool every_replica,
                                                          kj::TimePoint deadline);

  RpcCluster& rpc_;
  kj::Timer* timer_;
  kj::Duration retry_for_, retry_delay_, hurry_after_;
  std::shared_ptr<const ClusterConfig> config_;
};

}  // namespace quorumfs
