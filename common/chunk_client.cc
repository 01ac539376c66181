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
  // Only current nodes stand in for a home replica: a leaving node's copy would go with it,
  // and a rebalance that has already listed its chunks would not move a hinted one.
  const std::vector<std::string> current = config_->NodeIds();
  for (const auto& n : FullRanking(*config_, id.view())) {
    if (std::find(st->spec.targets.begin(), st->spec.targets.end(), n) == st->spec.targets.end() &&
        std::find(current.begin(), current.end(), n) != current.end()) {
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

struct ChunkClient::GetState {
  ChunkId id;
  std::vector<std::string> order;  // home replicas first, then the rest (rendezvous order)
  std::string errors;              // "node: why; ..." in the order the failures came
  bool any_unavailable = false;    // some replica failed otherwise than by lacking the chunk
  bool unanswered = false;         // some replica did not answer (down, unreachable, timed out)
};

kj::Promise<Result<std::string>> ChunkClient::Get(ChunkId id) {
  kj::TimePoint deadline =
      timer_ ? timer_->now() + options_.retry_for : kj::origin<kj::TimePoint>();
  return GetUntil(id, deadline);
}

kj::Promise<Result<std::string>> ChunkClient::GetUntil(ChunkId id, kj::TimePoint deadline) {
  auto st = std::make_shared<GetState>();
  st->id = id;
  st->order = FullRanking(*config_, id.view());
  return GetFrom(st, 0).then(
      [this, id, deadline, st](Fetched r) -> kj::Promise<Result<std::string>> {
        // Some replica did not answer (not: refused, or had no copy) and none served the
        // chunk: try them all again while the read has time.
        if (r->ok() || !st->unanswered || !MayRetry(deadline)) return kj::mv(*r);
        return timer_->afterDelay(options_.retry_delay).then([this, id, deadline]() {
          return GetUntil(id, deadline);
        });
      });
}

ChunkClient::Fetched ChunkClient::Failure(const GetState& st) {
  std::string what = "chunk " + st.id.ToHex() + ": " + st.errors;
  if (st.any_unavailable)
    return std::make_shared<Result<std::string>>(Status(StatusCode::kUnavailable, what));
  if (st.errors.find("Corruption") != std::string::npos) {
    return std::make_shared<Result<std::string>>(Status(StatusCode::kCorruption, what));
  }
  return std::make_shared<Result<std::string>>(NotFound(what));
}

kj::Promise<ChunkClient::Fetched> ChunkClient::GetOne(std::shared_ptr<GetState> st, size_t index) {
  const std::string node = st->order[index];
  auto failed = [st, node](const Status& s) {
    if (!st->errors.empty()) st->errors += "; ";
    st->errors += node + ": " + s.ToString();
    return std::make_shared<Result<std::string>>(s);
  };
  return transport_.GetChunk(node, st->id)
      .then([this, st, node, failed](Result<std::string>&& r) -> kj::Promise<Fetched> {
        if (!r.ok()) {
          // The server's disk could not read its replica: quarantined, so that fsck finds the
          // chunk one copy short and copies it back.
          if (r.status().code() == StatusCode::kCorruption) {
            transport_.ReportCorrupt(node, st->id).detach([](kj::Exception&&) {});
          }
          if (r.status().code() != StatusCode::kNotFound) st->any_unavailable = true;
          if (r.status().code() == StatusCode::kUnavailable ||
              r.status().code() == StatusCode::kTimedOut) {
            st->unanswered = true;
          }
          return failed(r.status());
        }
        auto bytes = std::make_shared<std::string>(std::move(r).value());
        kj::Promise<bool> verified = nullptr;
        ChunkId id = st->id;
        if (hasher_) {
          verified = hasher_->Run<bool>([bytes, id]() { return ChunkId::Of(*bytes) == id; });
        } else {
          verified = ChunkId::Of(*bytes) == id;
        }
        return verified.then([this, st, node, bytes, failed](bool ok) -> Fetched {
          if (ok) return std::make_shared<Result<std::string>>(std::move(*bytes));
          transport_.ReportCorrupt(node, st->id).detach([](kj::Exception&&) {});
          return failed(Status(StatusCode::kCorruption, "served bytes do not match the chunk id"));
        });
      });
}

kj::Promise<ChunkClient::Fetched> ChunkClient::GetFrom(std::shared_ptr<GetState> st, size_t index) {
  if (index >= st->order.size()) return Failure(*st);
  kj::Promise<Fetched> one = GetOne(st, index);
  const bool hedge =
      timer_ != nullptr && options_.hedge_after > 0 * kj::SECONDS && index + 1 < st->order.size();
  if (!hedge) {
    return one.then([this, st, index](Fetched r) -> kj::Promise<Fetched> {
      if (r->ok()) return kj::mv(r);
      return GetFrom(st, index + 1);
    });
  }
  // Whichever comes first: this replica's answer, or the hedge delay.
  auto forked = one.fork();
  auto early =
      forked.addBranch()
          .then([](Fetched r) -> kj::Maybe<Fetched> { return kj::mv(r); })
          .exclusiveJoin(timer_->afterDelay(options_.hedge_after).then([]() -> kj::Maybe<Fetched> {
            return nullptr;
          }));
  return early.then([this, st, index, forked = kj::mv(forked)](
                        kj::Maybe<Fetched> answered) mutable -> kj::Promise<Fetched> {
    KJ_IF_MAYBE (r, answered) {
      if ((*r)->ok()) return kj::mv(*r);
      return GetFrom(st, index + 1);
    }
    // Slow to answer: keep waiting for it, and ask the replicas after it meanwhile.
    ++hedged_gets_;
    return FirstOk(st, forked.addBranch(), GetFrom(st, index + 1));
  });
}

kj::Promise<ChunkClient::Fetched> ChunkClient::FirstOk(std::shared_ptr<GetState> st,
                                                       kj::Promise<Fetched> a,
                                                       kj::Promise<Fetched> b) {
  auto fa = a.fork();
  auto fb = b.fork();
  using Tagged = std::pair<bool, Fetched>;  // (came from b, what came)
  auto first =
      fa.addBranch()
          .then([](Fetched r) { return Tagged(false, kj::mv(r)); })
          .exclusiveJoin(fb.addBranch().then([](Fetched r) { return Tagged(true, kj::mv(r)); }));
  return first.then(
      [this, st, fa = kj::mv(fa), fb = kj::mv(fb)](Tagged came) mutable -> kj::Promise<Fetched> {
        if (came.second->ok()) {
          if (came.first) slow_calls_.add(fa.addBranch().ignoreResult());
          return kj::mv(came.second);
        }
        // That one failed: the other decides, and if it fails too, every replica has failed.
        return (came.first ? fa : fb).addBranch().then([st](Fetched r) -> Fetched {
          if (r->ok()) return r;
          return Failure(*st);
        });
      });
}

}  // namespace quorumfs
