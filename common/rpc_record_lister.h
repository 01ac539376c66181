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
  explicit RpcRecordLister(RpcCluster& rpc) : rpc_(rpc) {}
  void SetConfig(std::shared_ptr<const ClusterConfig> config) { config_ = std::move(config); }

  kj::Promise<Result<std::vector<std::string>>> ListKeys(const std::string& placement_key,
                                                         const std::string& prefix,
                                                         const std::string& after,
                                                         uint32_t limit) override;

 private:
  RpcCluster& rpc_;
  std::shared_ptr<const ClusterConfig> config_;
};

}  // namespace quorumfs
