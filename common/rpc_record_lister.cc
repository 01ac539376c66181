#include "common/rpc_record_lister.h"

#include <algorithm>
#include <set>

#include "common/placement.h"
#include "common/quorum.h"

namespace quorumfs {

kj::Promise<Result<std::vector<std::string>>> RpcRecordLister::ListKeys(
    const std::string& placement_key, const std::string& prefix, const std::string& after,
    uint32_t limit, bool every_replica) {
  if (timer_ == nullptr) return ListOnce(placement_key, prefix, after, limit, every_replica);
  return ListUntil(placement_key, prefix, after, limit, every_replica, timer_->now() + retry_for_);
}

kj::Promise<Result<std::vector<std::string>>> RpcRecordLister::ListUntil(
    std::string placement_key, std::string prefix, std::string after, uint32_t limit,
    bool every_replica, kj::TimePoint deadline) {
  return ListOnce(placement_key, prefix, after, limit, every_replica)
      .then([this, placement_key, prefix, after, limit, every_replica,
             deadline](Result<std::vector<std::string>>&& r)
                -> kj::Promise<Result<std::vector<std::string>>> {
        if (r.ok() || r.status().code() != StatusCode::kNoQuorum ||
            timer_->now() + retry_delay_ >= deadline) {
          return kj::mv(r);
        }
        return timer_->afterDelay(retry_delay_)
            .then([this, placement_key, prefix, after, limit, every_replica, deadline]() {
              return ListUntil(placement_key, prefix, after, limit, every_replica, deadline);
            });
      });
}

kj::Promise<Result<std::vector<std::string>>> RpcRecordLister::ListOnce(
    const std::string& placement_key, const std::string& prefix, const std::string& after,
    uint32_t limit, bool every_replica) {
  QuorumSpec spec;
  int need;
  if (placement_key.empty()) {
    // Every node; each key's set still needs R answers, so at most N - R may be missing.
    spec.targets = config_->NodeIds();
    for (const auto& id : config_->previous) {
      if (std::find(spec.targets.begin(), spec.targets.end(), id) == spec.targets.end()) {
        spec.targets.push_back(id);
      }
    }
    std::vector<size_t> all;
    for (size_t i = 0; i < spec.targets.size(); ++i) all.push_back(i);
    spec.groups.push_back(all);
    need = static_cast<int>(spec.targets.size()) - (config_->replicas - config_->read_quorum);
  } else {
    spec = QuorumSpec::FromGroups(ReplicaGroupsFor(*config_, placement_key));
    need = every_replica ? config_->replicas : config_->read_quorum;
  }
  // every_replica asks that every replica answer, voting or not: a rejoining node holds no old
  // values, so its (possibly partial) answer completes the listing too.
  auto decide = [spec, need, limit,
                 every_replica](const std::vector<std::optional<Result<ScanPage>>>& results)
      -> Result<std::vector<std::string>> {
    std::vector<Vote> votes;
    std::set<std::string> keys;
    for (const auto& r : results) {
      if (!r || !r->ok()) {
        votes.push_back(Vote::kNo);
        continue;
      }
      // A rejoining node's rows may be missing: its keys are merged, its answer not counted.
      votes.push_back((*r)->voting || every_replica ? Vote::kYes : Vote::kAbstain);
      for (const auto& rec : (*r)->records) keys.insert(rec.key);
    }
    if (!spec.Satisfied(votes, need)) {
      std::string why;
      for (size_t i = 0; i < results.size(); ++i) {
        if (votes[i] == Vote::kYes) continue;
        why += (why.empty() ? "" : "; ") + spec.targets[i] + ": " +
               (!results[i]             ? std::string("no answer yet")
                : votes[i] == Vote::kNo ? results[i]->status().ToString()
                                        : std::string("rejoining, not voting"));
      }
      return Status(StatusCode::kNoQuorum, "listing reached too few replicas: " + why);
    }
    std::vector<std::string> out(keys.begin(), keys.end());
    if (out.size() > limit) out.resize(limit);
    return out;
  };
  auto targets = std::make_shared<std::vector<std::string>>(spec.targets);
  auto send = [this, targets, prefix, after, limit](size_t i) {
    // Keys only: a page of 4096 keys always fits (values would not: inode records), so every
    // page but the last holds `limit` keys, which callers take as "more may follow".
    return rpc_.ScanRecords((*targets)[i], prefix, after, limit, /*keys_only=*/true);
  };
  if (timer_ == nullptr) {
    kj::Vector<kj::Promise<Result<ScanPage>>> pages;
    for (size_t i = 0; i < targets->size(); ++i) pages.add(send(i));
    return kj::joinPromises(pages.releaseAsArray())
        .then([decide](kj::Array<Result<ScanPage>>&& results) {
          std::vector<std::optional<Result<ScanPage>>> all;
          for (auto& r : results) all.emplace_back(kj::mv(r));
          return decide(all);
        });
  }
  // Every replica's keys are merged, but once R voting replicas of every set have answered the
  // rest are waited for only briefly: a replica that answers nothing (frozen, cut off) would
  // otherwise hold every listing for a whole call timeout. R answers already see every key a
  // write quorum chose (R + W > N); the others only add keys still being written.
  auto hurry = [spec, need,
                every_replica](const std::vector<std::optional<Result<ScanPage>>>& results) {
    std::vector<Vote> votes;
    for (const auto& r : results) {
      votes.push_back(!r                              ? Vote::kPending
                      : !r->ok()                      ? Vote::kNo
                      : (*r)->voting || every_replica ? Vote::kYes
                                                      : Vote::kAbstain);
    }
    return spec.Satisfied(votes, need);
  };
  return Gather<ScanPage>(
             *timer_, rpc_.options().call_timeout + rpc_.options().connect_timeout, targets->size(),
             send, [](const auto&) { return false; }, hurry, hurry_after_)
      .then([decide](Gathered<ScanPage>&& g) { return decide(g.replies); });
}

}  // namespace quorumfs
