// RecordTransport: how a proposer reaches one acceptor. The Cap'n Proto client implements it
// over the network (rpc_cluster.h); the simulator implements it over a fake network. Every
// promise resolves (never rejects) to a reply or a Status: Unavailable for an unreachable node,
// EpochMismatch, InvalidArgument for a refused request. Deadlines are the caller's business.
#pragma once

#include <kj/async.h>

#include <string>

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
};

}  // namespace quorumfs
