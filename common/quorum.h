// Quorum bookkeeping shared by the record proposer and the chunk client.
//
// QuorumSpec describes the replica groups of one key (one group, or two during a membership
// change: DESIGN.md, "Cluster configuration") over a flat list of target nodes. A request is
// satisfied when every group has `need` positive votes, and hopeless once some group cannot
// reach `need` even if every outstanding node answered yes.
//
// Gather() sends one request per target and resolves as soon as `decide` says so, when every
// target has answered, or when `timeout` passes — whichever is first. Requests still in flight
// keep running in the background (a late accept still repairs a lagging replica). With `hurry`,
// the round also ends soon after the replies so far first satisfy it (the proposer's "another
// proposer is ahead": no point waiting a whole timeout for a node that may be gone): after
// `hurry_after`, or twice the time the round had taken by then if that is longer, so that a
// slow network's replies still count.
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/placement.h"
#include "common/status.h"

namespace quorumfs {

enum class Vote { kPending, kYes, kNo, kAbstain };

struct QuorumSpec {
  std::vector<std::string> targets;         // union of the groups, no repeats
  std::vector<std::vector<size_t>> groups;  // indices into targets

  static QuorumSpec FromGroups(const std::vector<ReplicaGroup>& groups);

  // True when every group has at least `need` kYes votes.
  bool Satisfied(const std::vector<Vote>& votes, int need) const;
  // True when some group can no longer reach `need` kYes votes.
  bool Hopeless(const std::vector<Vote>& votes, int need) const;
};

template <typename Reply>
struct Gathered {
  std::vector<std::optional<Result<Reply>>> replies;  // by target index; nullopt: no answer
  bool timed_out = false;
};

template <typename Reply>
kj::Promise<Gathered<Reply>> Gather(
    kj::Timer& timer, kj::Duration timeout, size_t count,
    std::function<kj::Promise<Result<Reply>>(size_t)> send,
    std::function<bool(const std::vector<std::optional<Result<Reply>>>&)> decide,
    std::function<bool(const std::vector<std::optional<Result<Reply>>>&)> hurry = nullptr,
    kj::Duration hurry_after = 0 * kj::SECONDS) {
  struct State {
    Gathered<Reply> result;
    size_t answered = 0;
    bool done = false;
    kj::Own<kj::PromiseFulfiller<void>> fulfiller;
    std::function<bool(const std::vector<std::optional<Result<Reply>>>&)> decide, hurry;
    // Fulfilled, with how much longer to wait, when `hurry` first holds. (No timer promise
    // lives here: the state outlives the round in the requests still running, and may outlive
    // the timer too.)
    kj::Own<kj::PromiseFulfiller<kj::Duration>> hurried;
    kj::TimePoint start = kj::origin<kj::TimePoint>();
  };
  auto state = std::make_shared<State>();
  state->result.replies.resize(count);
  state->decide = std::move(decide);
  state->hurry = std::move(hurry);
  auto paf = kj::newPromiseAndFulfiller<void>();
  state->fulfiller = kj::mv(paf.fulfiller);
  auto hurried = kj::newPromiseAndFulfiller<kj::Duration>();
  state->hurried = kj::mv(hurried.fulfiller);
  state->start = timer.now();
  if (count == 0 || state->decide(state->result.replies)) {
    state->done = true;
    return Gathered<Reply>(state->result);
  }
  for (size_t i = 0; i < count; ++i) {
    send(i)
        .then([state, i, &timer, hurry_after](Result<Reply>&& reply) {
          if (state->done) return;
          state->result.replies[i] = std::move(reply);
          ++state->answered;
          if (state->answered == state->result.replies.size() ||
              state->decide(state->result.replies)) {
            state->done = true;
            state->fulfiller->fulfill();
          } else if (state->hurry && state->hurried->isWaiting() &&
                     state->hurry(state->result.replies)) {
            kj::Duration wait = std::max(hurry_after, 2 * (timer.now() - state->start));
            state->hurried->fulfill(kj::mv(wait));
          }
        })
        .detach([](kj::Exception&&) {});
  }
  return paf.promise
      .exclusiveJoin(timer.afterDelay(timeout).then([state]() { state->result.timed_out = true; }))
      .exclusiveJoin(
          hurried.promise.then([&timer](kj::Duration wait) { return timer.afterDelay(wait); }))
      .then([state]() {
        state->done = true;
        return kj::mv(state->result);
      });
}

}  // namespace quorumfs
