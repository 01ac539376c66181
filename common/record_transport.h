// RecordTransport: how a proposer reaches one acceptor. The Cap'n Proto client implements it
// over the network (rpc_cluster.h); the simulator implements it over a fake network. Every
// promise resolves (never rejects) to a reply or a Status: Unavailable for an unreachable node,
// EpochMismatch, InvalidArgument for a refused request. Deadlines are the caller's business.
#pragma once

#include <kj/async.h>

#include <string>
#include <vector>

#include "common/acceptor.h"
#include "common/ballot.h"
#include "common/status.h"

namespace quorumfs {

class RecordTransport {
 public:
  virtual ~RecordTransport() = default;
  virtual kj::Promise<Result<PrepareReply>> Prepare(const std::string& node, const std::string& key,
                                                    Ballot ballot) = 0;
  virtual kj::Promise<Result<AcceptReply>> Accept(const std::string& node, const std::string& key,
                                                  Ballot ballot, const std::string& value) = 0;
  virtual kj::Promise<Result<ReadAcceptedReply>> ReadAccepted(const std::string& node,
                                                              const std::string& key) = 0;
  // ReadAccepted of many keys: one reply per key, in order, or one error for the call. The
  // default sends one ReadAccepted per key (the simulator's transports); the RPC client sends
  // one message. REQUIRES: 1..kMaxReadBatch keys.
  static constexpr size_t kMaxReadBatch = 4096;
  virtual kj::Promise<Result<std::vector<ReadAcceptedReply>>> ReadAcceptedBatch(
      const std::string& node, const std::vector<std::string>& keys);
};

}  // namespace quorumfs
