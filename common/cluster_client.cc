#include "common/cluster_client.h"

#include <signal.h>

#include <algorithm>
#include <future>
#include <optional>

#include "common/quorum.h"

namespace quorumfs {

ClusterClient::ClusterClient(std::shared_ptr<const ClusterConfig> config,
                             ClusterClientOptions options)
    : config_(std::move(config)), options_(options), hashers_(options.hash_threads) {
  std::promise<void> ready;
  auto ready_future = ready.get_future();
  thread_ = std::thread([this, &ready]() { LoopMain([&ready]() { ready.set_value(); }); });
  ready_future.wait();
}

ClusterClient::~ClusterClient() {
  executor_->executeSync([this]() { stop_->fulfill(); });
  thread_.join();
}

void ClusterClient::LoopMain(std::function<void()> ready) {
  auto io = kj::setupAsyncIo();
  io_ = &io;
  executor_ = &kj::getCurrentThreadExecutor();
  rpc_ = std::make_unique<RpcCluster>(*io.provider, io.provider->getTimer(), options_.rpc);
  rpc_->SetConfig(config_);
  proposer_ = std::make_unique<Proposer>(*rpc_, io.provider->getTimer(), options_.proposer);
  proposer_->SetConfig(config_);
  ChunkClientOptions chunk_options = options_.chunks;
  chunk_options.retry_for = options_.proposer.op_timeout;  // as long as a change waits for one
  chunks_ =
      std::make_unique<ChunkClient>(*rpc_, &hashers_, &io.provider->getTimer(), chunk_options);
  chunks_->SetConfig(config_);
  allocator_ = std::make_unique<InodeAllocator>(*proposer_);
  lister_ = std::make_unique<RpcRecordLister>(*rpc_, &io.provider->getTimer(),
                                              options_.proposer.op_timeout);
  lister_->SetConfig(config_);
  ns_ = std::make_unique<Namespace>(*proposer_, *allocator_, *lister_, io.provider->getTimer(),
                                    SystemWallClock(), options_.ns);
  auto paf = kj::newPromiseAndFulfiller<void>();
  stop_ = kj::mv(paf.fulfiller);
  ready();
  paf.promise.wait(io.waitScope);
  ns_.reset();
  lister_.reset();
  allocator_.reset();
  chunks_.reset();
  proposer_.reset();
  rpc_.reset();
  io_ = nullptr;
}

Result<RecordValue> ClusterClient::Change(const std::string& key, ChangeFn f) {
  return RunSync<Result<RecordValue>>([&]() { return proposer_->Change(key, f); });
}

Result<RecordValue> ClusterClient::Read(const std::string& key) {
  return RunSync<Result<RecordValue>>([&]() { return proposer_->Read(key); });
}

std::vector<Result<RecordValue>> ClusterClient::ReadMany(std::vector<std::string> keys) {
  return RunSync<std::vector<Result<RecordValue>>>(
      [&]() { return proposer_->ReadMany(std::move(keys)); });
}

Result<RecordValue> ClusterClient::CreateFresh(const std::string& key, const std::string& payload) {
  return RunSync<Result<RecordValue>>([&]() { return proposer_->CreateFresh(key, payload); });
}

Result<ChunkId> ClusterClient::PutChunk(std::string data) {
  ChunkId id = ChunkId::Of(data);
  auto shared = std::make_shared<const std::string>(std::move(data));
  Status s = RunSync<Status>([&]() { return chunks_->Put(id, shared); });
  if (!s.ok()) return s;
  return id;
}

Result<std::string> ClusterClient::GetChunk(const ChunkId& id) {
  return RunSync<Result<std::string>>([&]() { return chunks_->Get(id); });
}

Result<uint64_t> ClusterClient::AllocateInode() {
  return RunSync<Result<uint64_t>>([&]() { return allocator_->Allocate(); });
}

Result<NodeStatsInfo> ClusterClient::Stats(const std::string& node) {
  return RunSync<Result<NodeStatsInfo>>([&]() { return rpc_->Stats(node); });
}

kj::Promise<Result<ClusterSpace>> ClusterClient::Space(kj::Duration hurry_after,
                                                       kj::Duration remember_for) {
  std::vector<std::string> ids;
  for (const auto& n : config_->nodes) ids.push_back(n.id);
  using Replies = std::vector<std::optional<Result<NodeStatsInfo>>>;
  auto any = [](const Replies& r) {
    return std::any_of(r.begin(), r.end(), [](const auto& x) { return x && x->ok(); });
  };
  const auto& ro = rpc_->options();
  return Gather<NodeStatsInfo>(
             timer(), ro.call_timeout + ro.connect_timeout, ids.size(),
             [this, ids](size_t i) { return rpc_->Stats(ids[i]); },
             [](const Replies&) { return false; }, any, hurry_after)
      .then([this, ids, remember_for](Gathered<NodeStatsInfo>&& g) -> Result<ClusterSpace> {
        const kj::TimePoint now = timer().now();
        ClusterSpace space;
        std::optional<Status> error;  // the first node's error, to say why none answered
        for (size_t i = 0; i < ids.size(); ++i) {
          const auto& r = g.replies[i];
          const NodeStatsInfo* s = nullptr;
          if (r && r->ok()) {
            last_stats_[ids[i]] = LastStats{**r, std::nullopt};
            s = &**r;
            ++space.answered;
          } else {
            if (r && !error) error = r->status();
            auto it = last_stats_.find(ids[i]);
            if (it != last_stats_.end() && !it->second.silent_since) {
              it->second.silent_since = now;
            }
            if (it == last_stats_.end() || now - *it->second.silent_since > remember_for) {
              ++space.unknown;
              continue;
            }
            s = &it->second.stats;
            ++space.remembered;
          }
          space.capacity += s->capacity;
          space.free += s->capacity - std::min(s->used, s->capacity);
          space.available += s->available;
        }
        if (space.answered == 0) {
          return Status(StatusCode::kUnavailable,
                        "no node answered its stats call" +
                            (error ? " (" + error->ToString() + ")" : " within the call timeout"));
        }
        const uint64_t replicas = static_cast<uint64_t>(std::max(config_->replicas, 1));
        space.capacity /= replicas;
        space.free /= replicas;
        space.available /= replicas;
        return space;
      });
}

}  // namespace quorumfs
