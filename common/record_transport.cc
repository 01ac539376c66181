#include "common/record_transport.h"

#include <kj/vector.h>

#include <memory>

namespace quorumfs {

kj::Promise<Result<std::vector<ReadAcceptedReply>>> RecordTransport::ReadAcceptedBatch(
    const std::string& node, const std::vector<std::string>& keys) {
  kj::Vector<kj::Promise<Result<ReadAcceptedReply>>> reads(keys.size());
  for (const auto& key : keys) reads.add(ReadAccepted(node, key));
  return kj::joinPromises(reads.releaseAsArray())
      .then([](kj::Array<Result<ReadAcceptedReply>> replies)
                -> Result<std::vector<ReadAcceptedReply>> {
        std::vector<ReadAcceptedReply> out;
        out.reserve(replies.size());
        for (auto& r : replies) {
          if (!r.ok()) return r.status();
          out.push_back(std::move(r).value());
        }
        return out;
      });
}

}  // namespace quorumfs
