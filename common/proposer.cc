#include "common/proposer.h"

#include <kj/vector.h>

#include <algorithm>

#include "common/record.h"
#include "common/record_key.h"

namespace quorumfs {

struct Proposer::ChangeOp {
  std::string key;
  ChangeFn f;
  kj::TimePoint deadline = kj::origin<kj::TimePoint>();
  int attempt = 0;
  // Every write an attempt sent, each under its own change id (attempts apply f to different
  // values, so one id could not tell which of them was chosen). Later attempts must find out
  // whether one of them was chosen before applying f again; the one that was is the result.
  struct SentWrite {
    uint64_t change_id = 0;
    uint64_t version = 0;
    std::string payload;
  };
  std::vector<SentWrite> sent;
  // Why the last prepare round reached too few replicas, when it was tried again for that:
  // what the operation fails with if its time runs out before the next round.
  Status last_error;
};

namespace {

// Keys whose first write may be a one-round CreateShared by any of several processes (directory
// entries). Their counter-0 values are Fast Paxos round-0 values: one is chosen only when every
// replica holds it, and different proposers' counter-0 ballots are not ordered rounds (a
// counter-0 accept is never preceded by a prepare). So a counter-0 value of such a key counts as
// chosen only with every replica agreeing (found by the namespace simulator, seed 206: a
// prepare that heard two replicas holding one creator's entry took it as chosen, while another
// creator's recovery, hearing one of them and the third replica, adopted its own).
bool SharedFirstWriteKey(const std::string& key) { return !key.empty() && key[0] == 'D'; }

// Whether every target voted yes.
bool AllYes(const std::vector<Vote>& votes) {
  for (Vote v : votes) {
    if (v != Vote::kYes) return false;
  }
  return !votes.empty();
}

template <typename Reply>
std::vector<Vote> VotesOf(const std::vector<std::optional<Result<Reply>>>& replies,
                          bool (*yes)(const Reply&)) {
  std::vector<Vote> votes(replies.size(), Vote::kPending);
  for (size_t i = 0; i < replies.size(); ++i) {
    if (!replies[i]) continue;
    if (!replies[i]->ok()) {
      votes[i] = Vote::kNo;
    } else if (!(*replies[i])->voting) {
      votes[i] = Vote::kAbstain;
    } else {
      votes[i] = yes(**replies[i]) ? Vote::kYes : Vote::kNo;
    }
  }
  return votes;
}

bool PromiseYes(const PrepareReply& r) { return r.promised; }
bool AcceptYes(const AcceptReply& r) { return r.accepted; }
bool ReadYes(const ReadAcceptedReply&) { return true; }

// Whether a voting replica refused (another proposer is ahead): Gather's `hurry`.
template <typename Reply>
bool AnyRefusal(const std::vector<std::optional<Result<Reply>>>& replies,
                bool (*yes)(const Reply&)) {
  for (const auto& r : replies) {
    if (r && r->ok() && (*r)->voting && !yes(**r)) return true;
  }
  return false;
}

// First error among replies, for the message of a NoQuorum status.
template <typename Reply>
std::string DescribeFailures(const QuorumSpec& spec,
                             const std::vector<std::optional<Result<Reply>>>& replies) {
  std::string out;
  for (size_t i = 0; i < replies.size(); ++i) {
    std::string what;
    if (!replies[i]) {
      what = "no reply";
    } else if (!replies[i]->ok()) {
      what = replies[i]->status().ToString();
    } else if (!(*replies[i])->voting) {
      what = "rejoining, not voting";
    } else {
      continue;
    }
    if (!out.empty()) out += "; ";
    out += spec.targets[i] + ": " + what;
  }
  return out;
}

// Whether some replica answered with an error of `code`.
template <typename Reply>
bool AnyFailedWith(const std::vector<std::optional<Result<Reply>>>& replies, StatusCode code) {
  for (const auto& r : replies) {
    if (r && !r->ok() && r->status().code() == code) return true;
  }
  return false;
}

// Fast Paxos recovery of a shared key's round-0 values (CreateShared). An acceptor takes one
// round-0 value at most, so within one replica set a value that all of it holds is the only
// round-0 value there. During a membership change a node new to the set may hold another: it
// missed the first, which the old set's proposers counted as chosen with all of theirs. A
// round-0 value was chosen only if every member of some group (a configuration's replica set)
// holds it, so every answering member of that group does: such a value is adopted before the
// highest ballot, which between two round-0 values is an accident of proposer ids (simulator
// seed 28 of Simulation.MembershipChange: an old-set proposer created the key on a, b and c, a
// joint-set proposer's round-0 write reached only the new node d, and its prepare adopted its
// own value for its higher id: two creates of one entry both succeeded). Null if none is.
template <typename Reply>
const Reply* Round0HeldBy(const std::vector<size_t>& group, const std::vector<Vote>& votes,
                          const std::vector<std::optional<Result<Reply>>>& replies) {
  const Reply* held = nullptr;
  for (size_t i : group) {
    if (votes[i] != Vote::kYes) continue;
    const Reply& r = **replies[i];
    if (!r.value || r.accepted_ballot.counter != 0 ||
        (held && !(r.accepted_ballot == held->accepted_ballot && r.value == held->value))) {
      return nullptr;
    }
    if (!held) held = &r;
  }
  return held;
}
template <typename Reply>
const Reply* Round0HeldByAGroup(const QuorumSpec& spec, const std::vector<Vote>& votes,
                                const std::vector<std::optional<Result<Reply>>>& replies) {
  for (const auto& group : spec.groups) {
    if (const Reply* held = Round0HeldBy(group, votes, replies)) return held;
  }
  return nullptr;
}

// ... but two groups' answers can each hold one round-0 value, different ones, while no member
// of both has answered (a change that adds or removes two nodes at once leaves a key's old and
// new sets one node in common). At most one of the two was chosen, since a member of both holds
// one round-0 value at most, and only such a member can tell which: taking the first group's
// (the new set's) let a joint-set proposer replace an entry an old-set proposer had created on
// all of a, b and c with its own round-0 value on d and e (seed 28 of
// Simulation.MembershipChangeOfTwoNodes: both creates succeeded). The round then waits for more
// answers, and fails if they never settle it.
template <typename Reply>
bool Round0GroupsDisagree(const QuorumSpec& spec, const std::string& key,
                          const std::vector<Vote>& votes,
                          const std::vector<std::optional<Result<Reply>>>& replies) {
  if (spec.groups.size() < 2 || !SharedFirstWriteKey(key)) return false;
  const Reply* first = nullptr;
  for (const auto& group : spec.groups) {
    const Reply* held = Round0HeldBy(group, votes, replies);
    if (!held) continue;
    if (first && !(held->accepted_ballot == first->accepted_ballot && held->value == first->value))
      return true;
    if (!first) first = held;
  }
  return false;
}

// The reply whose value a prepare (or a read of every replica) adopts among the kYes votes: the
// highest accepted ballot, or for a shared key's round-0 values the one some group holds (above;
// `highest_wins` is the negative control). Null if no reply voted yes.
template <typename Reply>
const Reply* Adopted(const QuorumSpec& spec, const std::string& key, const std::vector<Vote>& votes,
                     const std::vector<std::optional<Result<Reply>>>& replies, bool highest_wins) {
  const Reply* best = nullptr;
  for (size_t i = 0; i < replies.size(); ++i) {
    if (votes[i] != Vote::kYes) continue;
    if (!best || (*replies[i])->accepted_ballot > best->accepted_ballot) best = &**replies[i];
  }
  if (best && best->accepted_ballot.counter == 0 && best->value && SharedFirstWriteKey(key) &&
      !highest_wins) {
    if (const Reply* held = Round0HeldByAGroup(spec, votes, replies)) best = held;
  }
  return best;
}

using ReadReplies = std::vector<std::optional<Result<ReadAcceptedReply>>>;

// The fast read holds when every group has R voting replies and W of them carry the highest
// accepted ballot seen (with the same value). Returns the agreed reply or null.
const ReadAcceptedReply* FastReadChoice(const QuorumSpec& spec, const std::string& key, int R,
                                        int W, bool single, const ReadReplies& replies) {
  auto votes = VotesOf(replies, &ReadYes);
  const ReadAcceptedReply* best = nullptr;
  for (size_t i = 0; i < replies.size(); ++i) {
    if (votes[i] != Vote::kYes) continue;
    if (!best || (*replies[i])->accepted_ballot > best->accepted_ballot) best = &**replies[i];
  }
  if (!best) return nullptr;
  if (single) return best;
  if (!spec.Satisfied(votes, R)) return nullptr;
  std::vector<Vote> same(votes.size(), Vote::kNo);
  for (size_t i = 0; i < replies.size(); ++i) {
    if (votes[i] == Vote::kYes && (*replies[i])->accepted_ballot == best->accepted_ballot &&
        (*replies[i])->value == best->value) {
      same[i] = Vote::kYes;
    }
  }
  if (best->accepted_ballot.counter == 0 && SharedFirstWriteKey(key) && best->value) {
    return AllYes(same) ? best : nullptr;  // a round-0 value: chosen only if all hold it
  }
  return spec.Satisfied(same, W) ? best : nullptr;
}

// Whether a fast read has heard enough: it holds, or cannot, or every group has R answers.
bool ReadDecided(const QuorumSpec& spec, const std::string& key, int R, int W, bool single,
                 const ReadReplies& r) {
  if (FastReadChoice(spec, key, R, W, single, r) != nullptr) return true;
  auto votes = VotesOf(r, &ReadYes);
  if (spec.Hopeless(votes, R)) return true;
  if (!spec.Satisfied(votes, R)) return false;
  // A round-0 value of a shared key counts only with every replica's answer: wait for the
  // rest (within the round) rather than fall back to a slow read that writes.
  if (SharedFirstWriteKey(key)) {
    bool round0 = false, missing = false;
    for (size_t i = 0; i < r.size(); ++i) {
      if (!r[i]) {
        missing = true;
      } else if (votes[i] == Vote::kYes && (*r[i])->accepted_ballot.counter == 0 &&
                 (*r[i])->value) {
        round0 = true;
      }
    }
    if (round0 && missing) return false;
  }
  return true;
}

// The record a chosen reply holds.
Result<RecordValue> ValueOf(const std::string& key, const ReadAcceptedReply& chosen) {
  RecordValue v;
  if (chosen.value) {
    auto env = RecordEnvelope::Decode(*chosen.value);
    if (!env.ok()) return env.status().WithContext(DescribeKey(key));
    v.payload = std::move(env->payload);
    v.version = env->version;
  }
  return v;
}

}  // namespace

Proposer::Proposer(RecordTransport& transport, kj::Timer& timer, ProposerOptions options)
    : transport_(transport), timer_(timer), options_(options) {
  std::random_device rd;
  uint64_t seed =
      options_.rng_seed ? options_.rng_seed : (static_cast<uint64_t>(rd()) << 32) ^ rd();
  rng_.seed(seed);
  while (options_.proposer_id == 0)
    options_.proposer_id = (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

Proposer::~Proposer() = default;

void Proposer::SetConfig(std::shared_ptr<const ClusterConfig> config) {
  config_ = std::move(config);
  prepared_.clear();  // replica sets may have changed
  prepared_old_.clear();
}

std::optional<Proposer::Prepared> Proposer::TakePrepared(const std::string& key) {
  if (!options_.one_round_changes) return std::nullopt;
  // One use: a concurrent change of the key takes the full protocol.
  for (auto* gen : {&prepared_, &prepared_old_}) {
    auto it = gen->find(key);
    if (it != gen->end()) {
      Prepared p = std::move(it->second);
      gen->erase(it);
      return p;
    }
  }
  return std::nullopt;
}

std::optional<std::string> Proposer::PeekPrepared(const std::string& key) const {
  if (!options_.one_round_changes) return std::nullopt;
  for (const auto* gen : {&prepared_, &prepared_old_}) {
    auto it = gen->find(key);
    if (it == gen->end()) continue;
    auto env = RecordEnvelope::Decode(*it->second.value);
    if (!env.ok()) return std::nullopt;
    return std::move(env->payload);
  }
  return std::nullopt;
}

void Proposer::ForgetIfStale(const std::string& key, const Ballot& seen) {
  for (auto* gen : {&prepared_, &prepared_old_}) {
    auto it = gen->find(key);
    if (it != gen->end() && seen >= it->second.next) gen->erase(it);
  }
}

void Proposer::NoteWritten(const std::string& key) {
  if (known_written_.size() >= options_.one_round_cache / 2) known_written_.clear();
  known_written_.insert(key);
}

void Proposer::RememberPrepared(const std::string& key, Ballot accepted,
                                std::shared_ptr<std::string> value) {
  if (!options_.one_round_changes) return;
  auto c = contended_.find(key);
  if (c != contended_.end()) {
    if (--c->second <= 0) contended_.erase(c);
    return;
  }
  if (prepared_.size() >= std::max<size_t>(1, options_.one_round_cache / 2)) {
    prepared_old_ = std::move(prepared_);
    prepared_.clear();
  }
  prepared_old_.erase(key);
  prepared_[key] = Prepared{accepted.Next(), std::move(value)};
}

bool Proposer::ObserveRefusals(const std::vector<std::optional<Result<AcceptReply>>>& replies,
                               Ballot ballot, bool* conflict) {
  bool refused_everywhere = true;
  for (const auto& r : replies) {
    if (r && r->ok()) {
      Observe((*r)->promised_ballot);
      if ((*r)->voting && !(*r)->accepted && conflict) *conflict = true;
      bool proves_absent =
          (*r)->voting && (options_.unsafe_trust_any_refusal || (*r)->accepted_ballot < ballot);
      if ((*r)->accepted || !proves_absent) {
        refused_everywhere = false;
      }
    } else {
      refused_everywhere = false;  // no answer: it may have been accepted
    }
  }
  return refused_everywhere;
}

// A write no acceptor would take (over kMaxRecordValue): refused here, not sent to be refused
// by every replica and retried until the operation's deadline.
static Status ValueTooLarge(const std::string& key, size_t bytes) {
  return Status(StatusCode::kTooLarge, DescribeKey(key) + ": record value of " +
                                           std::to_string(bytes) + " bytes over the " +
                                           std::to_string(kMaxRecordValue) + "-byte limit");
}

kj::Promise<Result<RecordValue>> Proposer::OneRound(std::shared_ptr<ChangeOp> op, Prepared p) {
  auto env_r = RecordEnvelope::Decode(*p.value);
  if (!env_r.ok()) return RunChange(op);
  RecordEnvelope env = std::move(env_r).value();
  Decision decision = op->f(env.payload);
  if (decision.kind != Decision::kWrite) return RunChange(op);
  env.Apply(rng_() | 1, std::move(decision.payload));
  auto value = std::make_shared<std::string>(env.Encode());
  if (value->size() > kMaxRecordValue) {
    if (!op->sent.empty()) return RunChange(op);  // the full protocol settles the earlier write
    return Result<RecordValue>(ValueTooLarge(op->key, value->size()));
  }
  op->sent.push_back({env.recent.back(), env.version, env.payload});
  RecordValue result;
  result.payload = env.payload;
  result.version = env.version;
  Observe(p.next);
  auto spec = std::make_shared<QuorumSpec>(SpecFor(op->key));
  const int R = config_->read_quorum;
  const int W = config_->write_quorum;
  Ballot ballot = p.next;
  auto send = [this, spec, op, ballot, value](size_t i) {
    return transport_.Accept(spec->targets[i], op->key, ballot, *value);
  };
  // Short of a quorum, wait for every reply (or the round timeout): if every replica refused,
  // the write is stored nowhere and the full protocol may apply f afresh; a missing reply would
  // leave its outcome open (and a busy key's window of change ids may not tell it later).
  auto decide = [spec, W](const std::vector<std::optional<Result<AcceptReply>>>& replies) {
    if (spec->Satisfied(VotesOf(replies, &AcceptYes), W)) return true;
    for (const auto& r : replies) {
      if (!r) return false;
    }
    return true;
  };
  return Gather<AcceptReply>(timer_, options_.round_timeout, spec->targets.size(), send, decide)
      .then([this, op, spec, R, W, ballot, value, result = std::move(result)](
                Gathered<AcceptReply>&& g) mutable -> kj::Promise<Result<RecordValue>> {
        auto votes = VotesOf(g.replies, &AcceptYes);
        if (spec->Satisfied(votes, W)) {
          ++counters_.one_round;
          if (spec->Satisfied(votes, R)) RememberPrepared(op->key, ballot, value);
          return Result<RecordValue>(std::move(result));
        }
        ++counters_.one_round_failed;
        // Other proposers change this key too: its next changes take the full protocol (a
        // one-round accept that fails may be stored on some replicas, leaving the change's
        // outcome to be found by its id, which a busy key's window may not tell).
        if (contended_.size() >= options_.one_round_cache) contended_.clear();
        contended_[op->key] = kContendedSkips;
        if (ObserveRefusals(g.replies, ballot)) op->sent.pop_back();
        // Someone else changed the key (or replies were lost): the full protocol decides,
        // finding this write through its change id if it was chosen after all.
        return RunChange(op);
      });
}

QuorumSpec Proposer::SpecFor(const std::string& key) const {
  auto groups = ReplicaGroupsFor(*config_, RecordPlacementKey(key));
  if (options_.unsafe_ignore_joint_quorum && groups.size() > 1) groups.resize(1);
  return QuorumSpec::FromGroups(groups);
}

Ballot Proposer::NextBallot() { return Ballot{++max_counter_, options_.proposer_id}; }

void Proposer::Observe(const Ballot& b) {
  // A counter out of acceptors' range comes only from a garbled reply, and one within a few of
  // its end only from a hostile or broken client (honest counters grow by one a round): both
  // ignored, so that this proposer's next ballot, and that ballot's successor, stay ones every
  // acceptor takes. Taking them froze every full-protocol change of this process, on every key.
  // (The key such a promise sits on stays frozen: no ballot in range beats it.)
  if (b.counter < Ballot::kMaxCounter - 4) max_counter_ = std::max(max_counter_, b.counter);
}

kj::Duration Proposer::Backoff(int attempt) {
  int64_t lo = options_.backoff_min / kj::NANOSECONDS;
  int64_t hi =
      std::min<int64_t>(options_.backoff_max / kj::NANOSECONDS, lo << std::min(attempt, 16));
  std::uniform_int_distribution<int64_t> dist(lo / 2, std::max(lo, hi));
  return dist(rng_) * kj::NANOSECONDS;
}

kj::Promise<Result<RecordValue>> Proposer::Change(std::string key, ChangeFn f) {
  Status valid = ValidateRecordKey(key);
  if (!valid.ok()) return Result<RecordValue>(valid);
  auto op = std::make_shared<ChangeOp>();
  op->key = std::move(key);
  op->f = std::move(f);
  op->deadline = timer_.now() + options_.op_timeout;
  ++counters_.changes;
  if (auto p = TakePrepared(op->key)) return OneRound(std::move(op), std::move(*p));
  return RunChange(std::move(op));
}

kj::Promise<Result<RecordValue>> Proposer::RunChange(std::shared_ptr<ChangeOp> op) {
  return Attempt(op).then([this, op](Result<RecordValue>&& r) {
    if (!r.ok() && r.status().code() == StatusCode::kUnknownOutcome) ++counters_.unknown;
    return kj::mv(r);
  });
}

kj::Promise<Result<RecordValue>> Proposer::Attempt(std::shared_ptr<ChangeOp> op) {
  auto fail_status = [op](StatusCode code, std::string message) {
    if (!op->sent.empty()) {
      return Status(
          StatusCode::kUnknownOutcome,
          DescribeKey(op->key) + ": change may or may not have been applied (" + message + ")");
    }
    return Status(code, DescribeKey(op->key) + ": " + message);
  };
  if (timer_.now() >= op->deadline) {
    if (!op->last_error.ok()) {
      return Result<RecordValue>(fail_status(op->last_error.code(), op->last_error.message()));
    }
    return Result<RecordValue>(
        fail_status(StatusCode::kTimedOut, "no decision within the operation timeout"));
  }
  auto spec = std::make_shared<QuorumSpec>(SpecFor(op->key));
  Ballot ballot = NextBallot();
  const int R = config_->read_quorum;
  const int W = config_->write_quorum;

  auto send = [this, spec, op, ballot](size_t i) {
    return transport_.Prepare(spec->targets[i], op->key, ballot);
  };
  const bool unsafe_first_group = options_.unsafe_round0_first_group;
  auto decide = [spec, R, op, unsafe_first_group](
                    const std::vector<std::optional<Result<PrepareReply>>>& replies) {
    auto votes = VotesOf(replies, &PromiseYes);
    if (spec->Hopeless(votes, R)) return true;
    if (!spec->Satisfied(votes, R)) return false;
    // Round-0 values that two groups' answers disagree on: wait for a member of both.
    if (!unsafe_first_group && Round0GroupsDisagree(*spec, op->key, votes, replies)) {
      for (const auto& r : replies) {
        if (!r) return false;
      }
    }
    return true;
  };
  auto refused = [](const auto& replies) { return AnyRefusal(replies, &PromiseYes); };
  return Gather<PrepareReply>(timer_, options_.round_timeout, spec->targets.size(), send, decide,
                              refused, options_.conflict_grace)
      .then([this, op, spec, ballot, R, W,
             fail_status](Gathered<PrepareReply>&& g) -> kj::Promise<Result<RecordValue>> {
        auto votes = VotesOf(g.replies, &PromiseYes);
        bool conflict = false;
        for (const auto& r : g.replies) {
          if (r && r->ok()) {
            Observe((*r)->promised_ballot);
            Observe((*r)->accepted_ballot);
            if ((*r)->voting && !(*r)->promised) conflict = true;
          }
        }
        // Every answer in, or the round over, and still no member of both groups settles
        // whose round-0 value may be chosen: not a quorum to decide on.
        const bool undecided = !options_.unsafe_round0_first_group && spec->Satisfied(votes, R) &&
                               Round0GroupsDisagree(*spec, op->key, votes, g.replies);
        if (!spec->Satisfied(votes, R) || undecided) {
          if (conflict && !undecided) {
            ++counters_.conflicts;
            return timer_.afterDelay(Backoff(op->attempt++)).then([this, op]() {
              return Attempt(op);
            });
          }
          // A replica's full disk (its promise could not be stored) is named as such: the
          // mount answers ENOSPC, which freeing space fixes (when no write of this change was
          // sent yet; otherwise its outcome is unknown, fail_status).
          StatusCode code =
              AnyFailedWith(g.replies, StatusCode::kEpochMismatch) ? StatusCode::kEpochMismatch
              : AnyFailedWith(g.replies, StatusCode::kNoSpace)     ? StatusCode::kNoSpace
                                                                   : StatusCode::kNoQuorum;
          // Too few answered: wait for a quorum while the operation has time (the mount's
          // op_timeout is "how long an operation waits for a quorum").
          std::string why =
              undecided ? "the two configurations' replicas hold different round-0 values and "
                          "no replica of both answered"
                        : "prepare reached fewer than " + std::to_string(R) +
                              " replicas: " + DescribeFailures(*spec, g.replies);
          if (code == StatusCode::kNoQuorum && options_.no_quorum_retry > 0 * kj::NANOSECONDS &&
              timer_.now() + options_.no_quorum_retry < op->deadline) {
            ++counters_.no_quorum_retries;
            op->last_error = Status(code, why);
            return timer_.afterDelay(options_.no_quorum_retry).then([this, op]() {
              return Attempt(op);
            });
          }
          return Result<RecordValue>(fail_status(code, why));
        }
        op->last_error = Status::Ok();  // this round reached a quorum
        // The value the promises carry (the highest accepted ballot; see Adopted).
        const PrepareReply* best =
            Adopted(*spec, op->key, votes, g.replies, options_.unsafe_round0_highest_wins);
        RecordEnvelope env;
        bool exists = best->value.has_value();
        if (exists) {
          auto decoded = RecordEnvelope::Decode(*best->value);
          if (!decoded.ok())
            return Result<RecordValue>(decoded.status().WithContext(DescribeKey(op->key)));
          env = std::move(decoded).value();
        }
        // Is that value already chosen (W identical accepted ballots in every group)?
        std::vector<Vote> same(votes.size(), Vote::kNo);
        for (size_t i = 0; i < g.replies.size(); ++i) {
          if (votes[i] == Vote::kYes && (*g.replies[i])->accepted_ballot == best->accepted_ballot &&
              (*g.replies[i])->value == best->value) {
            same[i] = Vote::kYes;
          }
        }
        bool already_chosen = best->accepted_ballot.counter == 0 && SharedFirstWriteKey(op->key)
                                  ? AllYes(same)
                                  : spec->Satisfied(same, W);

        Decision decision;
        RecordValue result;
        const ChangeOp::SentWrite* mine = nullptr;
        // A write at version 1 would have created the record: it was chosen iff it is the
        // record's birth (its id may have left the window since).
        auto created_it = [&env](const ChangeOp::SentWrite& s) {
          return s.version == 1 && env.birth != 0 && env.birth == s.change_id;
        };
        auto not_its_birth = [&env](const ChangeOp::SentWrite& s) {
          return s.version == 1 && env.birth != 0 && env.birth != s.change_id;
        };
        for (const auto& s : op->sent) {
          if (env.Contains(s.change_id) || created_it(s)) mine = &s;
        }
        if (mine) {
          // One of our earlier accepts was chosen (or is adopted now). Make sure it stays chosen.
          decision = Decision::Keep();
          result.payload = mine->payload;
          result.version = mine->version;
        } else {
          for (const auto& s : op->sent) {
            if (s.version + RecordEnvelope::kRecentChanges <= env.version && !not_its_birth(s)) {
              return Result<RecordValue>(
                  fail_status(StatusCode::kUnknownOutcome, "too many concurrent changes to tell"));
            }
          }
          std::optional<std::string> current;
          if (exists) current = env.payload;
          decision = op->f(current);
          if (decision.kind == Decision::kWrite) {
            env.Apply(rng_() | 1, std::move(decision.payload));
            result.payload = env.payload;
            result.version = env.version;
          } else {
            result.payload = current;
            result.version = env.version;
          }
        }
        // An earlier write of ours that was not chosen may sit, at a ballot above the value seen
        // now, on replicas this prepare did not hear from; a later proposer could still adopt
        // it. Only an accept at this attempt's higher ballot rules that out, even when f keeps
        // or aborts; with no value to accept, the outcome stays unknown.
        bool supersede = !op->sent.empty() && mine == nullptr;
        if (supersede && decision.kind != Decision::kWrite && !exists) {
          return Result<RecordValue>(fail_status(
              StatusCode::kUnknownOutcome, "an earlier write of this change may still be chosen"));
        }
        bool need_accept =
            decision.kind == Decision::kWrite || (exists && (!already_chosen || supersede));
        if (!need_accept) {
          if (decision.kind == Decision::kAbort) return Result<RecordValue>(decision.status);
          return Result<RecordValue>(std::move(result));
        }
        auto value = std::make_shared<std::string>(env.Encode());
        if (value->size() > kMaxRecordValue) {
          Status too_large = ValueTooLarge(op->key, value->size());
          return Result<RecordValue>(fail_status(too_large.code(), too_large.message()));
        }
        if (decision.kind == Decision::kWrite) {
          op->sent.push_back({env.recent.back(), env.version, env.payload});
        }
        auto send = [this, spec, op, ballot, value](size_t i) {
          return transport_.Accept(spec->targets[i], op->key, ballot, *value);
        };
        auto decide = [spec, W](const std::vector<std::optional<Result<AcceptReply>>>& replies) {
          auto votes = VotesOf(replies, &AcceptYes);
          return spec->Satisfied(votes, W) || spec->Hopeless(votes, W);
        };
        Status abort_status = decision.status;
        bool aborted = decision.kind == Decision::kAbort;
        bool is_write = decision.kind == Decision::kWrite;
        auto refused = [](const auto& replies) { return AnyRefusal(replies, &AcceptYes); };
        return Gather<AcceptReply>(timer_, options_.round_timeout, spec->targets.size(), send,
                                   decide, refused, options_.conflict_grace)
            .then([this, op, spec, R, W, ballot, value, result = std::move(result), abort_status,
                   aborted, is_write, fail_status](
                      Gathered<AcceptReply>&& g) mutable -> kj::Promise<Result<RecordValue>> {
              auto votes = VotesOf(g.replies, &AcceptYes);
              if (spec->Satisfied(votes, W)) {
                if (spec->Satisfied(votes, R)) RememberPrepared(op->key, ballot, value);
                if (aborted) return Result<RecordValue>(abort_status);
                return Result<RecordValue>(std::move(result));
              }
              bool conflict = false;
              // Every replica refused it: this accept is stored nowhere and, promises only
              // rising, never will be. A later attempt may apply f without the id check.
              if (ObserveRefusals(g.replies, ballot, &conflict) && is_write) op->sent.pop_back();
              if (conflict || timer_.now() < op->deadline) {
                // Lost the ballot, or replies went missing: find out in a new round whether
                // our value made it (see the header), then apply f again if it did not.
                if (conflict) ++counters_.conflicts;
                return timer_.afterDelay(Backoff(op->attempt++)).then([this, op]() {
                  return Attempt(op);
                });
              }
              return Result<RecordValue>(fail_status(
                  StatusCode::kNoQuorum, "accept reached fewer than " + std::to_string(W) +
                                             " replicas: " + DescribeFailures(*spec, g.replies)));
            });
      });
}

kj::Promise<Result<RecordValue>> Proposer::Read(std::string key) {
  ++counters_.reads;
  Status valid = ValidateRecordKey(key);
  if (!valid.ok()) return Result<RecordValue>(valid);
  auto spec = std::make_shared<QuorumSpec>(SpecFor(key));
  auto skey = std::make_shared<std::string>(std::move(key));
  const int R = config_->read_quorum;
  const int W = config_->write_quorum;
  const bool single = options_.unsafe_fast_read_single_reply;

  auto fast = [spec, skey, R, W, single](const ReadReplies& replies) {
    return FastReadChoice(*spec, *skey, R, W, single, replies);
  };
  auto send = [this, spec, skey](size_t i) {
    return transport_.ReadAccepted(spec->targets[i], *skey);
  };
  auto decide = [spec, skey, R, W, single](const ReadReplies& r) {
    return ReadDecided(*spec, *skey, R, W, single, r);
  };
  // Once R replicas answered, the rest are waited for only `fast_round_timeout` (or twice what
  // the read had taken): a round-0 value that needs every replica's answer then takes the full
  // protocol instead of waiting a whole round for a replica that may be silent.
  auto hurry = [spec, R](const ReadReplies& r) { return spec->Satisfied(VotesOf(r, &ReadYes), R); };
  return Gather<ReadAcceptedReply>(timer_, options_.round_timeout, spec->targets.size(), send,
                                   decide, hurry, options_.fast_round_timeout)
      .then([this, skey,
             fast](Gathered<ReadAcceptedReply>&& g) -> kj::Promise<Result<RecordValue>> {
        for (const auto& r : g.replies) {
          if (r && r->ok()) {
            Observe((*r)->accepted_ballot);
            ForgetIfStale(*skey, (*r)->accepted_ballot);
          }
        }
        if (const ReadAcceptedReply* best = fast(g.replies)) {
          ++counters_.fast_reads;
          if (best->value) NoteWritten(*skey);
          return ValueOf(*skey, *best);
        }
        ++counters_.slow_reads;
        return Change(*skey, [](const std::optional<std::string>&) { return Decision::Keep(); });
      });
}

kj::Promise<std::vector<Result<RecordValue>>> Proposer::ReadMany(std::vector<std::string> keys) {
  using Out = std::vector<Result<RecordValue>>;
  if (keys.size() > RecordTransport::kMaxReadBatch) {
    // In pieces the server takes, one after the other.
    std::vector<std::string> rest(keys.begin() + RecordTransport::kMaxReadBatch, keys.end());
    keys.resize(RecordTransport::kMaxReadBatch);
    return ReadMany(std::move(keys)).then([this, rest = std::move(rest)](Out&& first) mutable {
      return ReadMany(std::move(rest)).then([first = std::move(first)](Out&& second) mutable {
        for (auto& r : second) first.push_back(std::move(r));
        return std::move(first);
      });
    });
  }
  struct Batch {
    std::vector<std::string> keys;
    std::vector<Status> invalid;                 // per key: Ok, or why it is not a valid key
    std::vector<QuorumSpec> specs;               // per key
    std::vector<std::string> nodes;              // every node some key's replica set names
    std::vector<std::vector<size_t>> node_keys;  // per node: indices into keys
    std::vector<std::vector<size_t>> where;      // per key, per target: the node's index
    std::vector<std::vector<size_t>> slot;       // per key, per target: position in node_keys
  };
  auto b = std::make_shared<Batch>();
  b->keys = std::move(keys);
  size_t n = b->keys.size();
  b->invalid.resize(n);
  b->specs.resize(n);
  b->where.resize(n);
  b->slot.resize(n);
  std::unordered_map<std::string, size_t> node_index;
  for (size_t k = 0; k < n; ++k) {
    b->invalid[k] = ValidateRecordKey(b->keys[k]);
    if (!b->invalid[k].ok()) continue;
    b->specs[k] = SpecFor(b->keys[k]);
    for (const auto& t : b->specs[k].targets) {
      auto [it, fresh] = node_index.emplace(t, b->nodes.size());
      if (fresh) {
        b->nodes.push_back(t);
        b->node_keys.emplace_back();
      }
      b->where[k].push_back(it->second);
      b->slot[k].push_back(b->node_keys[it->second].size());
      b->node_keys[it->second].push_back(k);
    }
  }
  const int R = config_->read_quorum;
  const int W = config_->write_quorum;
  const bool single = options_.unsafe_fast_read_single_reply;
  using NodeReplies = std::vector<std::optional<Result<std::vector<ReadAcceptedReply>>>>;
  // Key k's replies, as Read would have gathered them.
  auto replies_of = [b](size_t k, const NodeReplies& nodes) {
    ReadReplies out(b->where[k].size());
    for (size_t t = 0; t < out.size(); ++t) {
      const auto& r = nodes[b->where[k][t]];
      if (!r) continue;
      if (!r->ok()) {
        out[t] = Result<ReadAcceptedReply>(r->status());
      } else {
        out[t] = Result<ReadAcceptedReply>((**r)[b->slot[k][t]]);
      }
    }
    return out;
  };
  auto send = [this, b](size_t i) {
    std::vector<std::string> keys;
    keys.reserve(b->node_keys[i].size());
    for (size_t k : b->node_keys[i]) keys.push_back(b->keys[k]);
    return transport_.ReadAcceptedBatch(b->nodes[i], keys)
        .then([expect = keys.size()](Result<std::vector<ReadAcceptedReply>>&& r) {
          if (r.ok() && r->size() != expect) {
            return Result<std::vector<ReadAcceptedReply>>(
                Status(StatusCode::kInternal, "batch read answered the wrong number of keys"));
          }
          return kj::mv(r);
        });
  };
  auto decide = [b, replies_of, R, W, single](const NodeReplies& nodes) {
    for (size_t k = 0; k < b->keys.size(); ++k) {
      if (!b->invalid[k].ok()) continue;
      if (!ReadDecided(b->specs[k], b->keys[k], R, W, single, replies_of(k, nodes))) return false;
    }
    return true;
  };
  // As Read's: R answers for every key, then the rest only briefly (votes alone, no copies).
  auto hurry = [b, R](const NodeReplies& nodes) {
    std::vector<Vote> votes;
    for (size_t k = 0; k < b->keys.size(); ++k) {
      if (!b->invalid[k].ok()) continue;
      votes.assign(b->where[k].size(), Vote::kPending);
      for (size_t t = 0; t < votes.size(); ++t) {
        const auto& r = nodes[b->where[k][t]];
        if (!r) continue;
        votes[t] = !r->ok() ? Vote::kNo : (**r)[b->slot[k][t]].voting ? Vote::kYes : Vote::kAbstain;
      }
      if (!b->specs[k].Satisfied(votes, R)) return false;
    }
    return true;
  };
  return Gather<std::vector<ReadAcceptedReply>>(timer_, options_.round_timeout, b->nodes.size(),
                                                send, decide, hurry, options_.fast_round_timeout)
      .then([this, b, replies_of, R, W, single](Gathered<std::vector<ReadAcceptedReply>>&& g) {
        kj::Vector<kj::Promise<Result<RecordValue>>> out(b->keys.size());
        for (size_t k = 0; k < b->keys.size(); ++k) {
          if (!b->invalid[k].ok()) {
            out.add(Result<RecordValue>(b->invalid[k]));
            continue;
          }
          ReadReplies replies = replies_of(k, g.replies);
          for (const auto& r : replies) {
            if (r && r->ok()) {
              Observe((*r)->accepted_ballot);
              ForgetIfStale(b->keys[k], (*r)->accepted_ballot);
            }
          }
          if (const ReadAcceptedReply* best =
                  FastReadChoice(b->specs[k], b->keys[k], R, W, single, replies)) {
            ++counters_.fast_reads;
            out.add(ValueOf(b->keys[k], *best));
          } else {
            ++counters_.batch_fallbacks;
            out.add(Read(b->keys[k]));  // on its own: a fast read again, or the full protocol
          }
        }
        return kj::joinPromises(out.releaseAsArray()).then([](kj::Array<Result<RecordValue>> a) {
          Out v;
          v.reserve(a.size());
          for (auto& r : a) v.push_back(std::move(r));
          return v;
        });
      });
}

kj::Promise<Result<RecordValue>> Proposer::ReadWithoutWrite(std::string key) {
  Status valid = ValidateRecordKey(key);
  if (!valid.ok()) return Result<RecordValue>(valid);
  auto spec = std::make_shared<QuorumSpec>(SpecFor(key));
  auto skey = std::make_shared<std::string>(std::move(key));
  const int R = config_->read_quorum;
  auto send = [this, spec, skey](size_t i) {
    return transport_.ReadAccepted(spec->targets[i], *skey);
  };
  // Every reply (or the round timeout): a replica that answers later than the others may hold
  // the newest value.
  auto decide = [](const std::vector<std::optional<Result<ReadAcceptedReply>>>& r) {
    for (const auto& reply : r) {
      if (!reply) return false;
    }
    return true;
  };
  return Gather<ReadAcceptedReply>(timer_, options_.round_timeout, spec->targets.size(), send,
                                   decide)
      .then([this, spec, skey, R](Gathered<ReadAcceptedReply>&& g) -> Result<RecordValue> {
        for (const auto& r : g.replies) {
          if (r && r->ok()) ForgetIfStale(*skey, (*r)->accepted_ballot);
        }
        auto votes = VotesOf(g.replies, &ReadYes);
        if (!spec->Satisfied(votes, R)) {
          return Status(StatusCode::kNoQuorum,
                        DescribeKey(*skey) + ": fewer than read_quorum replicas answered");
        }
        if (Round0GroupsDisagree(*spec, *skey, votes, g.replies)) {
          return Status(StatusCode::kNoQuorum,
                        DescribeKey(*skey) +
                            ": the two configurations' replicas hold different round-0 values "
                            "and no replica of both answered");
        }
        const ReadAcceptedReply* best =
            Adopted(*spec, *skey, votes, g.replies, options_.unsafe_round0_highest_wins);
        RecordValue v;
        if (best && best->value) {
          auto env = RecordEnvelope::Decode(*best->value);
          if (!env.ok()) return env.status().WithContext(DescribeKey(*skey));
          v.payload = std::move(env->payload);
          v.version = env->version;
        }
        return v;
      });
}

kj::Promise<Result<RecordValue>> Proposer::CreateFresh(std::string key, std::string payload) {
  ChangeFn f = [payload](const std::optional<std::string>& current) {
    if (current) return Decision::Abort(Status(StatusCode::kAlreadyExists, "record exists"));
    return Decision::Write(payload);
  };
  return FirstWrite(std::move(key), std::move(payload), std::move(f), /*shared=*/false);
}

kj::Promise<Result<RecordValue>> Proposer::CreateShared(std::string key, std::string payload,
                                                        ChangeFn f) {
  return FirstWrite(std::move(key), std::move(payload), std::move(f), /*shared=*/true);
}

kj::Promise<Result<RecordValue>> Proposer::FirstWrite(std::string key, std::string payload,
                                                      ChangeFn f, bool shared) {
  Status valid = ValidateRecordKey(key);
  if (!valid.ok()) return Result<RecordValue>(valid);
  auto op = std::make_shared<ChangeOp>();
  op->key = std::move(key);
  op->deadline = timer_.now() + options_.op_timeout;
  op->f = std::move(f);
  ++counters_.changes;
  // The key is written already, so every replica would refuse a round-0 write. If this
  // proposer holds the promise of its last write (it removed the name it now creates again),
  // the one-round change applies f to that value; if a read lately found it written, the full
  // protocol starts at once. Either way f decides on the current value, as the fallback would.
  if (auto p = TakePrepared(op->key)) {
    known_written_.erase(op->key);
    return OneRound(std::move(op), std::move(*p));
  }
  if (known_written_.erase(op->key) > 0) return RunChange(std::move(op));
  RecordEnvelope env;
  env.Apply(rng_() | 1, payload);
  auto value = std::make_shared<std::string>(env.Encode());
  if (value->size() > kMaxRecordValue)
    return Result<RecordValue>(ValueTooLarge(op->key, value->size()));
  op->sent.push_back({env.recent.back(), env.version, env.payload});
  auto spec = std::make_shared<QuorumSpec>(SpecFor(op->key));
  Ballot ballot{0, options_.proposer_id};
  const int R = config_->read_quorum;
  const int W = config_->write_quorum;
  // A key only this process writes (fresh inode): W acceptances choose the value. A key others
  // may be creating at the same moment (a directory entry): only every replica accepting does
  // (Fast Paxos with a fast quorum of all N). Acceptors take one counter-0 value at most, so a
  // value all N hold is the only counter-0 value anywhere, and every later prepare adopts it;
  // with fewer, two creators may each hold W copies of their own, so neither may count as
  // chosen until the full protocol has decided (unsafe_shared_first_write_at_w breaks this).
  const bool need_all = shared && !options_.unsafe_shared_first_write_at_w;
  auto send = [this, spec, op, ballot, value](size_t i) {
    return transport_.Accept(spec->targets[i], op->key, ballot, *value);
  };
  auto decide = [spec, W,
                 need_all](const std::vector<std::optional<Result<AcceptReply>>>& replies) {
    auto votes = VotesOf(replies, &AcceptYes);
    if (need_all) {
      if (AllYes(votes)) return true;
      for (const auto& r : replies) {
        if (!r) return false;  // every reply, to know whether the write is stored nowhere
      }
      return true;
    }
    return spec->Satisfied(votes, W) || spec->Hopeless(votes, W);
  };
  kj::Duration timeout = shared ? std::min(options_.round_timeout, options_.fast_round_timeout)
                                : options_.round_timeout;
  return Gather<AcceptReply>(timer_, timeout, spec->targets.size(), send, decide)
      .then([this, op, spec, R, W, value, ballot,
             need_all](Gathered<AcceptReply>&& g) -> kj::Promise<Result<RecordValue>> {
        auto votes = VotesOf(g.replies, &AcceptYes);
        if (need_all ? AllYes(votes) : spec->Satisfied(votes, W)) {
          if (spec->Satisfied(votes, R)) {
            RememberPrepared(op->key, Ballot{0, options_.proposer_id}, value);
          }
          ++counters_.first_writes;
          RecordValue v;
          v.payload = op->sent.back().payload;
          v.version = op->sent.back().version;
          return Result<RecordValue>(std::move(v));
        }
        ++counters_.first_writes_failed;
        if (ObserveRefusals(g.replies, ballot)) op->sent.clear();  // stored nowhere, never will be
        // Contested or short of replies: the full protocol decides (and is exactly-once).
        return RunChange(op);
      });
}

}  // namespace quorumfs
