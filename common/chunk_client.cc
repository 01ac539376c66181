#include "common/chunk_client.h"

#include <algorithm>
#include <map>

#include "common/placement.h"
#include "common/quorum.h"

namespace quorumfs {

ChunkClient::ChunkClient(ChunkTransport& transport, WorkerPool* hasher, kj::Timer* timer,
                         ChunkClientOptions options)
    : transport_(transport), hasher_(hasher), timer_(timer), options_(options) {}

bool ChunkClient::MayRetry(kj::TimePoint deadline) const {
  return timer_ != nullptr && timer_->now() + options_.retry_delay < deadline;
}

kj::Promise<Status> ChunkClient::Put(ChunkId id, std::shared_ptr<const std::string> data) {
  if (data->empty()) return InvalidArgument("empty chunk");
  if (data->size() > ClusterConfig::kMaxChunkSize) {
    return Status(StatusCode::kTooLarge,
                  "chunk of " + std::to_string(data->size()) + " bytes (max 16 MiB)");
  }
  struct State {
    QuorumSpec spec;
    std::vector<Vote> votes;             // by home slot (spec.targets)
    std::vector<std::string> fallbacks;  // nodes outside every replica set, in order
    size_t next_fallback = 0;
    int need = 0;
    bool done = false;
    kj::TimePoint deadline = kj::origin<kj::TimePoint>();  // for retries
    std::map<std::string, std::string> errors;             // node -> its latest failure
    bool epoch_mismatch = false;
    bool no_space = false;  // some replica refused for want of space
    kj::Own<kj::PromiseFulfiller<Status>> fulfiller;
  };
  auto st = std::make_shared<State>();
  auto groups = ReplicaGroupsFor(*config_, id.view());
  st->spec = QuorumSpec::FromGroups(groups);
  st->votes.assign(st->spec.targets.size(), Vote::kPending);
  st->need = config_->write_quorum;
  for (const auto& n : FullRanking(*config_, id.view())) {
    if (std::find(st->spec.targets.begin(), st->spec.targets.end(), n) == st->spec.targets.end()) {
      st->fallbacks.push_back(n);
    }
  }
  auto paf = kj::newPromiseAndFulfiller<Status>();
  st->fulfiller = kj::mv(paf.fulfiller);
  if (timer_) st->deadline = timer_->now() + options_.retry_for;

  auto check = [st, id]() {
    if (st->done) return;
    if (st->spec.Satisfied(st->votes, st->need)) {
      st->done = true;
      st->fulfiller->fulfill(Status::Ok());
    } else if (st->spec.Hopeless(st->votes, st->need)) {
      st->done = true;
      // A full disk among the refusals is what the writer is told (ENOSPC, not EIO): freeing
      // space is what fixes it.
      StatusCode code = st->epoch_mismatch ? StatusCode::kEpochMismatch
                        : st->no_space     ? StatusCode::kNoSpace
                                           : StatusCode::kNoQuorum;
      std::string errors;
      for (const auto& [node, why] : st->errors) {
        errors += (errors.empty() ? "" : "; ") + node + ": " + why;
      }
      st->fulfiller->fulfill(Status(code, "chunk " + id.ToHex().substr(0, 16) + ": fewer than " +
                                              std::to_string(st->need) +
                                              " replicas stored it: " + errors));
    }
  };
  // Sends to `node` on behalf of home slot `slot`; on failure tries the next fallback.
  auto send = std::make_shared<std::function<void(size_t, std::string)>>();
  std::weak_ptr<std::function<void(size_t, std::string)>> weak_send = send;
  *send = [this, st, id, data, check, weak_send](size_t slot, std::string node) {
    const std::string& home = st->spec.targets[slot];
    std::string hint = node == home ? "" : home;
    auto self = weak_send.lock();
    transport_.PutChunk(node, id, data, hint)
        .then([this, st, slot, node, check, self](Status s) -> kj::Promise<void> {
          if (s.ok()) {
            st->votes[slot] = Vote::kYes;
          } else {
            if (s.code() == StatusCode::kEpochMismatch) st->epoch_mismatch = true;
            if (s.code() == StatusCode::kNoSpace) st->no_space = true;
            st->errors[node] = s.ToString();
            if (st->next_fallback < st->fallbacks.size() &&
                s.code() != StatusCode::kEpochMismatch) {
              (*self)(slot, st->fallbacks[st->next_fallback++]);
              return kj::READY_NOW;
            }
            // No answer (not a refusal): the node may be back in a moment.
            bool unanswered =
                s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kTimedOut;
            // (Not once the put is decided, or its caller has gone.)
            if (unanswered && !st->done && st->fulfiller->isWaiting() && MayRetry(st->deadline)) {
              return timer_->afterDelay(options_.retry_delay).then([st, slot, node, check, self]() {
                if (st->done || !st->fulfiller->isWaiting()) return;
                (*self)(slot, node);
              });
            }
            st->votes[slot] = Vote::kNo;
          }
          check();
          return kj::READY_NOW;
        })
        .detach([](kj::Exception&&) {});
  };
  for (size_t i = 0; i < st->spec.targets.size(); ++i) (*send)(i, st->spec.targets[i]);
  return paf.promise.attach(kj::mv(send));
}

kj::Promise<Result<std::string>> ChunkClient::Get(ChunkId id) {
  kj::TimePoint deadline =
      timer_ ? timer_->now() + options_.retry_for : kj::origin<kj::TimePoint>();
  return GetUntil(id, deadline);
}

kj::Promise<Result<std::string>> ChunkClient::GetUntil(ChunkId id, kj::TimePoint deadline) {
  auto order = std::make_shared<std::vector<std::string>>(FullRanking(*config_, id.view()));
  auto unanswered = std::make_shared<bool>(false);
  return GetFrom(order, 0, id, std::make_shared<std::string>(), false, unanswered)
      .then([this, id, deadline,
             unanswered](Result<std::string>&& r) -> kj::Promise<Result<std::string>> {
        // Some replica did not answer (not: refused, or had no copy) and none served the
        // chunk: try them all again while the read has time.
        if (r.ok() || !*unanswered || !MayRetry(deadline)) {
          return kj::mv(r);
        }
        return timer_->afterDelay(options_.retry_delay).then([this, id, deadline]() {
          return GetUntil(id, deadline);
        });
      });
}

kj::Promise<Result<std::string>> ChunkClient::GetFrom(
    std::shared_ptr<std::vector<std::string>> order, size_t index, ChunkId id,
    std::shared_ptr<std::string> errors, bool any_unavailable, std::shared_ptr<bool> unanswered) {
  if (index >= order->size()) {
    std::string what = "chunk " + id.ToHex() + ": " + *errors;
    if (any_unavailable) return Result<std::string>(Status(StatusCode::kUnavailable, what));
    if (errors->find("Corruption") != std::string::npos) {
      return Result<std::string>(Status(StatusCode::kCorruption, what));
    }
    return Result<std::string>(NotFound(what));
  }
  const std::string node = (*order)[index];
  return transport_.GetChunk(node, id).then(
      [this, order, index, id, errors, any_unavailable, unanswered,
       node](Result<std::string>&& r) mutable -> kj::Promise<Result<std::string>> {
        if (!r.ok()) {
          if (r.status().code() != StatusCode::kNotFound) any_unavailable = true;
          if (r.status().code() == StatusCode::kUnavailable ||
              r.status().code() == StatusCode::kTimedOut) {
            *unanswered = true;
          }
          if (!errors->empty()) *errors += "; ";
          *errors += node + ": " + r.status().ToString();
          return GetFrom(order, index + 1, id, errors, any_unavailable, unanswered);
        }
        auto bytes = std::make_shared<std::string>(std::move(r).value());
        kj::Promise<bool> verified = nullptr;
        if (hasher_) {
          verified = hasher_->Run<bool>([bytes, id]() { return ChunkId::Of(*bytes) == id; });
        } else {
          verified = ChunkId::Of(*bytes) == id;
        }
        return verified.then([this, order, index, id, errors, any_unavailable, unanswered, node,
                              bytes](bool ok) mutable -> kj::Promise<Result<std::string>> {
          if (ok) return Result<std::string>(std::move(*bytes));
          transport_.ReportCorrupt(node, id).detach([](kj::Exception&&) {});
          if (!errors->empty()) *errors += "; ";
          *errors += node + ": Corruption: served bytes do not match the chunk id";
          return GetFrom(order, index + 1, id, errors, any_unavailable, unanswered);
        });
      });
}

}  // namespace quorumfs
