// ChunkTransport: how the chunk client reaches one chunkserver (implemented over Cap'n Proto by
// RpcCluster). Promises resolve, never reject; failures are Status values (Unavailable,
// TimedOut, NotFound, NoSpace, EpochMismatch, InvalidArgument for a hash mismatch).
#pragma once

#include <kj/async.h>

#include <memory>
#include <string>

#include "common/chunk_id.h"
#include "common/status.h"

namespace quorumfs {

class ChunkTransport {
 public:
  virtual ~ChunkTransport() = default;
  // Stores `data` (whose SHA-256 is `id`) on `node`; `hint` names the home node when `node`
  // stands in for it.
  virtual kj::Promise<Status> PutChunk(const std::string& node, const ChunkId& id,
                                       std::shared_ptr<const std::string> data,
                                       const std::string& hint) = 0;
  // The bytes `node` stores under `id`, unverified.
  virtual kj::Promise<Result<std::string>> GetChunk(const std::string& node, const ChunkId& id) = 0;
  // Tells `node` its replica of `id` looked corrupt; true if it quarantined it.
  virtual kj::Promise<Result<bool>> ReportCorrupt(const std::string& node, const ChunkId& id) = 0;
};

}  // namespace quorumfs
